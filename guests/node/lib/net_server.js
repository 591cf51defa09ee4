'use strict';
// net.Server over the sidecar. A plain function constructor (not a class) because
// node:http's Server calls `net.Server.call(this, options)` and inherits its prototype.
//
// listen() is Node's own, over a synchronous net.listen (net_listen.js); 'listening'
// (or 'error') follows on the next tick, as in Node. Each `accept` event becomes a Socket, acknowledged at once
// (net.credit 0, PROTOCOL §8 net.listen), and is emitted as 'connection'.

const EventEmitter = require('events');
const util = require('util');
const { updateRef, defineRef, session } = require('./handle');
const { fromWire, nodeError } = require('./errors');
const { Socket, kAccepted } = require('./net_socket');
const { serverHandle, markTransport } = require('./handle_shim');
const { invalidArgType, validateFunction } = require('./validators');
const tls = require('tls');

function Server(options, connectionListener) {
  if (!(this instanceof Server)) return new Server(options, connectionListener);
  EventEmitter.call(this);
  if (typeof options === 'function') {
    connectionListener = options;
    options = {};
  } else if (options === undefined || options === null) {
    options = {};
  } else if (typeof options !== 'object') {
    throw invalidArgType('options', 'object', options);
  }
  if (typeof connectionListener === 'function') this.on('connection', connectionListener);
  this._session = session();
  this._id = null;
  this._local = null;
  this._connections = 0;
  this._refed = true;
  this._active = false;
  this._counted = false;
  this._pollKind = 'server';
  this.allowHalfOpen = Boolean(options.allowHalfOpen);
  this.pauseOnConnect = Boolean(options.pauseOnConnect);
  this.noDelay = Boolean(options.noDelay);
  this.keepAlive = Boolean(options.keepAlive);
  this.keepAliveInitialDelay = options.keepAliveInitialDelay || 0;
  this.highWaterMark = options.highWaterMark;
  this.maxConnections = undefined;
  // Read and written by Node's own listen() (net_listen.js).
  this._listeningId = 1;
  this._usingWorkers = false;
  this._workers = [];
  this._unref = false;
  this._pipeName = undefined;
}
util.inherits(Server, EventEmitter);

Object.defineProperty(Server.prototype, 'listening', {
  get() {
    return this._id !== null;
  },
  configurable: true,
  enumerable: true,
});

// Node's code (its listen() among it) reads `_handle` for "is listening"; programs
// reach into it for fd, getsockname, ref/unref (handle_shim.js). Node's listen() never
// assigns it on the paths a guest can take; an assignment is ignored.
Object.defineProperty(Server.prototype, '_handle', {
  get() {
    return this._id === null ? null : serverHandle(this);
  },
  set() {},
  configurable: true,
  enumerable: false,
});

Server.prototype._onEvent = function (event) {
  switch (event.event) {
    case 'accept':
      return this._onAccept(event);
    case 'error':
      return this.emit('error', fromWire(event, 'accept'));
    case 'close':
      return this._release();
    default:
      return undefined;
  }
};

Server.prototype._onAccept = function (event) {
  const socket = new Socket({
    allowHalfOpen: this.allowHalfOpen,
    highWaterMark: this.highWaterMark,
    noDelay: this.noDelay,
    keepAlive: this.keepAlive,
    keepAliveInitialDelay: this.keepAliveInitialDelay,
    [kAccepted]: { id: event.socket, local: event.local, remote: event.remote },
  });
  if (this.maxConnections !== undefined && this._connections >= this.maxConnections) {
    socket.destroy();
    this.emit('drop', { localAddress: socket.localAddress, localPort: socket.localPort, remoteAddress: socket.remoteAddress, remotePort: socket.remotePort, remoteFamily: socket.remoteFamily });
    return;
  }
  socket.server = this;
  socket._server = this;
  // tls.Server (https, http2 secure) wraps it in a TLSSocket in its 'connection' listener.
  if (this instanceof tls.Server) markTransport(socket);
  // Counted down by the socket's _destroy, as Node's (no listener of ours on it).
  this._connections++;
  if (this.pauseOnConnect) {
    socket.pause();
    socket._setReading(false);
  }
  this.emit('connection', socket);
};

Server.prototype._onLost = function (err) {
  const wasListening = this._id !== null;
  this._release();
  if (wasListening) {
    this.emit('error', err);
    this._emitCloseIfDrained();
  }
};

Server.prototype._release = function () {
  if (this._id !== null) this._session.unregister(this._id);
  this._id = null;
  this._active = false;
  updateRef(this);
};

Server.prototype.close = function (cb) {
  if (typeof cb === 'function') {
    if (this._id === null) {
      this.once('close', () => cb(nodeError('ERR_SERVER_NOT_RUNNING', 'Server is not running.')));
    } else {
      this.once('close', cb);
    }
  }
  if (this._id !== null) {
    const id = this._id;
    this._release();
    this._local = null;
    try {
      this._session.send('net.server_close', { server: id });
    } catch {
      // The sidecar is gone: so is the listener.
    }
  }
  this._emitCloseIfDrained();
  return this;
};

Server.prototype._emitCloseIfDrained = function () {
  if (this._id !== null || this._connections > 0) return;
  process.nextTick(() => this.emit('close'));
};

Server.prototype.address = function () {
  if (!this._local) return null;
  if (this._local.path !== undefined) return this._local.path;
  return { address: this._local.address, family: this._local.family, port: this._local.port };
};

Server.prototype.getConnections = function (cb) {
  validateFunction(cb, 'callback');
  process.nextTick(cb, null, this._connections);
  return this;
};

defineRef(Server.prototype);

if (Symbol.asyncDispose) {
  Server.prototype[Symbol.asyncDispose] = function () {
    return new Promise((resolve, reject) => {
      if (this._id === null) return resolve();
      return this.close((err) => (err ? reject(err) : resolve()));
    });
  };
}

function createServer(options, connectionListener) {
  return new Server(options, connectionListener);
}

module.exports = { Server, createServer };
