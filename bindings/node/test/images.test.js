'use strict';
// Image management through the installed package: pull (with progress from
// an OCI layout built here), images, removeImage, and bad references.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const libbox = require('libbox');
const { Runtime, LibboxError } = libbox;

const T = { timeout: 120_000 };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-images-'));
const rt = new Runtime({ home: path.join(tmp, 'home') });

after(async () => {
  await rt.close();
  assert.equal(libbox.liveHandles(), 0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

// tarFile returns a ustar archive holding one regular file.
function tarFile(name, body) {
  const h = Buffer.alloc(512);
  h.write(name, 0);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(body.length.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\0' + '00', 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([h, body, pad, Buffer.alloc(1024)]);
}

function blob(root, data) {
  const hex = crypto.createHash('sha256').update(data).digest('hex');
  fs.writeFileSync(path.join(root, 'blobs', 'sha256', hex), data);
  return { digest: 'sha256:' + hex, size: data.length };
}

// makeOCILayout writes a one-layer image (tag "latest") whose /hello.txt is
// `line` repeated; layers already in the store are not fetched again, so a
// test that wants progress events uses a line of its own.
function makeOCILayout(root, line = 'hello from node\n') {
  fs.mkdirSync(path.join(root, 'blobs', 'sha256'), { recursive: true });
  const body = Buffer.from(line.repeat(4096));
  const layerTar = tarFile('hello.txt', body);
  const layer = blob(root, zlib.gzipSync(layerTar));
  const diffID = 'sha256:' + crypto.createHash('sha256').update(layerTar).digest('hex');
  const config = blob(root, Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffID] },
    config: { Env: ['PATH=/bin'], Cmd: ['cat', '/hello.txt'] },
  })));
  const manifest = blob(root, Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
  })));
  fs.writeFileSync(path.join(root, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(path.join(root, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest,
      annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
  }));
  return body;
}

test('pull, images, removeImage refused while in use', T, async () => {
  const img = await rt.pull('busybox');
  assert.match(img.id, /^sha256:[0-9a-f]{64}$/);
  assert.ok(fs.statSync(img.root).isDirectory());
  assert.ok((await rt.images()).some((i) => i.ref === 'busybox'));
  const box = await rt.create({ image: 'busybox', isolation: 'sandbox', autoRemove: false });
  await assert.rejects(rt.removeImage('busybox'), (err) => err instanceof LibboxError && err.code === 'FailedPrecondition' && /busybox/.test(err.message));
  await box.close();
  await rt.remove(box.id, { force: true });
  await rt.removeImage('busybox');
  assert.ok(!(await rt.images()).some((i) => i.ref === 'busybox'));
});

test('bad references map to codes; wrong types throw', T, async () => {
  await assert.rejects(rt.pull('UPPER/case'), (err) => err.code === 'InvalidArgument' && err.message.includes('UPPER/case'));
  await assert.rejects(rt.pull('oci-layout:/no/such/dir'), (err) => err.code === 'NotFound');
  assert.throws(() => rt.pull(42), TypeError);
  assert.throws(() => rt.pull('busybox', { onProgress: 'no' }), TypeError);
  assert.throws(() => rt.removeImage('busybox', { colour: 1 }), TypeError);
});

test('pull progress from an OCI layout', T, async () => {
  const dir = path.join(tmp, 'layout');
  const body = makeOCILayout(dir);
  const events = [];
  const img = await rt.pull(`oci-layout:${dir}:latest`, { onProgress: (p) => events.push(p) });
  assert.deepEqual(img.config.cmd, ['cat', '/hello.txt']);
  assert.deepEqual(fs.readFileSync(path.join(img.root, 'hello.txt')), body);
  assert.ok(events.length > 0, 'progress events');
  assert.ok(events.some((e) => e.done > 0), JSON.stringify(events));
});

test('create reports image pull progress; none after it resolves', T, async () => {
  const dir = path.join(tmp, 'layout-create');
  makeOCILayout(dir, 'hello from a created box\n');
  const ref = `oci-layout:${dir}:latest`;
  const events = [];
  const box = await rt.create({ image: ref, isolation: 'sandbox', onProgress: (p) => events.push(p) });
  const n = events.length;
  try {
    assert.ok(events.some((e) => e.done > 0 && typeof e.layer === 'string' && e.layer.length > 0), JSON.stringify(events));
    assert.ok((await rt.list()).some((b) => b.id === box.id && b.image === ref), 'box listed with its image');
  } finally {
    await box.close();
  }
  assert.equal(events.length, n, 'progress after create resolved');
  assert.throws(() => rt.create({ image: ref, onProgress: 1 }), TypeError);
});

test('a closed runtime rejects image calls', T, async () => {
  const other = new Runtime({ home: path.join(tmp, 'closed-home') });
  await other.close();
  await assert.rejects(other.pull('busybox'), (err) => err instanceof LibboxError && err.code === 'FailedPrecondition');
  await assert.rejects(other.images(), (err) => err instanceof LibboxError && err.code === 'FailedPrecondition');
  await assert.rejects(other.removeImage('busybox'), (err) => err instanceof LibboxError && err.code === 'FailedPrecondition');
});
