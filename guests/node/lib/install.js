'use strict';
// Attaches to the sidecar and patches node:net, node:dgram and node:dns so unmodified
// programs use sidecar sockets. Runs from the preload, before the program's own code,
// so modules that capture these exports when they load (node:http's Agent takes
// net.createConnection, http.Server inherits net.Server.prototype) capture ours; in
// Node 20 none of them is loaded yet when a --require preload runs. ESM named imports
// see the patched functions through syncBuiltinESMExports(). node:tls is the exception:
// it is loaded first, on purpose, so that its TLSSocket keeps Node's own net.Socket
// (lib/tls.js then points tls.Server and tls.connect at the guest's).

const net = require('net');
const dgram = require('dgram');
const dns = require('dns');
const { Session } = require('./session');
const { setSession } = require('./handle');

function readEnv(env) {
  const fd = Number(env.PUSHNET_FD);
  const mode = env.PUSHNET_MODE || 'push';
  if (!Number.isInteger(fd) || fd < 0) throw new Error(`pushnet: PUSHNET_FD=${env.PUSHNET_FD} is not an fd`);
  if (mode !== 'push' && mode !== 'poll') throw new Error(`pushnet: PUSHNET_MODE=${mode}: expected push or poll`);
  const eventFd = Number(env.PUSHNET_EVENT_FD);
  if (mode === 'push' && (!Number.isInteger(eventFd) || eventFd < 0)) {
    throw new Error('pushnet: push mode needs PUSHNET_EVENT_FD (the event channel)');
  }
  // Without PUSHNET_SECRET the stream on PUSHNET_FD is already attached to its VM (as
  // `sidecar run` hands it over); with it, the runtime attaches itself (an embedder that
  // starts Node on a stream of its own).
  if (env.PUSHNET_SECRET !== undefined && !env.PUSHNET_VM) throw new Error('pushnet: PUSHNET_SECRET needs PUSHNET_VM');
  return { fd, eventFd, mode, vm: env.PUSHNET_VM, secret: env.PUSHNET_SECRET };
}

// The variables are removed from process.env once read: a child process must not attach
// to this guest's session (nor learn its secret); the preload is a no-op there.
const VARIABLES = ['PUSHNET_FD', 'PUSHNET_EVENT_FD', 'PUSHNET_VM', 'PUSHNET_SECRET', 'PUSHNET_MODE'];

function install() {
  const env = readEnv(process.env);
  for (const name of VARIABLES) delete process.env[name];

  const originals = {
    Socket: net.Socket,
    Server: net.Server,
    normalizeArgs: net._normalizeArgs,
    // Node's own listen(): the guest net.Server uses it (net_listen.js); taken before
    // native_net.js refuses it on Node's own net.Server.
    listen: net.Server.prototype.listen,
  };
  if (typeof originals.normalizeArgs !== 'function') throw new Error('pushnet: this Node has no net._normalizeArgs');
  // node:tls captures net.Socket when it loads: it must see the original (see tls.js).
  require('tls');
  const netSocket = require('./net_socket');
  netSocket.install(originals);
  const session = new Session(env, originals);
  setSession(session);
  // For tools and tests (not for programs): the mode, the session's stats (a sync
  // call), and how many pushed events were not numbered previous + 1 (must stay 0).
  Object.defineProperty(process, Symbol.for('pushnet'), {
    value: Object.freeze({ mode: env.mode, stats: () => session.call('stats', {}).result, seqGaps: () => session.seqGaps }),
  });

  const { Server, createServer } = require('./net_server');
  require('./net_listen').install(Server, originals.listen);
  const guestDgram = require('./dgram');
  const guestDns = require('./dns');

  const { Socket } = netSocket;
  function connect(...args) {
    const normalized = netSocket.normalize(args);
    const [options] = normalized;
    const socket = new Socket(options);
    if (options.timeout) socket.setTimeout(options.timeout);
    return socket.connect(normalized);
  }
  Object.assign(net, { Socket, Stream: Socket, Server, createServer, connect, createConnection: connect });
  Object.assign(dgram, { Socket: guestDgram.Socket, createSocket: guestDgram.createSocket });
  require('./tls').install(originals, { Socket, Server });
  require('./closed_routes').install(originals, { Socket });
  dns.lookup = guestDns.lookup;
  dns.promises.lookup = guestDns.lookupPromise;
  require('module').syncBuiltinESMExports();
}

module.exports = { install };
