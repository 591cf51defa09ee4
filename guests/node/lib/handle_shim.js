'use strict';
// `socket._handle` and `server._handle` of guest sockets and servers.
//
// A guest socket has no native handle, but programs (and libraries) reach into
// `_handle`: as "is it open" (`if (socket._handle)`), for `fd`, or to call
// setNoDelay / setKeepAlive / getsockname / getpeername / ref / unref on it. A null
// there crashes them (and two of Node's own paths abort its C++ on a null handle), so
// an open guest socket or listening server has a plain object here with what such code
// uses, acting on the guest object. It is not a native handle: `fd` is -1 (a guest has
// no descriptors), and it is no StreamBase (`isStreamBase` is false), so Node's
// modules that consume a native stream (http's parser, http2) take the JS path, as
// they did with null.
//
// One exception: a guest socket that carries a TLS session has a null `_handle`.
// Node's TLSSocket takes a net.Socket with a handle for a native stream and would hand
// it to C++; with null it wraps the socket as the JS stream it is (tls.js marks it).

const kShim = Symbol('pushnet.handleShim');
const kTransport = Symbol('pushnet.tlsTransport');

let nextAsyncId = 1;

function fillAddress(out, address) {
  if (out && typeof out === 'object' && address) Object.assign(out, address);
  return 0;
}

function socketHandle(socket) {
  if (socket[kTransport]) return null;
  let shim = socket[kShim];
  if (shim) return shim;
  const asyncId = nextAsyncId++;
  shim = {
    fd: -1,
    reading: false,
    writeQueueSize: 0,
    isStreamBase: false,
    setNoDelay(enable) {
      socket.setNoDelay(enable);
      return 0;
    },
    // As the native handle's: the delay in seconds.
    setKeepAlive(enable, delaySecs) {
      socket.setKeepAlive(enable, (Number(delaySecs) || 0) * 1000);
      return 0;
    },
    getsockname(out) {
      return fillAddress(out, socket._local && socket._local.path === undefined ? socket.address() : undefined);
    },
    getpeername(out) {
      const remote = socket._remote;
      return fillAddress(out, remote && remote.path === undefined ? { address: remote.address, family: remote.family, port: remote.port } : undefined);
    },
    readStart() {
      return 0;
    },
    readStop() {
      return 0;
    },
    ref() {
      socket.ref();
    },
    unref() {
      socket.unref();
    },
    hasRef() {
      return Boolean(socket._refed);
    },
    getAsyncId() {
      return asyncId;
    },
    close(cb) {
      socket.destroy();
      if (typeof cb === 'function') socket.once('close', () => cb());
    },
  };
  Object.defineProperty(socket, kShim, { value: shim, configurable: true });
  return shim;
}

function serverHandle(server) {
  let shim = server[kShim];
  if (shim) return shim;
  const asyncId = nextAsyncId++;
  shim = {
    fd: -1,
    getsockname(out) {
      const address = server.address();
      return fillAddress(out, address && typeof address === 'object' ? address : undefined);
    },
    ref() {
      server.ref();
    },
    unref() {
      server.unref();
    },
    hasRef() {
      return Boolean(server._refed);
    },
    getAsyncId() {
      return asyncId;
    },
    // Unix socket modes (listen's readableAll / writableAll): the path is the VM's, not a file.
    fchmod() {
      return 0;
    },
    close(cb) {
      server.close();
      if (typeof cb === 'function') server.once('close', () => cb());
    },
  };
  Object.defineProperty(server, kShim, { value: shim, configurable: true });
  return shim;
}

// The guest socket under a TLSSocket: its `_handle` is null from now on (see above).
function markTransport(socket) {
  if (socket && typeof socket === 'object') Object.defineProperty(socket, kTransport, { value: true, configurable: true });
}

module.exports = { socketHandle, serverHandle, markTransport };
