'use strict';
// Tests of the installed libbox package against the real libbox.so, with
// sandbox boxes on a temporary home. Every test has a timeout so a hang fails.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-'));
process.env.LIBBOX_HOME = path.join(tmp, 'default-home'); // for Box.create's default runtime

const libbox = require('libbox');
const { Box, Runtime, LibboxError, AbortError } = libbox;

const T = { timeout: 120_000 };
let rt;
let box;

before(async () => {
  rt = new Runtime({ home: path.join(tmp, 'home') });
  box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
});

after(async () => {
  await rt.close();
  await Runtime.default().close();
  assert.equal(libbox.liveHandles(), 0, 'every library handle is released after the runtimes closed');
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('seed pattern: Box.create, Promise.all of 4 execs, close', T, async () => {
  const b = await Box.create({ image: 'busybox', isolation: 'sandbox' });
  const results = await Promise.all(['A', 'B', 'C', 'D'].map((t) => b.exec('echo', ['task', t])));
  assert.deepEqual(
    results.map((r) => [r.exitCode, r.signal, r.stdout, r.stderr]),
    ['A', 'B', 'C', 'D'].map((t) => [0, null, `task ${t}\n`, '']),
  );
  await b.close();
  assert.equal(b.closed, true);
  await b.close(); // idempotent
});

test('Promise.all of 256 execs on one box', T, async () => {
  const n = 256;
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) => box.exec('sh', ['-c', `echo out ${i}; echo err ${i} >&2; exit ${i % 7}`])),
  );
  results.forEach((r, i) => {
    assert.equal(r.stdout, `out ${i}\n`);
    assert.equal(r.stderr, `err ${i}\n`);
    assert.equal(r.exitCode, i % 7);
  });
});

test('8 boxes x 32 concurrent execs', T, async () => {
  const boxes = await Promise.all(
    Array.from({ length: 8 }, () => rt.create({ image: 'busybox', isolation: 'sandbox' })),
  );
  try {
    assert.equal(new Set(boxes.map((b) => b.id)).size, 8);
    const all = await Promise.all(
      boxes.map((b, i) => Promise.all(Array.from({ length: 32 }, (_, j) => b.exec('echo', [`${i}.${j}`])))),
    );
    all.forEach((rs, i) => rs.forEach((r, j) => assert.equal(r.stdout, `${i}.${j}\n`)));
  } finally {
    await Promise.all(boxes.map((b) => b.close()));
  }
});

test('exec: env, cwd, user, non-zero exit, binary output', T, async () => {
  let r = await box.exec('sh', ['-c', 'echo "$GREETING"; pwd; id -u'], { env: { GREETING: 'hi' }, cwd: '/tmp', user: '1000' });
  assert.equal(r.stdout, 'hi\n/tmp\n1000\n');
  r = await box.exec('sh', ['-c', 'exit 3']);
  assert.equal(r.exitCode, 3);
  r = await box.exec('sh', ['-c', 'printf "\\000\\377\\001"']);
  assert.deepEqual([...r.stdoutBuffer], [0, 255, 1]);
});

test('stdin: string, Uint8Array, 5 MB, and a streamed Writable', T, async () => {
  assert.equal((await box.exec('cat', [], { stdin: 'hello\n' })).stdout, 'hello\n');
  assert.equal((await box.exec('cat', [], { stdin: new Uint8Array([104, 105]) })).stdout, 'hi');
  const big = Buffer.alloc(5 * 1024 * 1024, 'x');
  assert.equal((await box.exec('wc', ['-c'], { stdin: big })).stdout.trim(), String(big.length));
  // stdin not wanted: /dev/null, so cat ends at once
  assert.equal((await box.exec('cat')).stdout, '');

  const p = box.spawn('sort', ['-n']);
  for (let i = 1000; i > 0; i--) p.stdin.write(`${i}\n`);
  p.stdin.end();
  let out = '';
  for await (const chunk of p.stdout) out += chunk;
  const end = await p.wait();
  assert.equal(end.exitCode, 0);
  assert.equal(end.signal, null);
  assert.equal(out, Array.from({ length: 1000 }, (_, i) => `${i + 1}\n`).join(''));
});

test('spawn: stdout and stderr streams as async iterables', T, async () => {
  const p = box.spawn('sh', ['-c', 'seq 1 100000; echo done >&2'], { stdin: 'ignore' });
  assert.equal(p.stdin, null);
  const read = async (s) => {
    const parts = [];
    for await (const c of s) parts.push(c);
    return Buffer.concat(parts).toString();
  };
  const [out, err, end] = await Promise.all([read(p.stdout), read(p.stderr), p.wait()]);
  const lines = out.trimEnd().split('\n');
  assert.equal(lines.length, 100000);
  assert.equal(lines[99999], '100000');
  assert.equal(err, 'done\n');
  assert.equal(end.exitCode, 0);
  assert.equal(p.exitCode, 0);
  assert.equal(p.kill(), false, 'kill after the exit reports false');
});

