'use strict';
// Guests attached to a running sidecar (`sidecar run --connect`): two guests of one VM
// talk over node:http, another VM cannot reach them, a wrong secret is refused, and a
// guest's port is its VM's own even when a host process holds the same port.

const { test, before, after } = require('node:test');
const assert = require('assert');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const { SIDECAR, runApp, startApp, describe, assertRan } = require('./helpers');

let dir;
let sidecar;
let socketPath;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushnet-vm-test-'));
  socketPath = path.join(dir, 'sidecar.sock');
  sidecar = spawn(SIDECAR, ['serve', '--listen', socketPath, '--vm', 'a=secret-a', '--vm', 'b=secret-b'], {
    env: { ...process.env, RUST_LOG: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Ready when it logs "listening" (no sleeping, no polling for the file).
  await new Promise((resolve, reject) => {
    let log = '';
    sidecar.stderr.setEncoding('utf8');
    sidecar.stderr.on('data', (text) => {
      log += text;
      if (log.includes('listening')) resolve();
    });
    sidecar.on('exit', (code) => reject(new Error(`the sidecar exited (${code}) before listening:\n${log}`)));
  });
});

after(async () => {
  if (sidecar && sidecar.exitCode === null) {
    const exited = new Promise((resolve) => sidecar.on('exit', resolve));
    sidecar.kill('SIGTERM');
    await exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

const laneA = () => ({ connect: socketPath, vm: 'a=secret-a' });
const laneB = () => ({ connect: socketPath, vm: 'b=secret-b' });

test('http server and client in two guests of one VM; another VM cannot reach them', { timeout: 60000 }, async () => {
  const server = startApp('http_server.js', laneA(), { ready: /listening (\d+)/ });
  const { match, result } = await server.ready;
  assert.ok(match, result && describe(result));
  const port = match[1];

  const get = await runApp('http_get.js', laneA(), { args: [port, '/hello'] });
  assertRan(get, laneA(), { output: /status 200 body hello from \d+/, methods: ['net.connect'] });

  const isolated = await runApp('http_get.js', laneB(), { args: [port, '/hello'] });
  assert.strictEqual(isolated.code, 3, describe(isolated));
  assert.match(isolated.stdout, /error ECONNREFUSED/);

  const quit = await runApp('http_get.js', laneA(), { args: [port, '/quit'] });
  assert.match(quit.stdout, /body bye/, describe(quit));
  const ended = await server.exited;
  assertRan(ended, laneA(), { output: /server closed/, methods: ['net.listen'] });
});

test('a wrong secret is refused with EACCES', { timeout: 30000 }, async () => {
  const result = await runApp('tcp_echo.js', { connect: socketPath, vm: 'a=wrong' });
  assert.notStrictEqual(result.code, 0, describe(result));
  assert.match(result.stderr, /EACCES/);
});

test("a guest listens on a port a host process holds: the VM's port is its own", { timeout: 30000 }, async () => {
  const host = net.createServer();
  await new Promise((resolve) => host.listen(0, '127.0.0.1', resolve));
  const { port } = host.address();
  try {
    assertRan(await runApp('listen_port.js', laneA(), { args: [String(port)] }), laneA(), { output: new RegExp(`listened on ${port}`) });
  } finally {
    host.close();
  }
});

test('poll-mode guests attach over --connect too', { timeout: 30000 }, async () => {
  const lane = { ...laneA(), poll: true };
  assertRan(await runApp('tcp_echo.js', lane), lane, { output: /tcp echo ok/, methods: ['net.poll'] });
});
