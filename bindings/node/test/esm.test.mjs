// The package works through ESM `import` as well as `require`, with the same objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import libbox, { Box, Runtime, LibboxError, AbortError, Process, liveHandles, version, abiVersion } from 'libbox';

const require = createRequire(import.meta.url);

test('ESM import: named and default exports are the CommonJS ones', { timeout: 120_000 }, async () => {
  const cjs = require('libbox');
  assert.equal(Box, cjs.Box);
  assert.equal(Runtime, cjs.Runtime);
  assert.equal(libbox.LibboxError, LibboxError);
  assert.equal(typeof AbortError, 'function');
  assert.equal(typeof Process, 'function');
  assert.equal(typeof version, 'string');
  assert.equal(abiVersion, 1);

  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-esm-'));
  const rt = new Runtime({ home });
  try {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
    const r = await box.exec('echo', ['esm']);
    assert.equal(r.stdout, 'esm\n');
    await box.close();
  } finally {
    await rt.close();
    fs.rmSync(home, { recursive: true, force: true });
  }
  assert.equal(liveHandles(), 0);
});
