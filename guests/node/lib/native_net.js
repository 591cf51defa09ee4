'use strict';
// Closes the ways to a native socket that go past the patched exports of node:net:
// Node's own net.Socket and net.Server (still reachable through prototypes, e.g.
// `Object.getPrototypeOf(tls.TLSSocket.prototype).constructor`, and the only classes
// node:net has in a worker thread) and the deprecated process.binding() of the
// handle classes they are built on (tcp_wrap, udp_wrap, pipe_wrap, cares_wrap, ...).
// The sandbox `sidecar run` starts the program in is the boundary; this only makes sure
// the runtime never hands a program a socket outside the sidecar by accident.
//
// - connect() on Node's own net.Socket is refused: the error arrives as Node reports a
//   failed connect, an 'error' event then 'close'. Nothing the runtime or Node's own
//   modules do needs it: the event channel is a net.Socket over an fd (never connected),
//   a TLSSocket over a guest socket wraps it in a JSStreamSocket (never connected), and
//   tls.connect always gets a guest socket (tls.js).
// - listen() on Node's own net.Server is refused the same way (an 'error' event).
// - process.binding(name) throws for the bindings in `refused`. Node's own modules use
//   internalBinding(), which programs cannot reach, so they are unaffected.

const { nodeError } = require('./errors');

const CODE = 'ERR_PUSHNET_UNSUPPORTED';
const refused = new Map();
let bindingWrapped = false;

function refusal(message) {
  return nodeError(CODE, message);
}

// process.binding(name) throws `message` from now on.
function refuseBinding(name, message) {
  refused.set(name, message);
  if (bindingWrapped || typeof process.binding !== 'function') return;
  bindingWrapped = true;
  const binding = process.binding;
  process.binding = function (module) {
    const why = refused.get(String(module));
    if (why !== undefined) throw refusal(why);
    return binding.call(this, module);
  };
}

// `why` says what the program should use instead ({ socket, server, binding }).
function install(OriginalSocket, OriginalServer, why) {
  OriginalSocket.prototype.connect = function connect() {
    const err = refusal(why.socket);
    process.nextTick(() => this.destroy(err));
    return this;
  };
  OriginalServer.prototype.listen = function listen() {
    const err = refusal(why.server);
    process.nextTick(() => this.emit('error', err));
    return this;
  };
  for (const name of ['tcp_wrap', 'udp_wrap', 'pipe_wrap', 'cares_wrap']) {
    refuseBinding(name, `pushnet: process.binding('${name}') ${why.binding}`);
  }
}

module.exports = { install, refuseBinding, refusal, CODE };
