'use strict';
// `sidecar run` itself: exit codes, signals, what the child's environment holds.

const { test } = require('node:test');
const net = require('net');
const assert = require('assert');
const { SIDECAR, NODE, APPS, run, runApp, startApp, describe, assertRan } = require('./helpers');

test('run exits with the guest exit code', { timeout: 30000 }, async () => {
  const result = await run([SIDECAR, 'run', '--vm', 't', '--', NODE, '-e', 'process.exitCode = 7']);
  assert.strictEqual(result.code, 7, describe(result));
});

test('a guest killed by signal N makes run exit 128 + N', { timeout: 30000 }, async () => {
  const result = await run([SIDECAR, 'run', '--vm', 't', '--', NODE, '-e', "process.kill(process.pid, 'SIGKILL')"]);
  assert.strictEqual(result.code, 128 + 9, describe(result));
});

test('SIGTERM to run reaches the guest', { timeout: 30000 }, async () => {
  const app = startApp('wait_for_signal.js', 'push', { ready: /ready/ });
  const { match, child, result } = await app.ready;
  assert.ok(match, result && describe(result));
  child.kill('SIGTERM');
  const ended = await app.exited;
  assert.strictEqual(ended.code, 128 + 15, describe(ended));
});

test('the secret stays out of the guest environment and its children', { timeout: 30000 }, async () => {
  assertRan(await runApp('child_env.js', 'push'), 'push', { output: /child env ok/ });
});

test('a program that uses no network runs with the preload and exits', { timeout: 30000 }, async () => {
  const result = await run([SIDECAR, 'run', '--vm', 't', '--', NODE, '-e', "console.log(typeof require('net').Socket)"]);
  assert.strictEqual(result.code, 0, describe(result));
  assert.strictEqual(result.stdout.trim(), 'function');
});

test('policy: a destination outside the VM is EACCES unless allowed, then a host socket', { timeout: 30000 }, async () => {
  const denied = await runApp('connect_code.js', 'push', { args: ['192.0.2.1', '80'] });
  assert.strictEqual(denied.code, 0, describe(denied));
  assert.match(denied.stdout, /error EACCES/);

  const host = net.createServer((socket) => socket.end('from the host\n'));
  await new Promise((resolve) => host.listen(0, '127.0.0.1', resolve));
  const { port } = host.address();
  try {
    const notAllowed = await runApp('connect_code.js', 'push', { args: ['127.0.0.1', String(port)] });
    assert.match(notAllowed.stdout, /error ECONNREFUSED/, describe(notAllowed));
    const allowed = await run([SIDECAR, 'run', '--vm', 't', '--allow', `127.0.0.1:${port}`, '--', NODE, `${APPS}/connect_code.js`, '127.0.0.1', String(port)]);
    assert.match(allowed.stdout, /connected from the host/, describe(allowed));
  } finally {
    host.close();
  }
});
