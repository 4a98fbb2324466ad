// Measures binding.node.all1000_ms: 1,000 `true` execs on one sandbox box
// through Promise.all with at most 64 in flight, and merges it into the
// bench results file written by the Go bench (argv[2]), atomically.
// With argv[3] (libbox-bench), each of 3 rounds first runs the same 1,000
// execs through the Go API in that program (-serve-go-execs, a box of its
// own), then the Node ones: each round's ratio compares both under the same
// load, and goes to the file's "ratios" with its median and spread.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { spawn } = require('node:child_process');
const { Runtime } = require('libbox');

const N = 1000;
const CONCURRENCY = 64;
const ROUNDS = 3;
const RATIO = 'Node all 1000 / Go 1000, interleaved';
const TARGET = 1.1;

// loopCpuMs is the CPU ms the JavaScript (event loop) thread used so far,
// from /proc (Linux; NaN elsewhere): the rest of the process's CPU is the
// library's and Node's other threads.
function loopCpuMs() {
  try {
    const stat = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, in USER_HZ (100) ticks
  } catch {
    return NaN;
  }
}

async function runAll(box, n = N) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const r = await box.exec('true');
      if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
    }
  };
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  const l0 = loopCpuMs();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const c = process.cpuUsage(c0);
  return {
    ms: Number(process.hrtime.bigint() - t0) / 1e6, cpuMs: (c.user + c.system) / 1000, loopCpuMs: loopCpuMs() - l0,
  };
}

// goExecs drives `libbox-bench -serve-go-execs`: run(n) resolves to
// { ms, cpuMs } of n execs through the Go API.
async function goExecs(bench) {
  const child = spawn(bench, ['-serve-go-execs'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`${bench} -serve-go-execs ended (see its error above)`);
    return value.trim();
  };
  const ready = await next();
  if (ready !== 'ready') throw new Error(`${bench} -serve-go-execs did not start a box: ${ready}`);
  return {
    async run(n) {
      child.stdin.write(`${n} ${CONCURRENCY}\n`);
      const [ms, cpuMs] = (await next()).split(' ').map(Number);
      return { ms, cpuMs };
    },
    close() {
      child.stdin.end();
      return new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
    },
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const out = process.argv[2];
  const go = process.argv[3] ? await goExecs(process.argv[3]) : null;
  const rt = new Runtime(process.env.LIBBOX_HOME ? { home: process.env.LIBBOX_HOME } : {});
  const node = [];
  const gos = [];
  try {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
    try {
      await runAll(box, 2 * CONCURRENCY); // warm-up
      if (go) await go.run(2 * CONCURRENCY);
      for (let r = 0; r < (go ? ROUNDS : 1); r++) {
        if (go) gos.push(await go.run(N));
        node.push(await runAll(box));
      }
    } finally {
      await box.close();
    }
  } finally {
    await rt.close();
    if (go) await go.close();
  }
  const round1 = (x) => Math.round(x * 10) / 10;
  const ms = median(node.map((x) => x.ms));
  const metric = {
    'binding.node.all1000_ms': round1(ms),
    'binding.node.cpu_us_per_exec': round1((median(node.map((x) => x.cpuMs)) * 1000) / N),
  };
  const loop = round1((median(node.map((x) => x.loopCpuMs)) * 1000) / N);
  if (Number.isFinite(loop)) metric['binding.node.loop_cpu_us_per_exec'] = loop;
  let ratio;
  if (go) {
    const rounds = node.map((x, i) => Math.round((x.ms / gos[i].ms) * 1000) / 1000);
    const lo = Math.min(...rounds);
    const hi = Math.max(...rounds);
    ratio = {
      median: median(rounds), min: lo, max: hi, target: TARGET, goal: 'at_most',
      status: hi <= TARGET ? 'met' : lo > TARGET ? 'not met' : 'unstable', rounds,
    };
    metric['binding.go.node_interleaved_1000_ms'] = round1(median(gos.map((x) => x.ms)));
    metric['binding.go.node_cpu_us_per_exec'] = round1((median(gos.map((x) => x.cpuMs)) * 1000) / N);
  }
  let doc = { metrics: {}, info: {} };
  if (out) {
    if (fs.existsSync(out)) doc = JSON.parse(fs.readFileSync(out, 'utf8'));
    doc.metrics = { ...(doc.metrics || {}), ...metric };
    if (ratio) doc.ratios = { ...(doc.ratios || {}), [RATIO]: ratio };
    const tmp = path.join(path.dirname(out), `.${path.basename(out)}.${process.pid}.tmp`);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify(doc, null, 2) + '\n');
    fs.renameSync(tmp, out);
  }
  let line = `binding.node.all1000_ms ${metric['binding.node.all1000_ms']}`;
  if (ratio) {
    line += ` (${ratio.median.toFixed(2)}x Go [${ratio.min.toFixed(2)}..${ratio.max.toFixed(2)}] interleaved,` +
      ` target <= ${TARGET}x: ${ratio.status}; host CPU/exec ${metric['binding.node.cpu_us_per_exec']} us` +
      (Number.isFinite(loop) ? `, of which the event loop thread ${loop} us,` : '') +
      ` vs Go ${metric['binding.go.node_cpu_us_per_exec']} us)`;
  } else if (doc.metrics['binding.go.1000_ms']) {
    const g = doc.metrics['binding.go.1000_ms'];
    line += ` (${(ms / g).toFixed(2)}x binding.go.1000_ms = ${g} ms, not interleaved; target <= ${TARGET}x)`;
  }
  console.log(line);
}

main().catch((err) => {
  console.error(`all1000.js: ${err.code ? `${err.code}: ` : ''}${err.message}`);
  process.exitCode = 1;
});
