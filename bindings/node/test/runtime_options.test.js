'use strict';
// Runtime options: each reaches the library (which checks it), and each left
// undefined takes its LIBBOX_* variable as process.env has it when the
// runtime opens (not as it was when the library was loaded).
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { Runtime, LibboxError } = require('libbox');

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-rtopts-'));
after(() => fs.rmSync(home, { recursive: true, force: true }));

const open = (o) => new Runtime({ home, ...o }).close();

test('good options open a runtime', async () => {
  await open({ bootTimeout: 2.5, accel: 'tcg', vmDebug: true, registryAuth: 'ghcr.io=u:p',
    insecureRegistries: 'r.local:5000', registryMirrors: 'docker.io=m.local' });
  await open({ bootTimeout: '2m' });
});

test('bad options', () => {
  const rows = [
    [{ accel: 1 }, { name: 'TypeError', message: /accel/ }],
    [{ bootTimeout: 'soon' }, { code: 'InvalidArgument', message: /boot_timeout/ }],
    [{ bootTimeout: -1 }, { name: 'RangeError' }],
    [{ bootTimeout: true }, { name: 'TypeError' }],
    [{ vmDebug: 'yes' }, { name: 'TypeError', message: /vmDebug/ }],
    [{ registryAuth: 'ghcr.io' }, { code: 'InvalidArgument', message: /LIBBOX_REGISTRY_AUTH/ }],
    [{ registryMirrors: 'docker.io' }, { code: 'InvalidArgument', message: /LIBBOX_REGISTRY_MIRRORS/ }],
    [{ kernal: '/k' }, { name: 'TypeError', message: /unknown runtime option field "kernal"/ }],
  ];
  for (const [o, want] of rows) assert.throws(() => new Runtime({ home, ...o }), want, JSON.stringify(o));
});

test('the environment is read when the runtime opens', async () => {
  process.env.LIBBOX_BOOT_TIMEOUT = 'never';
  try {
    assert.throws(() => new Runtime({ home }), (e) => e instanceof LibboxError && /boot timeout "never"/.test(e.message));
    await open({ bootTimeout: 5 }); // an explicit option wins
  } finally {
    delete process.env.LIBBOX_BOOT_TIMEOUT;
  }
});
