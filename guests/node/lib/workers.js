'use strict';
// worker_threads in a guest. A worker has no sidecar session (the session's fds belong
// to the main thread, whose calls are synchronous), and its node:net, node:dgram and
// node:dns are Node's own, which would open native sockets outside the sidecar. So a
// worker of a guest has no network: its connects, listens, binds, sends and lookups fail
// with ERR_PUSHNET_UNSUPPORTED ('pushnet: networking is not available in worker
// threads'), reported as Node reports a failed operation (an 'error' event, the
// callback's error, a rejected promise); the routes closed in the main thread
// (process.binding, dns.Resolver, inspector.open) are closed there too.
//
// - The main thread marks its workers with worker_threads.setEnvironmentData (every
//   Worker gets a copy of its creator's, nested workers included): not an environment
//   variable, so child processes do not see it (they have no session either; under the
//   sandbox of `sidecar run` they have no network).
// - The preload must run in the worker to see the mark. Node runs it there from
//   NODE_OPTIONS in the worker's environment, which a program may replace (`env: {}`):
//   Worker is wrapped so that every worker's NODE_OPTIONS (or its explicit execArgv)
//   requires the preload. Node's own Worker is not reachable from the wrapper
//   (Worker.prototype.constructor is the wrapper).

const path = require('path');
const workerThreads = require('worker_threads');
const { nodeError } = require('./errors');
const nativeNet = require('./native_net');

const MARK = 'pushnet.guest-worker';
const PRELOAD = path.join(__dirname, '..', 'preload.cjs');
const WHY = 'pushnet: networking is not available in worker threads (a worker has no sidecar session; use the network from the main thread)';

function isGuestWorker() {
  return !workerThreads.isMainThread && workerThreads.getEnvironmentData(MARK) === true;
}

function withPreload(nodeOptions) {
  const text = nodeOptions || '';
  if (text.includes(PRELOAD)) return text;
  // First, so that the runtime is in place before any other preload of the program's.
  return `--require ${JSON.stringify(PRELOAD)} ${text}`.trim();
}

// Worker, wrapped: the same class (prototype, statics, instanceof), whose workers
// always load the preload.
function wrapWorker() {
  const NodeWorker = workerThreads.Worker;
  function Worker(filename, options) {
    if (!new.target) throw nodeError('ERR_CONSTRUCT_CALL_REQUIRED', "Class constructor Worker cannot be invoked without 'new'", TypeError);
    const opts = options !== null && typeof options === 'object' ? { ...options } : {};
    if (Array.isArray(opts.execArgv)) {
      opts.execArgv = ['--require', PRELOAD, ...opts.execArgv];
    } else if (opts.env === workerThreads.SHARE_ENV) {
      // The worker reads the main thread's own environment: its NODE_OPTIONS decides.
      // If that no longer requires the preload, the worker gets it on its command line
      // (Node refuses, ERR_WORKER_INVALID_EXEC_ARGV, if the main thread's execArgv has
      // flags a worker may not take).
      if (!(process.env.NODE_OPTIONS || '').includes(PRELOAD)) opts.execArgv = ['--require', PRELOAD, ...process.execArgv];
    } else if (opts.env === undefined || (opts.env !== null && typeof opts.env === 'object')) {
      // Node copies process.env when `env` is not given; so does this.
      const env = { ...(opts.env === undefined ? process.env : opts.env) };
      env.NODE_OPTIONS = withPreload(env.NODE_OPTIONS);
      opts.env = env;
    }
    return Reflect.construct(NodeWorker, [filename, opts], new.target);
  }
  Worker.prototype = NodeWorker.prototype;
  Object.setPrototypeOf(Worker, Object.getPrototypeOf(NodeWorker));
  Object.defineProperty(NodeWorker.prototype, 'constructor', { value: Worker, writable: true, configurable: true, enumerable: false });
  workerThreads.Worker = Worker;
}

// In the main thread of a guest.
function install() {
  workerThreads.setEnvironmentData(MARK, true);
  wrapWorker();
}

// In a worker of a guest: no network.
function installInWorker() {
  const net = require('net');
  const dgram = require('dgram');
  const dns = require('dns');
  nativeNet.install(net.Socket, net.Server, { socket: WHY, server: WHY, binding: `is not available: ${WHY}` });
  const refusal = () => nodeError(nativeNet.CODE, WHY);

  const udp = dgram.Socket.prototype;
  for (const name of ['bind', 'connect']) {
    udp[name] = function () {
      const err = refusal();
      process.nextTick(() => this.emit('error', err));
      return this;
    };
  }
  udp.send = function (...args) {
    const err = refusal();
    const cb = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : null;
    process.nextTick(() => (cb ? cb(err) : this.emit('error', err)));
  };

  dns.lookup = function lookup(hostname, options, callback) {
    const cb = typeof options === 'function' ? options : callback;
    if (typeof cb !== 'function') throw nodeError('ERR_INVALID_ARG_TYPE', 'The "callback" argument must be of type function.', TypeError);
    process.nextTick(cb, refusal());
    return {};
  };
  dns.promises.lookup = () => Promise.reject(refusal());
  require('./dns_resolver').install();
  require('./inspector').install();
  wrapWorker();
  require('module').syncBuiltinESMExports();
}

module.exports = { install, installInWorker, isGuestWorker };
