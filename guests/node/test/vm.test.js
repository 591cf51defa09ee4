'use strict';
// Guests attached to a running sidecar (`sidecar run --connect`): two guests of one VM
// talk over node:http, another VM cannot reach them, a wrong secret is refused, a
// guest's port is its VM's own even when a host process holds the same port, and
// PUSHNET_DEBUG output shows no secret. No secret is ever on a command line: the sidecar
// takes them with `--vm NAME=env:VAR`, and so does each `run --connect` (helpers.js).

const { test, before, after } = require('node:test');
const assert = require('assert');
const fs = require('fs');
const net = require('net');
const crypto = require('crypto');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const { SIDECAR, runApp, startApp, describe, assertRan } = require('./helpers');

let dir;
let sidecar;
let socketPath;
// The sidecar's log (RUST_LOG=debug), read to the end: it must never hold a secret.
let sidecarLog = '';
// Unguessable, so finding one in some output cannot be a coincidence.
const secretA = `secret-a-${crypto.randomBytes(12).toString('hex')}`;
const secretB = `secret-b-${crypto.randomBytes(12).toString('hex')}`;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushnet-vm-test-'));
  socketPath = path.join(dir, 'sidecar.sock');
  const vms = ['--vm', 'a=env:PUSHNET_TEST_SECRET_A', '--vm', 'b=env:PUSHNET_TEST_SECRET_B'];
  sidecar = spawn(SIDECAR, ['serve', '--listen', socketPath, ...vms], {
    env: { ...process.env, RUST_LOG: 'info,sidecar=debug', PUSHNET_TEST_SECRET_A: secretA, PUSHNET_TEST_SECRET_B: secretB },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Ready when it logs "listening" (no sleeping, no polling for the file).
  await new Promise((resolve, reject) => {
    sidecar.stderr.setEncoding('utf8');
    sidecar.stderr.on('data', (text) => {
      sidecarLog += text;
      if (sidecarLog.includes('listening')) resolve();
    });
    sidecar.on('exit', (code) => reject(new Error(`the sidecar exited (${code}) before listening:\n${sidecarLog}`)));
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

const laneA = () => ({ connect: socketPath, vm: 'a', secret: secretA });
const laneB = () => ({ connect: socketPath, vm: 'b', secret: secretB });

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
  const result = await runApp('tcp_echo.js', { connect: socketPath, vm: 'a', secret: 'wrong' });
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

test('PUSHNET_DEBUG prints every frame but no secret; the sidecar logs none either', { timeout: 30000 }, async () => {
  for (const lane of [laneA(), { ...laneA(), poll: true }]) {
    const result = await runApp('tcp_echo.js', lane, { env: { PUSHNET_DEBUG: '1' } });
    assertRan(result, lane, { output: /tcp echo ok/ });
    // The debug output is there (the calls this guest made), and no secret is in it.
    assert.match(result.stderr, /pushnet: fd \d+ → \{"type":"call"/, describe(result));
    assert.match(result.stderr, /"method":"net.connect"/, describe(result));
    for (const secret of [secretA, secretB]) {
      assert.ok(!result.stdout.includes(secret) && !result.stderr.includes(secret), `a secret was printed\n${describe(result)}`);
    }
    // A hello the guest made itself shows its credentials redacted.
    for (const line of result.stderr.split('\n').filter((l) => l.includes('"secret"'))) {
      assert.match(line, /"secret":"<redacted>"/, line);
    }
  }
  assert.ok(!sidecarLog.includes(secretA) && !sidecarLog.includes(secretB), `the sidecar logged a secret:\n${sidecarLog}`);
});

test("a guest that knows the listener's path finds no secret and cannot attach to another VM", { timeout: 60000 }, async () => {
  const stolen = (result) => {
    const line = result.stdout.split('\n').find((l) => l.startsWith('harvest '));
    assert.ok(line, describe(result));
    const harvest = JSON.parse(line.slice('harvest '.length));
    return [secretA, secretB].filter((secret) => harvest.includes(secret));
  };
  // The route is real: unsandboxed, the sidecar's /proc/<pid>/environ (the environment
  // it was started with, secrets included) is readable, and VM b is taken over.
  const open = await runApp('steal_secrets.js', 'plain', { args: [socketPath, 'b'] });
  assert.strictEqual(open.code, 0, describe(open));
  assert.deepStrictEqual(stolen(open), [secretA, secretB], describe(open));
  assert.match(open.stdout, /^attached$/m, describe(open));
  // A sandboxed guest of VM a sees only its own processes, holds no secret itself, and
  // every hello it tries as VM b is refused.
  for (const lane of [laneA(), { ...laneA(), poll: true }]) {
    const guest = await runApp('steal_secrets.js', lane, { args: [socketPath, 'b'] });
    assert.strictEqual(guest.code, 0, describe(guest));
    assert.deepStrictEqual(stolen(guest), [], describe(guest));
    assert.match(guest.stdout, /^refused \d+$/m, describe(guest));
  }
});
