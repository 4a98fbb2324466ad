'use strict';
// doctor(): the host checks through the installed package, off the JS thread.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');

test('doctor reports every check with a fix for what is not ok', { timeout: 60_000 }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-doctor-'));
  try {
    const r = await libbox.doctor({ home });
    const names = r.checks.map(c => c.name);
    for (const want of ['qemu', 'qemu-img', 'kvm', 'kernel', 'tun', 'userns', 'cgroup', 'space']) {
      assert.ok(names.includes(want), `no ${want} check in ${names}`);
    }
    for (const c of r.checks) {
      assert.ok(['ok', 'warn', 'fail'].includes(c.status), c.status);
      if (c.status !== 'ok') assert.ok(c.fix.length > 0, `${c.name} is ${c.status} with no fix`);
    }
    assert.equal(r.isolation, 'vm');
    assert.ok(r.runs.includes('sandbox'), JSON.stringify(r));
    assert.equal(r.ready, r.runs.includes('vm'));
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
  await assert.rejects(libbox.doctor({ home: '' }), TypeError);
  await assert.rejects(libbox.doctor({ nope: 1 }), TypeError);
});
