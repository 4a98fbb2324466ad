'use strict';
// A 50 MB output read slowly must not pile up in memory: the addon makes the
// library thread wait while the Readable is full.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const v8 = require('node:v8');
const vm = require('node:vm');
const { Runtime, liveHandles } = require('libbox');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-bp-'));
const rt = new Runtime({ home: tmp });

after(async () => {
  await rt.close();
  assert.equal(liveHandles(), 0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MB = 1024 * 1024;

test('50 MB consumed slowly stays bounded in memory', { timeout: 300_000 }, async () => {
  const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
  try {
    const total = 50 * MB;
    const p = box.spawn('dd', ['if=/dev/zero', 'bs=1048576', `count=${total / MB}`], { stdin: 'ignore' });
    gc();
    const base = process.memoryUsage().arrayBuffers;
    let got = 0;
    let peak = 0;
    let nextSample = 0;
    let i = 0;
    for await (const chunk of p.stdout) {
      got += chunk.length;
      if (++i % 4 === 0) await sleep(2); // a slow consumer
      if (got >= nextSample) {
        nextSample += 2 * MB;
        gc();
        peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
      }
    }
    const end = await p.wait();
    assert.equal(end.exitCode, 0);
    assert.equal(got, total, 'every byte arrives, in order of size');
    assert.ok(peak < 16 * MB, `buffered output peaked at ${(peak / MB).toFixed(1)} MB (bound: 16 MB)`);
  } finally {
    await box.close();
  }
});

test('a destroyed stream drops the rest and the process still ends', { timeout: 120_000 }, async () => {
  const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
  try {
    const p = box.spawn('dd', ['if=/dev/zero', 'bs=1048576', 'count=20'], { stdin: 'ignore' });
    for await (const chunk of p.stdout) {
      assert.ok(chunk.length > 0);
      break; // destroys the stream
    }
    assert.equal((await p.wait()).exitCode, 0);
  } finally {
    await box.close();
  }
});

test('a paused stream does not block box.close()', { timeout: 120_000 }, async () => {
  const box = await rt.create({ image: 'busybox', isolation: 'sandbox' });
  const p = box.spawn('dd', ['if=/dev/zero', 'bs=1048576', 'count=100'], { stdin: 'ignore' });
  p.stdout.pause();
  await sleep(300);
  await box.close();
  await p.wait().catch(() => {}); // ended by the stop: a signal or an Unavailable/Canceled error
  assert.equal(p.exited, true);
});