test('spawn: kill sends a signal to the process group', T, async () => {
  const p = box.spawn('sh', ['-c', 'sleep 1000 & echo ready; sleep 1000; wait'], { stdin: 'ignore' });
  const it = p.stdout[Symbol.asyncIterator]();
  assert.equal(String((await it.next()).value), 'ready\n');
  assert.equal(p.kill('SIGKILL'), true);
  await it.return(); // stop reading: the rest is dropped
  const end = await p.wait();
  assert.equal(end.exitCode, null);
  assert.equal(end.signal, 'SIGKILL');
  assert.equal(p.signalCode, 'SIGKILL');
  const ps = await box.exec('ps');
  assert.doesNotMatch(ps.stdout, /sleep 1000/, 'the whole group is gone');
});

test('tty: terminal size, resize, stdin through the terminal', T, async () => {
  const r = await box.exec('sh', ['-c', 'test -t 1 && echo tty; stty size'], { tty: true, rows: 30, cols: 100 });
  assert.equal(r.stdout, 'tty\r\n30 100\r\n');
  const p = box.spawn('sh', ['-c', 'read x; stty size'], { tty: true, rows: 10, cols: 20 });
  p.resize(40, 120);
  p.stdin.write('go\n');
  let out = '';
  for await (const c of p.stdout) out += c;
  assert.equal(out, 'go\r\n40 120\r\n');
  assert.equal((await p.wait()).exitCode, 0);
});

test('AbortSignal kills the process group and rejects with AbortError', T, async () => {
  const ac = new AbortController();
  const p = box.exec('sh', ['-c', 'sleep 1001 & sleep 1001; wait'], { signal: ac.signal });
  setTimeout(() => ac.abort(), 200);
  await assert.rejects(p, (err) => err instanceof AbortError && err.name === 'AbortError');
  const ps = await box.exec('ps');
  assert.doesNotMatch(ps.stdout, /sleep 1001/);
  // already aborted: rejected without running
  await assert.rejects(box.exec('true', [], { signal: AbortSignal.abort() }), { name: 'AbortError' });
  // spawn with a signal: wait() rejects
  const ac2 = new AbortController();
  const sp = box.spawn('sleep', ['1002'], { stdin: 'ignore', signal: ac2.signal });
  ac2.abort();
  await assert.rejects(sp.wait(), { name: 'AbortError' });
});

test('timeoutMs kills the process and rejects with code DeadlineExceeded', T, async () => {
  await assert.rejects(box.exec('sh', ['-c', 'echo started; sleep 1003'], { timeoutMs: 300 }), (err) => {
    assert.ok(err instanceof LibboxError);
    assert.equal(err.code, 'DeadlineExceeded');
    assert.equal(err.stdout, 'started\n', 'output before the timeout is kept on the error');
    return true;
  });
  const ps = await box.exec('ps');
  assert.doesNotMatch(ps.stdout, /sleep 1003/);
});

test('copyIn / copyOut round trip', T, async () => {
  const src = path.join(tmp, 'in.txt');
  const dst = path.join(tmp, 'out.txt');
  fs.writeFileSync(src, 'payload\n');
  await box.copyIn(src, '/tmp/sub/in.txt');
  assert.equal((await box.exec('cat', ['/tmp/sub/in.txt'])).stdout, 'payload\n');
  await box.exec('sh', ['-c', 'echo back > /tmp/sub/back.txt']);
  await box.copyOut('/tmp/sub/back.txt', dst);
  assert.equal(fs.readFileSync(dst, 'utf8'), 'back\n');
});

test('info, list, get, remove', T, async () => {
  const info = await box.info();
  assert.equal(info.id, box.id);
  assert.equal(info.state, 'running');
  assert.equal(info.isolation, 'sandbox');
  assert.ok((await rt.list()).some((b) => b.id === box.id));

  const named = await rt.create({ image: 'busybox', isolation: 'sandbox', name: 'node-named', autoRemove: false });
  assert.equal(named.name, 'node-named');
  const again = await rt.get('node-named');
  assert.equal(again.id, named.id);
  assert.equal((await again.exec('echo', ['via get'])).stdout, 'via get\n');
  await assert.rejects(rt.remove('node-named'), { code: 'FailedPrecondition' }, 'a running box needs force');
  await named.close();
  await again.close();
  await rt.remove('node-named');
  await assert.rejects(rt.get('node-named'), { code: 'NotFound' });
});

