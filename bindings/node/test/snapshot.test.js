'use strict';
// Snapshots, clones, restore and export of a sandbox box through the installed package.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');
const { Runtime } = libbox;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-snap-'));
const rt = new Runtime({ home: path.join(tmp, 'home') });

after(async () => {
  await rt.close();
  assert.equal(libbox.liveHandles(), 0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const read = async (box, p) => (await box.exec('cat', [p])).stdout;

test('snapshot, clone, diverge, restore, export', { timeout: 300_000 }, async () => {
  const box = await rt.create({ isolation: 'sandbox', name: 'node-src', autoRemove: false });
  await box.fs.write('/work/state', 'v1');
  const snap = await box.snapshot('node-v1');
  assert.equal(snap.name, 'node-v1');
  assert.equal(snap.isolation, 'sandbox');
  await assert.rejects(box.snapshot('node-v1'), { code: 'AlreadyExists' });
  await assert.rejects(box.snapshot('node-mem', { memory: true }), { code: 'Unsupported' });
  assert.throws(() => box.snapshot(''), TypeError);

  // A clone of the snapshot and one of the live box: independent of it and of each other.
  const fromSnap = await rt.create({ from: 'node-v1', name: 'node-clone' });
  await box.fs.write('/work/state', 'v2');
  const twin = await box.clone({ name: 'node-twin' });
  assert.equal(await read(fromSnap, '/work/state'), 'v1');
  assert.equal(await read(twin, '/work/state'), 'v2');
  await fromSnap.fs.write('/work/only-clone', 'x');
  assert.equal(await box.fs.exists('/work/only-clone'), false);
  assert.equal(await twin.fs.exists('/work/only-clone'), false);
  await assert.rejects(box.clone({ image: 'busybox' }), TypeError);

  // Listed with what sits on it; removal refused while a box does.
  const listed = (await rt.snapshots()).find((x) => x.name === 'node-v1');
  assert.ok(listed, 'snapshots() lists node-v1');
  assert.ok(Array.isArray(listed.usedBy) && listed.usedBy.length > 0, `usedBy: ${JSON.stringify(listed.usedBy)}`);
  await assert.rejects(rt.removeSnapshot('node-v1'), { code: 'FailedPrecondition' });
  await assert.rejects(rt.removeSnapshot('no-such-snapshot'), { code: 'NotFound' });

  // Restore: refused while running, then rolls the box back.
  await assert.rejects(box.restore('node-v1'), { code: 'FailedPrecondition' });
  await box.stop();
  await box.restore('node-v1');
  await box.start();
  assert.equal(await read(box, '/work/state'), 'v1');

  // Export, then run the exported image.
  const ref = await box.export(path.join(tmp, 'layout'));
  assert.equal(ref, `oci-layout:${path.join(tmp, 'layout')}`);
  const fromImage = await rt.create({ image: ref, isolation: 'sandbox', name: 'node-exported' });
  assert.equal(await read(fromImage, '/work/state'), 'v1');

  // Closing stops them; all but the source were created autoRemove.
  for (const b of [fromImage, twin, fromSnap, box]) await b.close();
  await rt.remove(box.id);
  await rt.removeSnapshot('node-v1');
  assert.equal((await rt.snapshots()).some((x) => x.name === 'node-v1'), false);
});
