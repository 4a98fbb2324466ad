// ESM entry of the libbox package: the same objects as the CommonJS entry
// (one addon instance per process), never a second copy of the module.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const libbox = require('./index.js');

export const { Box, Runtime, Process, LibboxError, AbortError, doctor, version, abiVersion, liveHandles } = libbox;
export default libbox;
