'use strict';
// A script exits on its own: with its boxes closed, and also with a box left
// open (the runtime is closed at exit, stopping the box).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

// True while some host process has `marker` in its command line (sandbox
// boxes are host processes in namespaces).
function running(marker) {
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').includes(marker)) return true;
    } catch (_) {}
  }
  return false;
}

function runScript(body) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-exit-'));
  try {
    const script = path.join(__dirname, `.exit-${process.pid}.js`);
    fs.writeFileSync(script, `'use strict';\nconst libbox = require('libbox');\n(async () => {\n${body}\n})();\n`);
    try {
      const r = spawnSync(process.execPath, [script], {
        env: { ...process.env, LIBBOX_HOME: tmp },
        encoding: 'utf8',
        timeout: 60_000,
        killSignal: 'SIGKILL',
      });
      return r;
    } finally {
      fs.rmSync(script, { force: true });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

test('exits on its own once its boxes are closed', { timeout: 90_000 }, () => {
  const r = runScript(`
    const box = await libbox.Box.create({ image: 'busybox', isolation: 'sandbox' });
    const res = await box.exec('echo', ['closed']);
    process.stdout.write(res.stdout);
    await box.close();
  `);
  assert.equal(r.error, undefined, 'the script did not exit on its own');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'closed\n');
});

test('exits on its own with a box left open (stopped at exit)', { timeout: 90_000 }, () => {
  const r = runScript(`
    const box = await libbox.Box.create({ image: 'busybox', isolation: 'sandbox' });
    const res = await box.exec('echo', ['open']);
    process.stdout.write(res.stdout);
  `);
  assert.equal(r.error, undefined, 'the script did not exit on its own');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'open\n');
});

test('process.exit() with execs running cancels them and stops the box', { timeout: 90_000 }, () => {
  const r = runScript(`
    const box = await libbox.Box.create({ image: 'busybox', isolation: 'sandbox' });
    box.spawn('sleep', ['1005'], { stdin: 'ignore' });
    box.exec('sleep', ['1005']).catch(() => {});
    await new Promise((res) => setTimeout(res, 300));
    process.exit(7);
  `);
  assert.equal(r.error, undefined, 'the script did not exit');
  assert.equal(r.status, 7, r.stderr);
  assert.equal(running('sleep 1005'), false, 'no process of the box is left');
});

test('a running exec keeps the script alive until it ends; unref() lets it go', { timeout: 90_000 }, () => {
  const r = runScript(`
    const box = await libbox.Box.create({ image: 'busybox', isolation: 'sandbox' });
    box.exec('sh', ['-c', 'sleep 0.3; echo late']).then((res) => process.stdout.write(res.stdout));
    box.spawn('sleep', ['1006'], { stdin: 'ignore' }).unref();
  `);
  assert.equal(r.error, undefined, 'the script did not exit on its own');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'late\n');
  assert.equal(running('sleep 1006'), false, 'the unref()ed process was stopped with its box at exit');
});
