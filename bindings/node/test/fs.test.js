'use strict';
// The file-system API, stats and processes through the installed package.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');
const { Runtime, LibboxError } = libbox;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-fs-'));
const rt = new Runtime({ home: tmp });

after(async () => {
  await rt.close();
  assert.equal(libbox.liveHandles(), 0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('files, watch, stats and processes', { timeout: 120_000 }, async () => {
  const box = await rt.create({ isolation: 'sandbox' });
  try {
    const data = Buffer.alloc(1 << 20);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    assert.equal(await box.fs.write('/tmp/js/a.bin', data), data.length);
    assert.deepEqual(await box.fs.read('/tmp/js/a.bin'), data);
    assert.deepEqual(await box.fs.read('/tmp/js/a.bin', { offset: 250, length: 3 }), Buffer.from([250, 0, 1]));
    await box.fs.write('/tmp/js/t.txt', 'héllo\n', { mode: 0o600 });
    await box.fs.append('/tmp/js/t.txt', 'more\n');
    assert.equal(await box.fs.readText('/tmp/js/t.txt'), 'héllo\nmore\n');
    assert.equal(await box.fs.writeMany([['/tmp/js/m/1', '1'], ['/tmp/js/m/2', Buffer.from('2')]]), 2);
    const list = await box.fs.list('/tmp/js', { depth: 2 });
    assert.deepEqual(
      list.map((e) => `${e.path}:${e.type}`),
      ['/tmp/js/a.bin:file', '/tmp/js/m:dir', '/tmp/js/m/1:file', '/tmp/js/m/2:file', '/tmp/js/t.txt:file'],
    );
    const st = await box.fs.stat('/tmp/js/t.txt');
    assert.deepEqual([st.name, st.type, st.size, st.mode], ['t.txt', 'file', 12, 0o600]);
    assert.ok(st.mtime instanceof Date);
    assert.equal(await box.fs.exists('/tmp/js/m/1'), true);
    assert.equal(await box.fs.exists('/tmp/js/none'), false);
    await box.fs.mkdir('/tmp/js/d/e');
    await box.fs.rename('/tmp/js/m', '/tmp/js/d/e/m');
    assert.equal((await box.fs.read('/tmp/js/d/e/m/2')).toString(), '2');
    await box.fs.remove('/tmp/js/d', { recursive: true });
    assert.equal(await box.fs.exists('/tmp/js/d'), false);
    // The error vocabulary.
    await assert.rejects(box.fs.read('/tmp/js/none'), { code: 'NotFound' });
    await assert.rejects(box.fs.read('/tmp/js'), { code: 'FailedPrecondition' });
    await assert.rejects(box.fs.read('/tmp/../etc/passwd'), { code: 'InvalidArgument' });
    await assert.rejects(box.fs.mkdir('/tmp/js', { parents: false }), { code: 'AlreadyExists' });
    await assert.rejects(box.fs.watch('/tmp/js/t.txt'), { code: 'FailedPrecondition' });
    assert.throws(() => box.fs.read('/tmp/js/a.bin', { offset: -1 }), TypeError);
    // Watch: an async iterator.
    const w = await box.fs.watch('/tmp/js');
    await box.fs.write('/tmp/js/new', 'x');
    await box.exec('rm', ['/tmp/js/a.bin']);
    const seen = [];
    for await (const ev of w) {
      seen.push(`${ev.type}:${ev.path}`);
      if (seen.includes('remove:/tmp/js/a.bin')) break; // break closes the watch
    }
    assert.ok(seen.includes('write:/tmp/js/new'), seen.join(' '));
    // Stats and processes.
    const stats = await box.stats();
    assert.ok(stats.memoryTotal > 0 && stats.hostRss > 0 && stats.execsServed >= 1, JSON.stringify(stats));
    assert.deepEqual(stats.boot.map((s) => s.name), ['prepare', 'launch', 'agent']);
    const proc = box.spawn('sleep', ['60']);
    let ps = [];
    for (let i = 0; i < 100 && ps.length === 0; i++) {
      ps = (await box.processes()).filter((p) => p.args.join(' ') === 'sleep 60');
      if (ps.length === 0) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(ps.length, 1);
    await box.kill(ps[0].pid, 15);
    const res = await proc.wait();
    assert.equal(res.signal, 'SIGTERM');
    await assert.rejects(box.kill(ps[0].pid), (e) => e instanceof LibboxError && e.code === 'NotFound');
  } finally {
    await box.close();
  }
});
