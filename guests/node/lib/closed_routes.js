'use strict';
// The routes to the network that do not go through the patched exports of node:net,
// node:dgram, node:dns and node:tls, closed in a guest. The sandbox
// `sidecar run` starts the program in is the boundary; the runtime still must not hand
// a program a native socket by accident. Each route is one module:
//
// - tls_socket.js: `new tls.TLSSocket(null)` then connect() goes through the sidecar;
// - native_net.js: Node's own net.Socket#connect / net.Server#listen (reachable through
//   prototypes) and process.binding('tcp_wrap' | 'udp_wrap' | 'pipe_wrap' | 'cares_wrap')
//   are refused (ERR_PUSHNET_UNSUPPORTED);
// - dns_resolver.js: dns.Resolver, dns.resolve*(), dns.reverse(), dns.lookupService()
//   fail with ENOTSUP (use dns.lookup);
// - inspector.js: inspector.open() throws unless PUSHNET_ALLOW_INSPECTOR=1;
// - workers.js: worker threads have no network (the same refusals, with their reason).
//
// Not closed here (the sandbox is what stops them): process.dlopen of native code, and
// child processes (they run as plain programs; in the sandbox they have no network).

const nativeNet = require('./native_net');

const USE_GUEST = 'would open a native socket outside the sidecar';

// In the main thread of a guest, once node:net and node:tls are patched.
function install(originals, guest) {
  nativeNet.install(originals.Socket, originals.Server, {
    socket: `pushnet: connect() on Node's own net.Socket class (reached past the runtime's net.Socket: through a prototype, or a require('_tls_wrap').TLSSocket made without a socket) ${USE_GUEST}; use net.connect(), new net.Socket() or tls.connect()`,
    server: `pushnet: listen() on Node's own net.Server (reached past the runtime's net.Server) ${USE_GUEST}; use net.createServer()`,
    binding: `${USE_GUEST} (a deprecated API); use node:net, node:dgram and dns.lookup`,
  });
  require('./tls_socket').install(guest.Socket, originals.normalizeArgs);
  require('./dns_resolver').install();
  require('./inspector').install();
  require('./workers').install();
}

module.exports = { install };
