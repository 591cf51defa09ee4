'use strict';
// node:tls and node:https over guest sockets.
//
// Node's TLSSocket is a net.Socket over a native TLSWrap handle. Over a socket without a
// native handle (ours: `_handle` is null) it puts a JSStreamSocket in between, a
// net.Socket over a JSStream handle that reads and writes the JS stream: the TLS bytes
// then travel on the guest socket, and only the cleartext side is Node's own. So:
//
// - node:tls is loaded by install() BEFORE net is patched: TLSSocket and JSStreamSocket
//   (which node:tls captures when it loads) derive from Node's original net.Socket, the
//   class that drives native handles. TLSSocket's constructor still calls `net.Socket`
//   (ours, by then) with `handle`: net_socket.js hands that to the original.
// - tls.Server is re-parented onto the guest net.Server (it captured the original), so
//   tls.createServer / https.createServer listen in the guest; each accepted guest
//   socket is wrapped as Node does for any JS stream.
// - tls.connect without `socket` (and so https.request / https.get, whose agent calls
//   tls.connect) would connect a native TCP handle, outside the sidecar: it connects a
//   guest socket first and passes it as `socket`.
// - TLSSocket takes `connecting` from `!socket._handle`, always true for a guest socket,
//   and would then wait forever for a 'connect' that already happened: it is set from
//   the guest socket's own state instead.
// - The guest socket under a TLSSocket is made half-open: the TLSSocket ends it.
// - ref/unref, setNoDelay/setKeepAlive and the addresses of a TLSSocket are those of
//   the guest socket under it (the native handle methods have nothing to act on).

const tls = require('tls');
const { markTransport } = require('./handle_shim');

let GuestSocket = null;

function install(originals, guest) {
  GuestSocket = guest.Socket;
  const { TLSSocket } = tls;
  Object.setPrototypeOf(tls.Server.prototype, guest.Server.prototype);
  Object.setPrototypeOf(tls.Server, guest.Server);

  const init = TLSSocket.prototype._init;
  TLSSocket.prototype._init = function (socket, wrap) {
    init.call(this, socket, wrap);
    if (isGuest(socket)) {
      this.connecting = Boolean(socket.connecting);
      // The TLSSocket decides when to end (it took allowHalfOpen from the socket): the
      // socket under it must not end its side by itself on EOF, before the TLS layer
      // has written what it still has to (Duplex does that when allowHalfOpen is false).
      socket.allowHalfOpen = true;
    }
  };

  for (const name of ['ref', 'unref']) {
    const original = TLSSocket.prototype[name];
    TLSSocket.prototype[name] = function () {
      const parent = guestParent(this);
      if (parent) parent[name]();
      return original.call(this);
    };
  }
  for (const name of ['setNoDelay', 'setKeepAlive']) {
    const original = TLSSocket.prototype[name];
    TLSSocket.prototype[name] = function (...args) {
      const parent = guestParent(this);
      if (parent) {
        parent[name](...args);
        return this;
      }
      return original.apply(this, args);
    };
  }
  const getpeername = TLSSocket.prototype._getpeername;
  TLSSocket.prototype._getpeername = function () {
    const parent = guestParent(this);
    if (!parent) return getpeername.call(this);
    const remote = parent._remote;
    return remote && remote.path === undefined ? { address: remote.address, family: remote.family, port: remote.port } : {};
  };
  const getsockname = TLSSocket.prototype._getsockname;
  TLSSocket.prototype._getsockname = function () {
    const parent = guestParent(this);
    return parent ? parent.address() : getsockname.call(this);
  };

  const connect = tls.connect;
  tls.connect = function (...args) {
    const [options, cb] = normalizeConnectArgs(originals.normalizeArgs, args);
    if (options.socket) {
      if (isGuest(options.socket)) markTransport(options.socket);
      return connect.call(this, options, ...(cb ? [cb] : []));
    }
    // Connect a guest socket as tls.connect would have connected its own.
    const where = options.path !== undefined && options.path !== null ? { path: options.path } : { host: options.host || 'localhost', port: options.port };
    for (const key of ['localAddress', 'localPort', 'family', 'hints', 'lookup', 'noDelay', 'keepAlive', 'keepAliveInitialDelay']) {
      if (options[key] !== undefined) where[key] = options[key];
    }
    const socket = new GuestSocket({ allowHalfOpen: options.allowHalfOpen });
    markTransport(socket);
    // Validate (and throw) synchronously, as tls.connect does.
    socket.connect(where);
    let tlsSocket;
    try {
      tlsSocket = connect.call(this, { ...options, socket }, ...(cb ? [cb] : []));
    } catch (e) {
      // Options tls.connect rejects (ciphers, pfx, passphrase, TLS versions ...) throw
      // after the guest socket started connecting: it must not stay open (Node's
      // tls.connect throws before it connects anything).
      socket.destroy();
      throw e;
    }
    if (options.timeout) tlsSocket.setTimeout(options.timeout);
    return tlsSocket;
  };
}

function isGuest(socket) {
  return Boolean(socket) && GuestSocket !== null && GuestSocket.prototype.isPrototypeOf(socket);
}

function guestParent(tlsSocket) {
  const parent = tlsSocket._parent;
  return isGuest(parent) ? parent : null;
}

// As node:tls normalizes its arguments: [port][, host][, options][, cb], with the
// options object merged over what net's normalizeArgs made of port and host.
function normalizeConnectArgs(normalizeArgs, listArgs) {
  const [options, cb] = normalizeArgs(listArgs);
  const merged = { ...options };
  if (listArgs[1] !== null && typeof listArgs[1] === 'object') Object.assign(merged, listArgs[1]);
  else if (listArgs[2] !== null && typeof listArgs[2] === 'object') Object.assign(merged, listArgs[2]);
  return [merged, cb];
}

module.exports = { install };
