'use strict';
// `new tls.TLSSocket(null | undefined, options)` then `.connect(...)` over a guest socket.
//
// Given no socket, Node's TLSSocket makes its own native TCP (or Pipe) handle and its
// connect() is Node's own net.Socket's, which would connect that handle outside the
// sidecar (and is refused: native_net.js). So tls.TLSSocket is replaced by a constructor
// that, given no socket, hands Node's an unconnected guest socket instead: Node wraps it
// in a JSStreamSocket as it does any JS stream, and the TLSSocket's connect() connects the
// guest socket. The prototype is Node's (instanceof, subclasses and tls.js's patches
// hold); Node's own constructor stays what node:tls uses inside (tls.connect, tls.Server),
// which always pass a socket. `require('_tls_wrap').TLSSocket` is still Node's: given no
// socket, its connect() is refused.

const tls = require('tls');
const { markTransport } = require('./handle_shim');

const kGuest = Symbol('pushnet.tlsGuestSocket');

function install(GuestSocket, normalizeArgs) {
  const NodeTLSSocket = tls.TLSSocket;
  const proto = NodeTLSSocket.prototype;

  function TLSSocket(socket, options) {
    let guest = null;
    if (socket && GuestSocket.prototype.isPrototypeOf(socket)) markTransport(socket);
    if (!socket) {
      guest = new GuestSocket({ allowHalfOpen: Boolean(options && options.allowHalfOpen) });
      socket = guest;
      markTransport(guest);
    }
    let self = this;
    if (new.target) self = Reflect.construct(NodeTLSSocket, [socket, options], new.target);
    else NodeTLSSocket.call(this, socket, options);
    if (guest) self[kGuest] = guest;
    return self;
  }
  TLSSocket.prototype = proto;
  Object.setPrototypeOf(TLSSocket, Object.getPrototypeOf(NodeTLSSocket));
  Object.defineProperty(proto, 'constructor', { value: TLSSocket, writable: true, configurable: true, enumerable: false });
  tls.TLSSocket = TLSSocket;

  const connect = proto.connect;
  proto.connect = function (...args) {
    const guest = this[kGuest];
    if (!guest) return connect.apply(this, args);
    const [options, cb] = normalizeArgs(args);
    // Validates (and throws) synchronously, as net.Socket#connect does.
    guest.connect(options);
    if (cb) this.once('connect', cb);
    // Node's _init() made the TLSSocket follow the guest socket's 'connect'. A connect
    // error is the TLSSocket's own, as over a native handle: Node's wrapping reports
    // errors of the socket under it only once tls.connect has released control.
    this.connecting = true;
    guest.once('error', (err) => {
      if (!this._controlReleased && !this.destroyed) this.destroy(err);
    });
    return this;
  };
}

module.exports = { install };
