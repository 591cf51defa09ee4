'use strict';
// net.Server over the sidecar. A plain function constructor (not a class) because
// node:http's Server calls `net.Server.call(this, options)` and inherits its prototype.
//
// listen() is a synchronous net.listen; 'listening' (or 'error') follows on the next
// tick, as in Node. Each `accept` event becomes a Socket, acknowledged at once
// (net.credit 0, PROTOCOL §8 net.listen), and is emitted as 'connection'.

const EventEmitter = require('events');
const util = require('util');
const { updateRef, defineRef, session } = require('./handle');
const { fromWire, nodeError } = require('./errors');
const { Socket, kAccepted, normalize } = require('./net_socket');

function Server(options, connectionListener) {
  if (!(this instanceof Server)) return new Server(options, connectionListener);
  EventEmitter.call(this);
  if (typeof options === 'function') {
    connectionListener = options;
    options = {};
  } else if (options === undefined || options === null) {
    options = {};
  } else if (typeof options !== 'object') {
    throw nodeError('ERR_INVALID_ARG_TYPE', 'The "options" argument must be of type object.', TypeError);
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
}
util.inherits(Server, EventEmitter);

Object.defineProperty(Server.prototype, 'listening', {
  get() {
    return this._id !== null;
  },
  configurable: true,
  enumerable: true,
});

Server.prototype.listen = function (...args) {
  const [options, cb] = normalize(args);
  if (cb) this.once('listening', cb);
  if (this._id !== null) throw nodeError('ERR_SERVER_ALREADY_LISTEN', 'Listen method has been called more than once without closing.');
  let params;
  if (options.path !== undefined && options.path !== null) {
    params = { path: String(options.path) };
  } else {
    let port = options.port === undefined || options.port === null ? 0 : Number(options.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw nodeError('ERR_SOCKET_BAD_PORT', `options.port should be >= 0 and < 65536. Received ${util.inspect(options.port)}.`, RangeError);
    }
    params = { port };
    if (options.host) params.host = options.host;
  }
  // listen(port, host, backlog): normalizeArgs leaves the backlog in args[1] or args[2].
  const backlog = options.backlog || (typeof args[1] === 'number' ? args[1] : undefined) || (typeof args[2] === 'number' ? args[2] : undefined);
  if (backlog) params.backlog = backlog;
  let reply;
  try {
    reply = this._session.call('net.listen', params).result;
  } catch (e) {
    const where = params.path !== undefined ? params : { address: params.host || '::', port: params.port };
    const err = e.wire ? fromWire(e.wire, 'listen', where) : e;
    process.nextTick(() => this.emit('error', err));
    return this;
  }
  this._id = reply.server;
  this._local = reply.local;
  this._active = true;
  this._session.register(this._id, this);
  updateRef(this);
  process.nextTick(() => {
    if (this._id !== null) this.emit('listening');
  });
  return this;
};

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
  this._connections++;
  socket.once('close', () => {
    this._connections--;
    this._emitCloseIfDrained();
  });
  if (this.pauseOnConnect) socket.pause();
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
