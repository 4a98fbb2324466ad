'use strict';
// Box networking from Node: the allow-list is enforced on the host, a
// published port is reported with the host port picked.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const libbox = require('libbox');
const { Runtime } = libbox;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'libbox-node-net-'));
const T = { timeout: 120_000 };

/** A non-loopback IPv4 address of this machine. */
function hostAddress() {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list || []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '';
}

let rt;
let server;
const ip = hostAddress();

before(async () => {
  rt = new Runtime({ home: path.join(tmp, 'home') });
  if (ip) {
    server = net.createServer((c) => c.end('hello from the host\n'));
    await new Promise((resolve) => server.listen(0, ip, resolve));
  }
});

after(async () => {
  if (server) await new Promise((resolve) => server.close(resolve));
  await rt.close();
  assert.equal(libbox.liveHandles(), 0);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('allow-list and published port', { ...T, skip: ip ? false : 'no non-loopback IPv4 address: bring up an interface' }, async () => {
  assert.throws(() => rt.create({ isolation: 'sandbox', allowNet: ['pypi.org'] }), /network: true/);
  const port = server.address().port;
  const box = await rt.create({
    isolation: 'sandbox', network: true, allowNet: [`${ip}:${port}`], ports: [[0, 8080]],
  });
  try {
    await box.start();
    const ok = await box.exec('nc', ['-w', '5', ip, String(port)]);
    assert.equal(ok.stdout, 'hello from the host\n');
    const denied = await box.exec('sh', ['-c', `nc -w 5 ${ip} 1 </dev/null`]);
    assert.notEqual(denied.exitCode, 0);
    assert.match(denied.stderr, /refused/);
    const info = await box.info();
    assert.equal(info.network.address, '192.168.127.2/24');
    assert.ok(info.network.denied >= 1);
    assert.equal(info.network.ports.length, 1);
    assert.equal(info.network.ports[0].box, 8080);
    assert.doesNotMatch(info.network.ports[0].host, /:0$/);

    // Publish while running: the host port accepts until unpublished.
    const m = await box.publish([0, 9090]);
    assert.equal(m.box, 9090);
    assert.equal(m.protocol, 'tcp');
    const hostPort = Number(m.host.split(':').pop());
    assert.ok(hostPort > 0, m.host);
    const connect = () => new Promise((resolve) => {
      const c = net.connect(hostPort, '127.0.0.1', () => { c.destroy(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    assert.equal(await connect(), true);
    assert.equal((await box.info()).network.ports.length, 2);
    await box.unpublish(m.host);
    assert.equal(await connect(), false);
    await assert.rejects(box.unpublish(m.host), (e) => e.code === 'NotFound');
    assert.throws(() => box.publish({ port: 80 }), /unknown mapping field "port"/);
  } finally {
    await box.close();
  }
});
