'use strict';
// Pull options: an AbortSignal stops a pull (the library drops its request
// to the registry), a platform is passed through, pruneImages reports what
// it reclaimed; execDefault runs the image's command.
// The abort check runs in a child process (this file, with
// LIBBOX_TEST_PULL_ABORT set): the library reads LIBBOX_INSECURE_REGISTRIES
// from the environment the process started with.
const http = require('node:http');

if (process.env.LIBBOX_TEST_PULL_ABORT) {
  abortChild().then(
    (msg) => {
      console.log(msg);
      process.exit(msg === 'OK' ? 0 : 1);
    },
    (err) => {
      console.log('child failed:', err);
      process.exit(1);
    },
  );
} else {
  tests();
}

// A registry that answers its ping and holds every other request until the
// client drops it.
function hangingRegistry() {
  let onHeld;
  let onGone;
  const held = new Promise((r) => (onHeld = r));
  const gone = new Promise((r) => (onGone = r));
  const srv = http.createServer((req, res) => {
    if (req.url === '/v2/') {
      res.end();
      return;
    }
    onHeld();
    res.on('close', onGone);
  });
  return new Promise((resolve) => {
    srv.listen(0, '127.0.0.1', () => resolve({ srv, host: `127.0.0.1:${srv.address().port}`, held, gone }));
  });
}

async function abortChild() {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const libbox = require('libbox');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-abort-'));
  const rt = new libbox.Runtime({ home: tmp });
  const reg = await hangingRegistry();
  const timeout = (ms, what) => new Promise((_, rej) => setTimeout(() => rej(new Error(what)), ms).unref());
  try {
    const ac = new AbortController();
    const p = rt.pull(`${reg.host}/x/y:1`, { signal: ac.signal, platform: 'linux/arm64' });
    const early = p.then(() => 'pull resolved', (err) => `pull ended before the registry held it: ${err.message}`);
    const first = await Promise.race([reg.held.then(() => null), early, timeout(20000, 'never held')]);
    if (first) return first;
    ac.abort();
    let name = '';
    try {
      await p;
    } catch (err) {
      name = err.name;
    }
    if (name !== 'AbortError') return `aborted pull: ${name || 'resolved'}`;
    await Promise.race([reg.gone, timeout(10000, 'the aborted pull kept its request open')]);
    const again = new AbortController();
    again.abort();
    name = '';
    await rt.pull('busybox', { signal: again.signal }).catch((err) => (name = err.name));
    if (name !== 'AbortError') return `pre-aborted pull: ${name || 'resolved'}`;
    return 'OK';
  } finally {
    reg.srv.closeAllConnections();
    reg.srv.close();
    await rt.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function tests() {
  const { test, after } = require('node:test');
  const assert = require('node:assert/strict');
  const childProcess = require('node:child_process');
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');

  const libbox = require('libbox');
  const { Runtime } = libbox;

  const T = { timeout: 120_000 };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-pull-'));
  const rt = new Runtime({ home: path.join(tmp, 'home') });

  after(async () => {
    await rt.close();
    assert.equal(libbox.liveHandles(), 0);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('an AbortSignal stops the download', T, () => {
    const r = childProcess.spawnSync(process.execPath, [__filename], {
      env: { ...process.env, LIBBOX_TEST_PULL_ABORT: '1', LIBBOX_INSECURE_REGISTRIES: '127.0.0.1' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.stdout.trim(), 'OK', r.stderr);
    assert.equal(r.status, 0);
  });

  test('platform, bad options, pruneImages', T, async () => {
    const img = await rt.pull('busybox', { platform: 'linux/amd64' });
    assert.match(img.id, /^sha256:/);
    await assert.rejects(rt.pull('busybox', { platform: 'nonsense' }), (err) => err.code === 'InvalidArgument');
    assert.throws(() => rt.pull('busybox', { signal: 'no' }), TypeError);
    assert.throws(() => rt.pull('busybox', { platfrom: 'linux/amd64' }), TypeError);
    const rep = await rt.pruneImages();
    assert.deepEqual(Object.keys(rep).sort(), ['blobs', 'bytes', 'roots']);
  });

  test('execDefault runs the image command', T, async () => {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox', platform: 'linux/amd64' });
    try {
      // busybox has a Cmd (sh) and no Entrypoint: args replace the Cmd.
      const r = await box.execDefault(['echo', 'from', 'image']);
      assert.equal(r.stdout, 'from image\n');
      const sh = await box.execDefault([], { stdin: 'echo from cmd' });
      assert.equal(sh.stdout, 'from cmd\n');
    } finally {
      await box.close();
    }
  });
}
