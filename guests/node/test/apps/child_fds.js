'use strict';
// A guest's child processes do not get its sidecar channels (fds 3 and 4 under
// `sidecar run`, 4 in push mode only), however they are started (spawn, exec,
// execFileSync, execSync, spawnSync, fork): their fds 3 and 4 are never sockets. Node
// itself sees to it: at startup it marks the fds it inherited close-on-exec. Stdio
// entries the program gives at those indexes are the child's, as under plain Node (a
// pipe at index 3, fork's IPC channel at index 3).
//
// Under plain Node there is no channel: fds 3 and 4 of a child are its own (libuv's), or
// what the program put there, and never a socket unless the program put one there.

const assert = require('assert');
const fs = require('fs');
const { once } = require('events');
const { spawn, exec, execFileSync, execSync, spawnSync, fork } = require('child_process');

// Runs in the children: what fds 3 and 4 are.
function probe() {
  const fs = require('fs');
  const out = {};
  for (const fd of [3, 4]) {
    try {
      const stat = fs.fstatSync(fd);
      out[fd] = { socket: stat.isSocket() };
    } catch (e) {
      out[fd] = { error: e.code };
    }
  }
  return out;
}

// fork()'s child (this file with argument `forked`): answers the parent's message over
// the IPC channel (fd 3).
function forkedChild() {
  process.once('message', (message) => {
    process.send({ reply: message, fds: probe() }, () => process.disconnect());
  });
}

const PROBE = `process.stdout.write(JSON.stringify((${probe})()))`;
// Writes through the fd 3 its parent gave it, then probes.
const PIPE_PROBE = `require('fs').writeSync(3, 'through fd 3'); ${PROBE}`;

const api = process[Symbol.for('pushnet')];
const CHANNELS = !api ? [] : api.mode === 'push' ? [3, 4] : [3];

// out: a child's probe(). keep: fds the program gave the child itself (not checked).
function check(where, out, { keep = [] } = {}) {
  for (const fd of [3, 4]) {
    if (keep.includes(fd)) continue;
    const seen = out[fd];
    assert.ok(seen && !seen.socket, `${where}: the child's fd ${fd} is a socket: ${JSON.stringify(out)}`);
  }
}

async function collect(stream) {
  stream.setEncoding('utf8');
  let text = '';
  for await (const chunk of stream) text += chunk;
  return text;
}

async function run(child) {
  const [stdout, [code]] = await Promise.all([collect(child.stdout), once(child, 'close')]);
  assert.strictEqual(code, 0, `the child exited with ${code}`);
  return JSON.parse(stdout);
}

async function main() {
  // The children's checks look at the right fds: here they are the sidecar's.
  for (const fd of CHANNELS) assert.ok(fs.fstatSync(fd).isSocket(), `the guest's fd ${fd} is not a socket`);

  const spawned = spawn(process.execPath, ['-e', PROBE], { stdio: ['ignore', 'pipe', 'inherit'] });
  assert.strictEqual(spawned.stdio.length, 3);
  check('spawn', await run(spawned));

  const execEnv = { ...process.env, PROBE_NODE: process.execPath, PROBE_CODE: PROBE };
  const execOut = await new Promise((resolve, reject) => {
    exec('"$PROBE_NODE" -e "$PROBE_CODE"', { env: execEnv }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  check('exec', JSON.parse(execOut));

  check('execFileSync', JSON.parse(execFileSync(process.execPath, ['-e', PROBE], { encoding: 'utf8' })));
  check('execSync', JSON.parse(execSync('"$PROBE_NODE" -e "$PROBE_CODE"', { env: execEnv, encoding: 'utf8' })));
  const synced = spawnSync(process.execPath, ['-e', PROBE], { encoding: 'utf8' });
  assert.strictEqual(synced.status, 0, synced.stderr);
  assert.strictEqual(synced.output.length, 3);
  check('spawnSync', JSON.parse(synced.stdout));

  // fork() puts its IPC channel at index 3: the child keeps it, and does not get fd 4.
  const forked = fork(__filename, ['forked'], { execArgv: [] });
  const replied = once(forked, 'message');
  forked.send('ping');
  const [answer] = await replied;
  assert.strictEqual(answer.reply, 'ping');
  assert.ok(answer.fds[3].socket, `fork: the IPC channel on fd 3 is not a socket: ${JSON.stringify(answer.fds)}`);
  check('fork', answer.fds, { keep: [3] });
  const [forkCode] = await once(forked, 'exit');
  assert.strictEqual(forkCode, 0);

  // A pipe the program asks for at index 3 is the child's fd 3, as under plain Node.
  const piped = spawn(process.execPath, ['-e', PIPE_PROBE], { stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
  assert.strictEqual(piped.stdio.length, 4);
  const [through, pipedOut] = await Promise.all([collect(piped.stdio[3]), run(piped)]);
  assert.strictEqual(through, 'through fd 3');
  check('stdio pipe at 3', pipedOut, { keep: [3] });

  console.log('child fds ok');
}

if (process.argv[2] === 'forked') {
  forkedChild();
} else {
  main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
