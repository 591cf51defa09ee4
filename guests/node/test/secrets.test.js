'use strict';
// No secret is printed or handed on: PUSHNET_DEBUG=1 shows every frame with its
// credentials (a VM's secret, an event channel token) redacted while the frames written
// keep them; `sidecar run --vm NAME=env:VAR` takes the secret from its environment and
// no guest inherits VAR; a literal secret on run's command line is refused.

const { test } = require('node:test');
const assert = require('assert');
const crypto = require('crypto');
const path = require('path');
const { spawn } = require('child_process');
const { SIDECAR, NODE, APPS, run, describe } = require('./helpers');
const { encodeFrame, FrameDecoder } = require('../lib/wire');

// Unguessable (so finding it cannot be a coincidence), with characters JSON escapes.
const freshSecret = () => `s3cr"et\\${crypto.randomBytes(12).toString('hex')}`;

test('PUSHNET_DEBUG redacts credentials; the frames written keep them', { timeout: 30000 }, async () => {
  const secret = freshSecret();
  const token = `token-${secret}`;
  // fd 3 of the app is one end of a socket pair; this test answers its hello.
  const child = spawn(NODE, [path.join(APPS, 'debug_redaction.js'), secret], {
    env: { ...process.env, PUSHNET_DEBUG: '1' },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  const frames = [];
  const decoder = new FrameDecoder();
  child.stdio[3].on('data', (chunk) => {
    decoder.push(chunk);
    let frame;
    while ((frame = decoder.next()) !== null) {
      frames.push(frame);
      if (frame.header.method === 'hello') {
        const reply = { type: 'reply', id: frame.header.id, result: { version: 1, session: 7, capabilities: [], event_channel_token: token, max_frame: 1 << 20 } };
        for (const part of encodeFrame(reply)) child.stdio[3].write(part);
      }
    }
  });
  child.stdio[3].on('error', () => {});
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (t) => (stdout += t));
  child.stderr.setEncoding('utf8').on('data', (t) => (stderr += t));
  const code = await new Promise((resolve) => child.on('close', resolve));
  const shown = `exit code ${code}\n--- stdout\n${stdout}--- stderr\n${stderr}`;
  assert.strictEqual(code, 0, shown);
  assert.match(stdout, /debug redaction ok: session 7/, shown);

  // What went to the "sidecar" is unchanged: the hello carries the secret and the token.
  const hello = frames.find((f) => f.header.method === 'hello');
  assert.ok(hello, 'no hello was written');
  assert.strictEqual(hello.header.params.secret, secret);
  assert.strictEqual(hello.header.params.event_channel_token, token);
  assert.ok(frames.some((f) => f.header.method === 'net.write' && f.payload.toString() === 'some bytes'));

  // What was printed: every frame, each credential redacted, the secret nowhere (neither
  // as written nor JSON-escaped).
  assert.match(stderr, /pushnet: fd 3 → .*"method":"hello".*"secret":"<redacted>".*"event_channel_token":"<redacted>"/, shown);
  assert.match(stderr, /pushnet: fd 3 ← .*"session":7.*"event_channel_token":"<redacted>"/, shown);
  assert.match(stderr, /pushnet: fd 3 → .*"method":"net.write"/, shown);
  const escaped = JSON.stringify(secret).slice(1, -1);
  const hex = secret.slice(-24);
  for (const text of [stdout, stderr]) {
    for (const needle of [secret, escaped, hex]) assert.ok(!text.includes(needle), `the secret was printed\n${shown}`);
  }
});

test('run --vm NAME=env:VAR: the guest runs, its debug output and environment hold no secret', { timeout: 30000 }, async () => {
  const secret = freshSecret();
  const hex = secret.slice(-24);
  const script = `
    const net = require('net');
    const server = net.createServer((s) => s.end('hi')).listen(0, () => {
      net.connect(server.address().port, '127.0.0.1').on('data', (d) => {
        const vars = Object.keys(process.env).filter((k) => k === 'PUSHNET_TEST_RUN_SECRET' || process.env[k].includes(${JSON.stringify(hex)}));
        console.log('got', String(d), 'vars', JSON.stringify(vars));
        server.close();
      });
    });`;
  const result = await run([SIDECAR, 'run', '--vm', 't=env:PUSHNET_TEST_RUN_SECRET', '--', NODE, '-e', script], {
    env: { PUSHNET_TEST_RUN_SECRET: secret, PUSHNET_DEBUG: '1', RUST_LOG: 'debug' },
  });
  assert.strictEqual(result.code, 0, describe(result));
  assert.match(result.stdout, /got hi vars \[\]/, describe(result));
  assert.match(result.stderr, /pushnet: fd \d+ → \{"type":"call"/, describe(result));
  for (const text of [result.stdout, result.stderr]) assert.ok(!text.includes(hex), `the secret was printed\n${describe(result)}`);
});

test('run refuses a literal secret on its command line, saying why and what to give', { timeout: 30000 }, async () => {
  const secret = freshSecret();
  const result = await run([SIDECAR, 'run', '--vm', `t=${secret}`, '--', NODE, '-e', '0']);
  assert.notStrictEqual(result.code, 0, describe(result));
  assert.match(result.stderr, /cmdline/, describe(result));
  assert.match(result.stderr, /@FILE/, describe(result));
  assert.match(result.stderr, /env:VAR/, describe(result));
  assert.ok(!result.stderr.includes(secret.slice(-24)), 'the refusal repeats the secret');
});
