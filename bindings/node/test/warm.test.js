'use strict';
// runtime.warm: the options reach the library, which checks them (the
// template build itself is tested in Go, libbox TestVMTemplateStart).
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');
const { Runtime } = libbox;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-warm-'));
const rt = new Runtime({ home: path.join(tmp, 'home') });

after(async () => {
  await rt.close();
  assert.equal(libbox.liveHandles(), 0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('warm refuses bad options', { timeout: 60_000 }, async () => {
  await assert.rejects(rt.warm('busybox', { memoryMib: 8 }), (err) => err.code === 'InvalidArgument' && /memory 8 MiB/.test(err.message));
  assert.throws(() => rt.warm('busybox', { cpus: '2' }), TypeError);
  assert.throws(() => rt.warm('busybox', { disk: 1 }), TypeError);
  await assert.rejects(rt.warm('oci-layout:/no/such/dir'), (err) => err.code === 'NotFound');
});
