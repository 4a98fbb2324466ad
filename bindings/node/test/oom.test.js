'use strict';
// An exec the OOM killer ends says so (oomKilled); one running beside it
// does not.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');

test('an exec past the memory limit is oomKilled, the one beside it is not', {
  timeout: 120_000,
  skip: process.getuid() !== 0 && 'a sandbox box\'s memory limit needs a memory cgroup: run as root',
}, async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-oom-'));
  const rt = new libbox.Runtime({ home: path.join(tmp, 'home') });
  try {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox', memoryMib: 64 });
    // cat runs until its stdin ends, after the hog's end.
    const normal = box.spawn('cat', [], { stdin: 'pipe' });
    const hog = await box.exec('awk', ['BEGIN { s = "x"; while (1) s = s s }']);
    normal.stdin.end();
    const r = await normal.wait();
    assert.deepEqual([hog.signal, hog.oomKilled], ['SIGKILL', true]);
    assert.deepEqual([r.exitCode, r.oomKilled], [0, false]);
    const k = await box.exec('sh', ['-c', 'kill -9 $$']);
    assert.deepEqual([k.signal, k.oomKilled], ['SIGKILL', false]);
  } finally {
    await rt.close();
    assert.equal(libbox.liveHandles(), 0, 'every library handle is released');
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
