'use strict';
// Box.exec delivers through the runtime's event queue (box_exec_queued,
// drained on the JS thread by a uv_poll): large outputs beyond the queue's
// per-exec limit, concurrency, a box removed mid-exec, a runtime closed
// mid-exec, and no handle or file descriptor left after the runtime closed.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');
const { Runtime } = libbox;

const T = { timeout: 180_000 };
const openFds = () => fs.readdirSync('/proc/self/fd').length;

async function withRuntime(fn) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-queue-'));
  const rt = new Runtime({ home: path.join(tmp, 'home') });
  try {
    await fn(rt);
  } finally {
    await rt.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  assert.equal(libbox.liveHandles(), 0, 'every library handle is released');
}

test('outputs beyond the per-exec queue limit, three at once, and small execs beside them', T, () =>
  withRuntime(async (rt) => {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
    const n = 6 << 20;
    const big = Array.from({ length: 3 }, (_, i) =>
      box.exec('sh', ['-c', `head -c ${n + i} /dev/zero; echo err${i} >&2`]));
    const small = Array.from({ length: 64 }, (_, i) => box.exec('sh', ['-c', `echo ${i}; exit ${i % 3}`]));
    const rs = await Promise.all(big);
    rs.forEach((r, i) => {
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdoutBuffer.length, n + i);
      assert.ok(r.stdoutBuffer.every((b) => b === 0));
      assert.equal(r.stderr, `err${i}\n`);
    });
    (await Promise.all(small)).forEach((r, i) => assert.deepEqual([r.exitCode, r.stdout], [i % 3, `${i}\n`]));
    await box.close();
  }));

test('a box removed mid-exec: the exec rejects with Unavailable', T, () =>
  withRuntime(async (rt) => {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox', name: 'removed-mid-exec' });
    const outcome = box.exec('sh', ['-c', 'echo up; sleep 100']).then(() => 'resolved', (err) => err.code);
    await new Promise((r) => setTimeout(r, 500));
    await rt.remove('removed-mid-exec', { force: true });
    assert.equal(await outcome, 'Unavailable');
    await box.close().catch(() => {});
  }));

test('a runtime closed mid-exec settles the exec before its close resolves', T, async () => {
  let settled;
  await withRuntime(async (rt) => {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
    box.exec('sleep', ['100']).then(() => (settled = 'resolved'), (err) => (settled = err.code));
    await new Promise((r) => setTimeout(r, 300));
  });
  await new Promise((r) => setImmediate(r));
  assert.ok(settled !== undefined && settled !== 'resolved', `exec settled as ${settled}`);
});

test('no file descriptor left after a runtime with queued execs closed', T, async () => {
  const cycle = () => withRuntime(async (rt) => {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
    const rs = await Promise.all(Array.from({ length: 16 }, (_, i) => box.exec('echo', [String(i)])));
    assert.deepEqual(rs.map((r) => r.stdout), rs.map((_, i) => `${i}\n`));
    await box.close();
  });
  await cycle(); // what the library keeps for the process starts here
  const before = openFds();
  await cycle();
  assert.equal(openFds(), before, 'file descriptors left after the runtime closed');
});
