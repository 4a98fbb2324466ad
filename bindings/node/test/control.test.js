'use strict';
// Fault table row 1 from Node: kill, resize and end() of a process whose
// stdin is full and unread return at once and never block the event loop;
// the process settles within 2 s with child_process's exit shape.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');
const { Runtime, LibboxError } = libbox;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-ctl-'));
const T = { timeout: 120_000 };
let rt;
let box;

before(async () => {
  rt = new Runtime({ home: path.join(tmp, 'home') });
  box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
});

after(async () => {
  await rt.close();
  assert.equal(libbox.liveHandles(), 0, 'every library handle is released');
  fs.rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Spawns `sleep 60` and writes 64 MiB to it (it never reads). */
async function stdinFull() {
  const p = box.spawn('sleep', ['60']);
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < 64; i++) p.stdin.write(chunk);
  p.stdin.on('error', () => {}); // the write fails once the process is gone
  await sleep(300);
  return p;
}

for (const ctl of ['kill', 'resize', 'end', 'cancel']) {
  test(`${ctl} with stdin full returns at once and the process settles`, T, async () => {
    const p = await stdinFull();
    const t0 = performance.now();
    if (ctl === 'resize') {
      assert.throws(() => p.resize(40, 100), (e) => e instanceof LibboxError && e.code === 'FailedPrecondition');
    }
    if (ctl === 'end') p.stdin.end();
    if (ctl === 'cancel') p.cancel();
    else assert.equal(p.kill(), true); // default SIGTERM, as child_process
    const blocked = performance.now() - t0;
    const settled = await Promise.race([
      p.wait().then((r) => r, (e) => e),
      sleep(2000).then(() => 'timeout'),
    ]);
    const settle = performance.now() - t0;
    assert.notEqual(settled, 'timeout', 'the process did not settle within 2 s');
    if (ctl === 'cancel') {
      assert.equal(settled.code, 'Canceled');
    } else {
      assert.deepEqual([settled.exitCode, settled.signal], [null, 'SIGTERM']);
      assert.deepEqual([p.exitCode, p.signalCode], [null, 'SIGTERM']);
    }
    assert.ok(blocked < 2000, `the event loop was blocked ${blocked} ms`);
    console.log(`FAULT-ROW 1 | node ${ctl} with stdin full (sandbox) | ${settle.toFixed(1)}ms`);
  });
}

test('kill before the spawn finished is applied once it started', T, async () => {
  const p = box.spawn('sleep', ['60'], { stdin: 'ignore' });
  assert.equal(p.kill(), true);
  const r = await p.wait();
  assert.deepEqual([r.exitCode, r.signal], [null, 'SIGTERM']);
});
