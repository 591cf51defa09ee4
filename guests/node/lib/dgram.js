'use strict';
// dgram.Socket over the sidecar (udp4 / udp6). The sidecar socket is created with the
// object; bind / connect are synchronous calls whose outcome ('listening', 'connect',
// 'error') is emitted on the next tick, as Node does. send() without a callback is a
// `noreply` dgram.send (its failure comes back as an 'error'); with a callback it is a
// synchronous call so the callback gets the real outcome. `message` events become
// 'message' (msg, rinfo). A bound socket holds the process open unless unref'd.

const EventEmitter = require('events');
const util = require('util');
const { updateRef, defineRef, session } = require('./handle');
const { fromWire, nodeError } = require('./errors');

function Socket(type, listener) {
  if (!(this instanceof Socket)) return new Socket(type, listener);
  EventEmitter.call(this);
  let options = {};
  if (type !== null && typeof type === 'object') {
    options = type;
    type = options.type;
  }
  if (type !== 'udp4' && type !== 'udp6') {
    throw nodeError('ERR_SOCKET_BAD_TYPE', 'Bad socket type specified. Valid types are: udp4, udp6', TypeError);
  }
  if (typeof listener === 'function') this.on('message', listener);
  this.type = type;
  this._session = session();
  this._refed = true;
  this._active = false;
  this._counted = false;
  this._pollKind = 'udp';
  this._local = null;
  this._remote = null;
  this._closed = false;
  this._id = this._session.call('dgram.createSocket', { type }).result.socket;
  this._session.register(this._id, this);
  if (options.signal) options.signal.addEventListener('abort', () => this.close(), { once: true });
}
util.inherits(Socket, EventEmitter);

Socket.prototype._checkOpen = function () {
  if (this._closed) throw nodeError('ERR_SOCKET_DGRAM_NOT_RUNNING', 'Not running');
};

Socket.prototype.bind = function (port, address, callback) {
  this._checkOpen();
  let params;
  if (port !== null && typeof port === 'object') {
    callback = address;
    params = { port: port.port || 0 };
    if (port.address) params.host = port.address;
  } else {
    if (typeof port === 'function') {
      callback = port;
      port = 0;
      address = undefined;
    } else if (typeof address === 'function') {
      callback = address;
      address = undefined;
    }
    params = { port: port || 0 };
    if (address) params.host = address;
  }
  if (this._local) throw nodeError('ERR_SOCKET_ALREADY_BOUND', 'Socket is already bound');
  if (typeof callback === 'function') this.once('listening', callback);
  this._bindNow(params);
  return this;
};

// Binds now; 'listening' or 'error' follows on the next tick. Returns whether it worked.
Socket.prototype._bindNow = function (params) {
  try {
    this._local = this._session.call('dgram.bind', { socket: this._id, ...params }).result.local;
  } catch (e) {
    const err = e.wire ? fromWire(e.wire, 'bind', { address: params.host || (this.type === 'udp4' ? '0.0.0.0' : '::'), port: params.port }) : e;
    process.nextTick(() => this.emit('error', err));
    return false;
  }
  this._active = true;
  updateRef(this);
  process.nextTick(() => this.emit('listening'));
  return true;
};

Socket.prototype.connect = function (port, address, callback) {
  this._checkOpen();
  if (typeof address === 'function') {
    callback = address;
    address = undefined;
  }
  if (this._remote) throw nodeError('ERR_SOCKET_DGRAM_IS_CONNECTED', 'Already connected');
  if (typeof callback === 'function') this.once('connect', callback);
  const host = address || (this.type === 'udp4' ? '127.0.0.1' : '::1');
  try {
    const result = this._session.call('dgram.connect', { socket: this._id, host, port }).result;
    this._remote = result.remote;
    if (!this._local) {
      this._local = result.local;
      this._active = true;
      updateRef(this);
      process.nextTick(() => this.emit('listening'));
    }
  } catch (e) {
    const err = e.wire ? fromWire(e.wire, 'connect', { address: host, port }) : e;
    process.nextTick(() => {
      if (typeof callback === 'function') {
        this.removeListener('connect', callback);
        callback(err);
      } else {
        this.emit('error', err);
      }
    });
    return;
  }
  process.nextTick(() => this.emit('connect'));
};

Socket.prototype.disconnect = function () {
  if (!this._remote) throw nodeError('ERR_SOCKET_DGRAM_NOT_CONNECTED', 'Not connected');
  try {
    this._session.call('dgram.disconnect', { socket: this._id });
  } catch (e) {
    throw e.wire ? fromWire(e.wire, 'connect') : e;
  }
  this._remote = null;
};

