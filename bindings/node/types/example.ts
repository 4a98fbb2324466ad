// A typed program that uses every export of the libbox package, compiled
// with `tsc --noEmit` by `./build.sh test` (scripts/node.sh node_typecheck)
// so index.d.ts stays true to index.js. It is type-checked, never run.
import libbox, {
  AbortError, Box, BoxStats, DoctorReport, ExecResult, FileInfo, FileSystem, ImageInfo, LibboxError, Process,
  PortMapping, ProcessInfo, Runtime, SnapshotInfo, WatchEvent, Watcher, doctor, liveHandles,
} from 'libbox';
import * as named from 'libbox';

// The default export (CommonJS module.exports) carries every named export.
const everyExport: Omit<typeof named, 'default'> = libbox;
void everyExport;

async function main(): Promise<void> {
  const report: DoctorReport = await doctor({ home: '/tmp/home' });
  for (const c of report.checks) {
    const line: string = `${c.status} ${c.name} ${c.detail} ${c.fix} ${c.neededBy.join(',')}`;
    console.log(line, report.ready, report.runs, report.isolation);
  }
  const rt = new Runtime({ home: '/tmp/home' });
  const box: Box = await rt.create({
    image: 'busybox', isolation: 'sandbox', cpus: 1, memoryMib: 256, env: { A: 'b' }, cwd: '/',
    volumes: [{ host: '/tmp', box: '/mnt', readOnly: true }], autoRemove: true, detach: false,
    onProgress: p => console.log(p.layer, p.done, p.total),
  });
  await box.start();
  const info = await box.info();
  console.log(info.id, info.state, box.id, box.name, box.closed, box.runtime === rt);
  const r: ExecResult = await box.exec('echo', ['hi'], { timeoutMs: 1000, user: 0, stdin: 'x', signal: new AbortController().signal });
  console.log(r.exitCode, r.signal, r.stdout, r.stderr, r.stdoutBuffer.length, r.durationMs);
  const p: Process = box.spawn('cat', [], { stdin: 'pipe', tty: false });
  p.stdin?.end('bye');
  p.stdout.on('data', (b: Buffer) => console.log(b.length));
  p.resize(24, 80);
  p.kill('SIGTERM');
  p.unref().ref();
  const exit = await p.wait();
  console.log(exit.exitCode, p.exitCode, p.signalCode, p.exited);
  p.cancel();
  await box.copyIn('/tmp/a', '/a');
  await box.copyOut('/a', '/tmp/b');
  const fs: FileSystem = box.fs;
  const n: number = await fs.write('/w/a', 'x', { mode: 0o600, makeParents: true, user: 0 });
  await fs.append('/w/a', Buffer.from('y'));
  const buf: Buffer = await fs.read('/w/a', { offset: 0, length: n });
  const text: string = await fs.readText('/w/a');
  await fs.writeMany([['/w/b', 'b'], ['/w/c', new Uint8Array([1])]]);
  const entries: FileInfo[] = await fs.list('/w', { depth: 2 });
  const fi: FileInfo = await fs.stat('/w/a');
  console.log(buf.length, text, entries.length, fi.mode, fi.mtime.getTime(), await fs.exists('/w'));
  await fs.mkdir('/w/d', { parents: true });
  await fs.rename('/w/d', '/w/e');
  await fs.remove('/w', { recursive: true });
  const watcher: Watcher = await fs.watch('/tmp', { recursive: false });
  for await (const ev of watcher) {
    const e: WatchEvent = ev;
    console.log(e.type, e.path, e.isDir);
    break;
  }
  await watcher.close();
  const stats: BoxStats = await box.stats();
  const ps: ProcessInfo[] = await box.processes();
  console.log(stats.memoryUsed, stats.hostRss, ps.length);
  if (ps.length > 0) await box.kill(ps[0].pid, 15);
  const published = await box.publish([0, 8080]);
  const mapping: PortMapping = { host: published.host, protocol: published.protocol };
  await box.unpublish(mapping);
  const snap: SnapshotInfo = await box.snapshot('before', { memory: false });
  const twin: Box = await box.clone({ name: 'twin' });
  const fromSnap: Box = await rt.create({ from: snap.name });
  const layout: string = await box.export('/tmp/layout');
  await Promise.all([twin.close(), fromSnap.close()]);
  await box.stop();
  await box.restore('before');
  const snaps: SnapshotInfo[] = await rt.snapshots();
  console.log(layout, snaps.map(x => `${x.name} ${x.size} ${(x.usedBy ?? []).join(',')}`));
  await rt.removeSnapshot('before', { force: true });
  await box.close();
  const other: Box = await Box.create({ isolation: 'vm' });
  await other.close();
  const again = await rt.get('name');
  console.log(again.id, (await rt.list()).length);
  await rt.remove('name', { force: true });
  const img: ImageInfo = await rt.pull('busybox', { onProgress: pr => console.log(pr.done) });
  const imgs: ImageInfo[] = await rt.images();
  console.log(img, imgs.length);
  await rt.removeImage('busybox', { force: false });
  await rt.close();
  console.log(Runtime.default().closed, liveHandles(), libbox.version, libbox.abiVersion, libbox.FileSystem, libbox.Watcher);
  try {
    await box.exec('false');
  } catch (e) {
    if (e instanceof LibboxError) console.log(e.code, e.status, e.stdout, e.stderr);
    if (e instanceof AbortError) console.log(e.code);
  }
}

void main();
