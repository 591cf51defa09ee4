'use strict';
// Run as a guest only: the in-process routes to a native socket that the runtime closes
// (lib/closed_routes.js) fail clearly, as Node reports failures (events, callbacks,
// promises: never a synchronous throw where Node calls back), and what is left of each
// module keeps working. With argument `allow-inspector` (PUSHNET_ALLOW_INSPECTOR=1 set
// by the test), inspector.open() works instead.
const assert = require('assert');
const dns = require('dns');
const tls = require('tls');
const { Worker } = require('worker_threads');

const CODE = 'ERR_PUSHNET_UNSUPPORTED';
const allowInspector = process.argv[2] === 'allow-inspector';

// Calls start(done) and checks that `done` is not called before start returns.
function later(start) {
  return new Promise((resolve, reject) => {
    let returned = false;
    start((...args) => (returned ? resolve(args) : reject(new Error('called back synchronously'))));
    returned = true;
  });
}

async function nodeSocket() {
  const NodeSocket = Object.getPrototypeOf(tls.TLSSocket.prototype).constructor;
  assert.strictEqual(NodeSocket, Object.getPrototypeOf(tls.TLSSocket));
  const socket = new NodeSocket();
  const closed = new Promise((resolve) => socket.once('close', resolve));
  const [err] = await later((done) => socket.on('error', done).connect(80, '127.0.0.1'));
  assert.strictEqual(err.code, CODE);
  assert.match(err.message, /Node's own net\.Socket.*use net\.connect/);
  await closed;
}

function bindings() {
  for (const name of ['tcp_wrap', 'udp_wrap', 'pipe_wrap', 'cares_wrap']) {
    assert.throws(() => process.binding(name), (e) => e.code === CODE && e.message.includes(`process.binding('${name}')`));
  }
  // The others are Node's as before.
  assert.strictEqual(typeof process.binding('util'), 'object');
}

async function resolvers() {
  const check = (err, syscall) => {
    assert.strictEqual(err.code, 'ENOTSUP');
    assert.strictEqual(err.syscall, syscall);
    assert.match(err.message, /use dns\.lookup/);
  };
  const resolver = new dns.Resolver();
  resolver.setServers(['127.0.0.1:53']);
  check((await later((done) => resolver.resolve4('example.com', done)))[0], 'queryA');
  check((await later((done) => dns.resolveMx('example.com', done)))[0], 'queryMx');
  check((await later((done) => dns.resolve('example.com', 'TXT', done)))[0], 'queryTxt');
  check((await later((done) => dns.reverse('127.0.0.1', done)))[0], 'getHostByAddr');
  check((await later((done) => dns.lookupService('127.0.0.1', 22, done)))[0], 'getnameinfo');
  await assert.rejects(new dns.promises.Resolver().resolve6('example.com'), (e) => (check(e, 'queryAaaa'), true));
  await assert.rejects(dns.promises.resolveSrv('example.com'), (e) => (check(e, 'querySrv'), true));
  await assert.rejects(dns.promises.lookupService('127.0.0.1', 22), (e) => (check(e, 'getnameinfo'), true));
  // dns.lookup is the sidecar's.
  assert.strictEqual((await dns.promises.lookup('localhost', { family: 4 })).address, '127.0.0.1');
}

async function inspector() {
  const { open, url, close } = require('inspector');
  if (allowInspector) {
    open(0, '127.0.0.1');
    assert.match(url(), /^ws:\/\/127\.0\.0\.1:\d+\//);
    close();
    return;
  }
  assert.throws(() => open(0, '127.0.0.1'), (e) => e.code === CODE && /PUSHNET_ALLOW_INSPECTOR=1/.test(e.message));
  assert.throws(() => require('inspector/promises').open(0), (e) => e.code === CODE);
  assert.throws(() => process.binding('inspector'), (e) => e.code === CODE);
  assert.strictEqual(url(), undefined);
}

// In a worker: each network operation fails as Node reports it; the rest works.
const WORKER = `
const { parentPort, Worker, workerData } = require('worker_threads');
const results = {};
let pending = 0;
function expect(name, start) {
  pending += 1;
  let returned = false;
  start((err) => {
    results[name] = returned ? (err && err.code) + ': ' + (err && err.message) : 'synchronous';
    if (--pending === 0) finish();
  });
  returned = true;
}
function finish() {
  try { process.binding('tcp_wrap'); results.binding = 'allowed'; } catch (e) { results.binding = e.code; }
  if (workerData.depth === 0) {
    const nested = new Worker(__filename.endsWith('[worker eval]') ? workerData.source : __filename, { eval: true, workerData: { ...workerData, depth: 1 } });
    nested.on('message', (m) => { results.nested = m; parentPort.postMessage(results); });
    nested.on('error', (e) => { results.nested = String(e); parentPort.postMessage(results); });
  } else parentPort.postMessage(results);
}
const net = require('net');
expect('connect', (done) => net.connect(80, '127.0.0.1').on('error', done));
expect('listen', (done) => net.createServer().on('error', done).listen(0));
expect('tls', (done) => require('tls').connect(443, '127.0.0.1').on('error', done));
const udp = require('dgram').createSocket('udp4');
expect('bind', (done) => udp.once('error', done).bind(0));
expect('send', (done) => udp.send('x', 9, '127.0.0.1', done));
expect('lookup', (done) => require('dns').lookup('localhost', done));
expect('lookupPromise', (done) => require('dns').promises.lookup('localhost').then(() => done(null), done));
expect('resolver', (done) => require('dns').resolve4('example.com', done));
results.sum = workerData.numbers.reduce((a, b) => a + b, 0);
`;

function runWorker(options) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER, { eval: true, workerData: { depth: 0, numbers: [1, 2, 3], source: WORKER }, ...options });
    assert.ok(worker instanceof Worker);
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

function checkWorker(results) {
  assert.strictEqual(results.sum, 6);
  for (const name of ['connect', 'listen', 'tls', 'bind', 'send', 'lookup', 'lookupPromise']) {
    assert.match(results[name], /^ERR_PUSHNET_UNSUPPORTED: pushnet: networking is not available in worker threads/, `${name}: ${results[name]}`);
  }
  assert.match(results.resolver, /^ENOTSUP: /);
  assert.strictEqual(results.binding, CODE);
}

async function workers() {
  assert.strictEqual(Worker.prototype.constructor, Worker);
  const first = await runWorker({});
  checkWorker(first);
  checkWorker(first.nested);
  // A worker started without the environment (so without NODE_OPTIONS) or with its own
  // execArgv still loads the runtime.
  checkWorker(await runWorker({ env: {} }));
  checkWorker(await runWorker({ execArgv: [] }));
}

(async () => {
  assert.ok(process[Symbol.for('pushnet')], 'run this app as a guest');
  await nodeSocket();
  bindings();
  await resolvers();
  await inspector();
  await workers();
  console.log('closed routes ok');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