function toBuffer(msg) {
  if (typeof msg === 'string') return Buffer.from(msg);
  if (Array.isArray(msg)) return Buffer.concat(msg.map(toBuffer));
  if (Buffer.isBuffer(msg)) return msg;
  if (ArrayBuffer.isView(msg)) return Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength);
  throw nodeError('ERR_INVALID_ARG_TYPE', 'The "buffer" argument must be of type string or an instance of Buffer, TypedArray, or DataView.', TypeError);
}

// send(msg[, offset, length][, port][, address][, callback]), as Node sorts it out.
Socket.prototype.send = function (buffer, offset, length, port, address, callback) {
  this._checkOpen();
  if (!this._remote) {
    if (address || (port && typeof port !== 'function')) {
      buffer = toBuffer(buffer).subarray(offset, offset + length);
    } else {
      callback = port;
      port = offset;
      address = length;
    }
  } else {
    if (typeof length === 'number') {
      buffer = toBuffer(buffer).subarray(offset, offset + length);
      if (typeof port === 'function') {
        callback = port;
        port = null;
      }
    } else {
      callback = offset;
    }
    if (port || address) throw nodeError('ERR_SOCKET_DGRAM_IS_CONNECTED', 'Already connected');
  }
  if (typeof address === 'function') {
    callback = address;
    address = undefined;
  }
  const data = toBuffer(buffer);
  const params = { socket: this._id };
  if (!this._remote) {
    params.port = Number(port);
    params.host = address || (this.type === 'udp4' ? '127.0.0.1' : '::1');
  }
  // An unbound socket is bound on first send, as Node does ('listening' included).
  if (!this._local && !this._bindNow({ port: 0 })) return;
  if (typeof callback !== 'function') {
    try {
      this._session.send('dgram.send', params, data);
    } catch (e) {
      process.nextTick(() => this.emit('error', e));
    }
    return;
  }
  let err = null;
  try {
    this._session.call('dgram.send', params, data);
  } catch (e) {
    err = e.wire ? fromWire(e.wire, 'send', { address: params.host, port: params.port }) : e;
  }
  process.nextTick(callback, err, err ? undefined : data.length);
};

Socket.prototype._onEvent = function (event, payload) {
  switch (event.event) {
    case 'message': {
      const r = event.remote;
      this.emit('message', payload, { address: r.address, family: r.family, port: r.port, size: payload.length });
      return;
    }
    case 'error':
      this.emit('error', fromWire(event, event.request !== undefined ? 'send' : 'recvmsg'));
      return;
    case 'close':
      this._release();
      return;
    default:
  }
};

Socket.prototype._onLost = function (err) {
  if (this._closed) return;
  this._release();
  this.emit('error', err);
  this.emit('close');
};

Socket.prototype._release = function () {
  if (!this._closed) this._session.unregister(this._id);
  this._closed = true;
  this._active = false;
  updateRef(this);
};

Socket.prototype.close = function (callback) {
  if (this._closed) throw nodeError('ERR_SOCKET_DGRAM_NOT_RUNNING', 'Not running');
  if (typeof callback === 'function') this.once('close', callback);
  this._release();
  try {
    this._session.send('dgram.close', { socket: this._id });
  } catch {
    // The sidecar is gone: so is the socket.
  }
  process.nextTick(() => this.emit('close'));
  return this;
};

Socket.prototype.address = function () {
  if (!this._local) throw nodeError('ERR_SOCKET_DGRAM_NOT_RUNNING', 'Not running');
  return { address: this._local.address, family: this._local.family, port: this._local.port };
};

Socket.prototype.remoteAddress = function () {
  if (!this._remote) throw nodeError('ERR_SOCKET_DGRAM_NOT_CONNECTED', 'Not connected');
  return { address: this._remote.address, family: this._remote.family, port: this._remote.port };
};

defineRef(Socket.prototype);

// Options the sidecar has no notion of: accepted and ignored (an in-VM datagram has no
// TTL or kernel buffer); multicast and broadcast are refused as the sidecar refuses them.
for (const name of ['setTTL', 'setRecvBufferSize', 'setSendBufferSize']) {
  Socket.prototype[name] = function (value) {
    return value;
  };
}
Socket.prototype.getRecvBufferSize = () => 212992;
Socket.prototype.getSendBufferSize = () => 212992;
for (const name of ['setBroadcast', 'setMulticastTTL', 'setMulticastLoopback', 'setMulticastInterface', 'addMembership', 'dropMembership', 'addSourceSpecificMembership', 'dropSourceSpecificMembership']) {
  Socket.prototype[name] = function () {
    throw nodeError('ENOTSUP', `pushnet: ${name} is not supported (no multicast or broadcast inside a VM)`);
  };
}

function createSocket(type, listener) {
  return new Socket(type, listener);
}

module.exports = { Socket, createSocket };
