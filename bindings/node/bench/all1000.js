// Measures binding.node.all1000_ms: 1,000 `true` execs on one sandbox box
// through Promise.all with at most 64 in flight, and merges it into the
// bench results file written by the Go bench (argv[2]), atomically.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Runtime } = require('libbox');

const N = 1000;
const CONCURRENCY = 64;

async function runAll(box) {
  let next = 0;
  const worker = async () => {
    while (next < N) {
      next++;
      const r = await box.exec('true');
      if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
    }
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function main() {
  const out = process.argv[2];
  const rt = new Runtime(process.env.LIBBOX_HOME ? { home: process.env.LIBBOX_HOME } : {});
  let ms;
  try {
    const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
    try {
      await runAll(box); // warm-up
      ms = await runAll(box);
    } finally {
      await box.close();
    }
  } finally {
    await rt.close();
  }
  const metric = { 'binding.node.all1000_ms': Math.round(ms * 10) / 10 };
  if (out) {
    let doc = { metrics: {}, info: {} };
    if (fs.existsSync(out)) doc = JSON.parse(fs.readFileSync(out, 'utf8'));
    doc.metrics = { ...(doc.metrics || {}), ...metric };
    const tmp = path.join(path.dirname(out), `.${path.basename(out)}.${process.pid}.tmp`);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify(doc, null, 2) + '\n');
    fs.renameSync(tmp, out);
  }
  const go = out && fs.existsSync(out) ? JSON.parse(fs.readFileSync(out, 'utf8')).metrics['binding.go.1000_ms'] : undefined;
  const ratio = go ? ` (${(metric['binding.node.all1000_ms'] / go).toFixed(2)}x binding.go.1000_ms = ${go} ms; target <= 1.2x)` : '';
  console.log(`binding.node.all1000_ms ${metric['binding.node.all1000_ms']}${ratio}`);
}

main().catch((err) => {
  console.error(`all1000.js: ${err.code ? `${err.code}: ` : ''}${err.message}`);
  process.exitCode = 1;
});
