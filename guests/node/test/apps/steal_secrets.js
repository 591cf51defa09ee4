'use strict';
// A hostile guest that knows the sidecar's listener path (argv[2]) and wants to attach
// to another VM (argv[3]). It harvests everything that could hold a secret: its own
// environment and argv, and the command line and environment of every process /proc
// shows. It prints all of it on one `harvest` line (the test looks for the real secrets
// there), then tries every harvested word as that VM's secret, from a child process
// with a native Unix socket (a Unix socket path is reachable from any network
// namespace), plus a hello without a secret, a `bind`, and a made-up event channel
// token. Prints `attached` if any hello succeeded, else `refused N`.

const fs = require('fs');
const { execFileSync } = require('child_process');

const [, , socketPath, vm] = process.argv;

function readable(file) {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch {
    return '';
  }
}

const texts = [JSON.stringify(process.env), process.argv.join(' ')];
for (const entry of fs.readdirSync('/proc')) {
  if (!/^\d+$/.test(entry)) continue;
  texts.push(readable(`/proc/${entry}/cmdline`), readable(`/proc/${entry}/environ`));
}
const harvest = texts.join('\n');
console.log(`harvest ${JSON.stringify(harvest)}`);

// Every word that could be a secret: the values of NAME=VALUE pairs and every argument.
const words = new Set();
for (const text of texts) {
  for (const part of text.split(/[\0\s"=,:{}]+/)) if (part.length >= 4) words.add(part);
}
const candidates = [...words].slice(0, 400);

// The child: a plain Node (no guest runtime) with a native socket to the listener.
const child = `
const net = require('net');
const [path, vm, list] = process.argv.slice(1);
const candidates = JSON.parse(list);
const attempts = [{ version: 1, vm }, { version: 1, vm, secret: 'guess', bind: true }, { version: 1, event_channel_token: 'f'.repeat(64) }];
for (const secret of candidates) attempts.push({ version: 1, vm, secret });
let attached = 0;
let refused = 0;
function frame(header) {
  const json = Buffer.from(JSON.stringify({ type: 'call', id: 1, method: 'hello', params: header }));
  const head = Buffer.alloc(8);
  head.writeUInt32BE(4 + json.length, 0);
  head.writeUInt32BE(json.length, 4);
  return Buffer.concat([head, json]);
}
function next(i) {
  if (i === attempts.length) {
    console.log(attached > 0 ? 'attached' : 'refused ' + refused);
    return;
  }
  const socket = net.connect(path);
  let got = Buffer.alloc(0);
  socket.on('connect', () => socket.write(frame(attempts[i])));
  socket.on('data', (d) => {
    got = Buffer.concat([got, d]);
    if (got.length < 8 || got.length < 4 + got.readUInt32BE(0)) return;
    const reply = JSON.parse(got.subarray(8, 8 + got.readUInt32BE(4)).toString());
    if (reply.error) refused++;
    else attached++;
    socket.destroy();
    next(i + 1);
  });
  socket.on('error', () => { refused++; next(i + 1); });
}
next(0);
`;
const out = execFileSync(process.execPath, ['-e', child, socketPath, vm, JSON.stringify(candidates)], {
  encoding: 'utf8',
  env: {},
  timeout: 20000,
});
process.stdout.write(out);
