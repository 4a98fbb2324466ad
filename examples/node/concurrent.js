// The seed pattern: four concurrent execs on one box, then close it.
// Run from a directory where the libbox package is installed:
//   npm install dist/libbox-*.tgz && node concurrent.js
// (./build.sh demo does exactly that with a temporary LIBBOX_HOME.)
'use strict';
const { Box } = require('libbox');

async function main() {
  const box = await Box.create({ image: 'busybox', isolation: 'sandbox' });
  try {
    const results = await Promise.all(['A', 'B', 'C', 'D'].map((t) => box.exec('echo', ['task', t])));
    for (const r of results) console.log(r.exitCode, r.stdout.trimEnd());
  } finally {
    await box.close();
  }
}

main().catch((err) => {
  console.error(`concurrent.js: ${err.code ? `${err.code}: ` : ''}${err.message}`);
  process.exitCode = 1;
});
