'use strict';
// One Node lane of a seed row of the differential bench, driven by diffbench over
// stdin/stdout. The same file runs in every Node lane, unmodified:
//
//   node-host        node lane.js ROW
//   node-guest-poll  sidecar run --vm bench --poll -- node lane.js ROW
//   node-guest-push  sidecar run --vm bench -- node lane.js ROW
//
// It sets the row up (server and client in this one process, as a Node app would), prints
// `ready`, then for each line `N` on stdin runs N operations one after another and prints
// one line with their latencies in nanoseconds (measured here, with the monotonic clock,
// so the stdin/stdout protocol costs nothing). Stdin's end closes everything and exits.

const dgram = require('node:dgram');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const SMALL = 64;
const BIG = 64 * 1024;
/// `unix_accept`: the pause between one accept and the next connect (as the Rust lanes).
const ACCEPT_GAP_MS = 1;

const now = () => process.hrtime.bigint();
const once = (emitter, event) => new Promise((resolve, reject) => {
  emitter.once(event, resolve);
  if (event !== 'error') emitter.once('error', reject);
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// A Unix socket path: a real one on the host; inside a VM any path is virtual, and the
/// same string works.
function socketPath(tag) {
  return path.join(os.tmpdir(), `pushnet-node-${tag}-${process.pid}.sock`);
}

async function listen(server, ...args) {
  server.listen(...args);
  await once(server, 'listening');
  return server;
}

async function udpEcho() {
  const server = dgram.createSocket('udp4');
  server.on('message', (msg, rinfo) => server.send(msg, rinfo.port, rinfo.address));
  server.bind(0, '127.0.0.1');
  await once(server, 'listening');
  const client = dgram.createSocket('udp4');
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  client.connect(server.address().port, '127.0.0.1');
  await once(client, 'connect');
  const message = Buffer.alloc(SMALL, 7);
  let done = null;
  client.on('message', (msg) => {
    if (msg.length !== SMALL) throw new Error(`echoed ${msg.length} bytes`);
    done();
  });
  return {
    op: () => new Promise((resolve) => {
      const start = now();
      done = () => resolve(now() - start);
      client.send(message);
    }),
    close: () => { client.close(); server.close(); },
  };
}

async function streamEcho(size, where) {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.pipe(socket);
  });
  await listen(server, ...where);
  const client = where.length === 1
    ? net.connect(where[0])
    : net.connect(server.address().port, '127.0.0.1');
  await once(client, 'connect');
  client.setNoDelay(true);
  const message = Buffer.alloc(size, 7);
  let missing = 0;
  let done = null;
  client.on('data', (chunk) => {
    missing -= chunk.length;
    if (missing === 0) done();
    if (missing < 0) throw new Error('more bytes echoed than written');
  });
  return {
    op: () => new Promise((resolve) => {
      const start = now();
      missing = size;
      done = () => resolve(now() - start);
      client.write(message);
    }),
    close: () => { client.destroy(); server.close(); },
  };
}

async function unixAccept() {
  const where = socketPath('accept');
  let accepted = null;
  const server = net.createServer((socket) => {
    const stamp = now();
    socket.destroy();
    accepted(stamp);
  });
  await listen(server, where);
  return {
    // Measured from the client's connect to the server's accept.
    op: async () => {
      await sleep(ACCEPT_GAP_MS);
      const stamped = new Promise((resolve) => { accepted = resolve; });
      const start = now();
      const client = net.connect(where);
      client.on('error', () => {}); // the server's destroy may race the client's end
      const stamp = await stamped;
      client.destroy();
      return stamp - start;
    },
    close: () => server.close(),
  };
}

async function httpGet() {
  const body = Buffer.from('hello from node\n');
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(body);
  });
  server.keepAliveTimeout = 0; // the client decides when the connection ends
  await listen(server, 0, '127.0.0.1');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const port = server.address().port;
  return {
    op: () => new Promise((resolve, reject) => {
      const start = now();
      http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        let got = 0;
        res.on('data', (chunk) => { got += chunk.length; });
        res.on('end', () => {
          if (got !== body.length) reject(new Error(`body of ${got} bytes`));
          else resolve(now() - start);
        });
      }).on('error', reject);
    }),
    close: () => { agent.destroy(); server.close(); },
  };
}

const ROWS = {
  udp_echo_small: udpEcho,
  unix_echo_small: () => streamEcho(SMALL, [socketPath('echo')]),
  tcp_echo_64k: () => streamEcho(BIG, [0, '127.0.0.1']),
  unix_accept: unixAccept,
  http_loopback_get: httpGet,
};

async function main() {
  const row = process.argv[2];
  const setup = ROWS[row];
  if (!setup) {
    process.stderr.write(`unknown row ${row}; rows: ${Object.keys(ROWS).join(', ')}\n`);
    process.exit(2);
  }
  const lane = await setup();
  process.stdout.write('ready\n');
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const n = Number.parseInt(line, 10);
    if (!(n > 0)) throw new Error(`expected an operation count, got ${JSON.stringify(line)}`);
    const latencies = [];
    for (let i = 0; i < n; i++) latencies.push(await lane.op());
    process.stdout.write(`${latencies.join(' ')}\n`);
  }
  lane.close();
}

main().catch((e) => {
  process.stderr.write(`lane.js: ${e.stack || e}\n`);
  process.exit(1);
});
