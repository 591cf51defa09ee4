'use strict';
// A hostile guest that knows the sidecar's listener path (argv[2]) and wants to attach
// to another VM (argv[3]). It harvests everything that could hold a secret: its own
// environment and argv, and the command line and environment of every process /proc
// shows. It prints all of it on one `harvest` line (the test looks for the real secrets
// there), then tries the harvested words most likely to be secrets as that VM's secret
// (all at once), from a child process
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

// Every word that could be a secret, the likeliest first: the values of variables named
// like a credential (…SECRET…, …TOKEN…, …KEY…, …PASS…), then every argument of a command
// line that follows a flag named so; at most 64 tries.
const likely = /SECRET|TOKEN|KEY|PASS/i;
const candidates = new Set();
for (const text of texts) {
  for (const entry of text.split(/\0|\n/)) {
    const eq = entry.indexOf('=');
    if (eq > 0 && likely.test(entry.slice(0, eq)) && entry.length > eq + 4) candidates.add(entry.slice(eq + 1));
  }
  const args = text.split('\0');
  args.forEach((arg, i) => {
    if (likely.test(arg) && args[i + 1] && args[i + 1].length >= 4) candidates.add(args[i + 1]);
  });
}
try {
  for (const [name, value] of Object.entries(process.env)) if (likely.test(name)) candidates.add(value);
} catch {}
const tries = [...candidates].slice(0, 64);

// The child: a plain Node (no guest runtime) with a native socket to the listener.
const child = `
const net = require('net');
const [path, vm, list] = process.argv.slice(1);
const candidates = JSON.parse(list);
const attempts = [{ version: 1, vm }, { version: 1, vm, secret: 'guess', bind: true }, { version: 1, event_channel_token: 'f'.repeat(64) }];
for (const secret of candidates) attempts.push({ version: 1, vm, secret });
let attached = 0;
let refused = 0;
let left = attempts.length;
function frame(header) {
  const json = Buffer.from(JSON.stringify({ type: 'call', id: 1, method: 'hello', params: header }));
  const head = Buffer.alloc(8);
  head.writeUInt32BE(4 + json.length, 0);
  head.writeUInt32BE(json.length, 4);
  return Buffer.concat([head, json]);
}
function done() {
  if (--left === 0) console.log(attached > 0 ? 'attached' : 'refused ' + refused);
}
// All at once: a refused hello is answered only after a delay.
for (const attempt of attempts) {
  const socket = net.connect(path);
  let got = Buffer.alloc(0);
  let counted = false;
  const count = (ok) => {
    if (counted) return;
    counted = true;
    if (ok) attached++;
    else refused++;
    socket.destroy();
    done();
  };
  socket.on('connect', () => socket.write(frame(attempt)));
  socket.on('data', (d) => {
    got = Buffer.concat([got, d]);
    if (got.length < 8 || got.length < 4 + got.readUInt32BE(0)) return;
    const reply = JSON.parse(got.subarray(8, 8 + got.readUInt32BE(4)).toString());
    count(!reply.error);
  });
  socket.on('error', () => count(false));
  socket.on('close', () => count(false));
}
`;
const out = execFileSync(process.execPath, ['-e', child, socketPath, vm, JSON.stringify(tries)], {
  encoding: 'utf8',
  env: {},
  timeout: 20000,
});
process.stdout.write(out);