test('bad input: wrong types throw TypeError synchronously', T, () => {
  const rows = [
    [() => Box.create({ image: 5 }), /image/],
    [() => Box.create({ imgae: 'busybox' }), /unknown box option field "imgae"/],
    [() => Box.create({ isolation: 'chroot' }), /isolation/],
    [() => Box.create('busybox'), /must be an object/],
    [() => rt.create({ memoryMib: 1.5 }), /memoryMib/],
    [() => rt.create({ volumes: [{ host: '/tmp' }] }), /volumes\[0\]\.box/],
    [() => new Runtime({ home: 3 }), /home/],
    [() => box.exec(), /cmd/],
    [() => box.exec(''), /cmd/],
    [() => box.exec(5), /cmd/],
    [() => box.exec('echo', 'hi'), /args/],
    [() => box.exec('echo', [1]), /args/],
    [() => box.exec('echo', [], null), /must be an object/],
    [() => box.exec('echo', [], { timeout: 5 }), /unknown exec option field "timeout"/],
    [() => box.exec('echo', [], { timeoutMs: -1 }), /timeoutMs/],
    [() => box.exec('echo', [], { env: { A: 1 } }), /env\.A/],
    [() => box.exec('echo', [], { cwd: 7 }), /cwd/],
    [() => box.exec('echo', [], { user: {} }), /user/],
    [() => box.exec('echo', [], { stdin: 5 }), /stdin/],
    [() => box.exec('echo', [], { signal: {} }), /AbortSignal/],
    [() => box.spawn('echo', [], { stdin: 7 }), /stdin/],
    [() => box.copyIn(1, '/x'), /hostPath/],
    [() => rt.get(''), /idOrName/],
    [() => rt.remove('x', { force: 'yes' }), /force/],
  ];
  for (const [fn, msg] of rows) {
    assert.throws(fn, (err) => err instanceof TypeError && msg.test(err.message), String(fn));
  }
  const p = box.spawn('sleep', ['1004'], { stdin: 'ignore' });
  assert.throws(() => p.kill('SIGNOPE'), TypeError);
  p.kill('SIGKILL');
  return p.wait();
});

test('library errors map to LibboxError codes', T, async () => {
  const spawnFailures = [
    ['missing command', () => box.exec('no-such-command-xyz'), 'NotFound', 'not_found'],
    ['not executable', () => box.exec('/etc/passwd'), 'InvalidArgument', 'not_executable'],
    ['bad cwd', () => box.exec('true', [], { cwd: '/no/such/dir' }), 'InvalidArgument', 'bad_working_dir'],
    ['bad user', () => box.exec('true', [], { user: 'no-such-user' }), 'InvalidArgument', 'bad_user'],
  ];
  for (const [name, fn, code, reason] of spawnFailures) {
    await assert.rejects(fn(), (e) => e instanceof LibboxError && e.code === code && e.reason === reason, name);
  }
  await assert.rejects(box.spawn('no-such-command-xyz').wait(), { code: 'NotFound', reason: 'not_found' }, 'spawn().wait()');
  await assert.rejects(rt.get('no-such-box'), (e) => e instanceof LibboxError && e.code === 'NotFound' && e.status === 1);

  const b = await rt.create({ image: 'busybox', isolation: 'sandbox', name: 'node-dup' });
  await assert.rejects(rt.create({ image: 'busybox', isolation: 'sandbox', name: 'node-dup' }), { code: 'AlreadyExists' });
  await b.stop();
  await assert.rejects(b.exec('true'), { code: 'FailedPrecondition' }, 'exec on a stopped box');
  assert.throws(() => b.spawn('true'), { code: 'FailedPrecondition' });
  await b.close();
  await assert.rejects(b.exec('true'), { code: 'FailedPrecondition' }, 'exec on a closed box');

  const r2 = new Runtime({ home: path.join(tmp, 'home2') });
  await r2.close();
  await assert.rejects(r2.create({ image: 'busybox' }), { code: 'FailedPrecondition' });
  await r2.close(); // idempotent
});

test('vm isolation (skips where this host cannot run VMs)', T, async (t) => {
  let vm;
  try {
    vm = await rt.create({ image: 'busybox', isolation: 'vm' });
  } catch (err) {
    if (err instanceof LibboxError && (err.code === 'Unsupported' || err.code === 'Unavailable')) {
      t.skip(`no VM on this host (${err.message}): install QEMU and a kernel (./build.sh deps) or enable KVM`);
      return;
    }
    throw err;
  }
  try {
    const rs = await Promise.all(['A', 'B'].map((x) => vm.exec('echo', ['vm', x])));
    assert.deepEqual(rs.map((r) => r.stdout), ['vm A\n', 'vm B\n']);
  } finally {
    await vm.close();
  }
});
