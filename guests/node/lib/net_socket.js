'use strict';
// net.Socket over the sidecar: a real stream.Duplex with Node's semantics.
//
// - connect: a `noreply` net.connect (non-blocking, as Node's is); the `connect` event
//   names the request and brings the socket id.
// - reading: `data` events are push()ed; the receive window (credit, PROTOCOL §11) is
//   granted back as the program consumes: at once while the stream takes more, and
//   from _read() once a paused or full stream drains. pause() therefore stops the
//   grants, and the sidecar stops reading for this socket when the window is used up.
// - writing: `noreply` writes. Once the sidecar's buffer for the socket passes its
//   high-water mark, the write callback waits for the `drain` event, so write() returns
//   false past the high-water mark and 'drain' follows, as in Node. The sidecar says so
//   with a `pressure` event (capability `pressure`); a write is made synchronous (its
//   reply says `need_drain`) only after SYNC_EVERY bytes written with no event seen in
//   between, e.g. a program writing in a loop without yielding, which no event can reach.
//   A sidecar without `pressure`: a synchronous write every SYNC_EVERY bytes.
// - end() → net.shutdown (FIN); destroy() → net.destroy; 'close' carries had_error.

const stream = require('stream');
const util = require('util');
const { updateRef, defineRef, session } = require('./handle');
const { sysError, fromWire, nodeError } = require('./errors');
const netConnect = require('./net_connect');
const onread = require('./net_onread');
const v = require('./validators');
const { socketHandle } = require('./handle_shim');

// Bytes of noreply writes between synchronous ones (with `pressure`: without an event
// dispatched in between). The sidecar may hold up to about this much past its high-water
// mark (64 KiB by default) before write() starts returning false, much as a kernel socket
// buffer would; it stays far below the hard limit (4 MiB by default) at which a write
// fails ENOBUFS. A blocking round trip every 64 KiB cost a 64 KiB echo one sync call per
// write on each side; one every 512 KiB still froze the program every fourth op.
// Why an event dispatched may restart the count: events arrive in the order the sidecar
// pushed them, and it pushes `pressure` while handling the write that passed the mark,
// so a `pressure` for every write it had handled by then has been seen. Writes it had
// not handled yet are bounded by the call channel's kernel buffer (fd 3 is blocking).
const SYNC_EVERY = 512 * 1024;
const WRITE_PIECE = 256 * 1024; // largest payload of one net.write
// Credit is granted back in batches of at least this: half the window (256 KiB), so
// the sidecar never waits for a grant while the program keeps reading.
const GRANT_BATCH = 128 * 1024;

const kAccepted = Symbol('pushnet.accepted');

let OriginalSocket = null;
let normalizeArgs = null;

function Socket(options) {
  if (!(this instanceof Socket)) return new Socket(options);
  if (typeof options === 'number') options = { fd: options };
  options = options ? { ...options } : {};
  // Sockets over fds and native handles are not network sockets of the guest:
  // process.stdin/stdout on a pipe, child_process stdio. Node's own class serves them.
  // So are the subclasses Node makes over native handles (tls.TLSSocket over its TLSWrap;
  // see tls.js): they derive from the original class and call `net.Socket` (this one)
  // on themselves.
  if ((options.fd !== undefined || options.handle) && !options[kAccepted]) {
    if (new.target === Socket) return new OriginalSocket(options);
    if (new.target === undefined && OriginalSocket.prototype.isPrototypeOf(this)) {
      OriginalSocket.call(this, options);
      return undefined;
    }
    throw nodeError('ERR_PUSHNET_UNSUPPORTED', 'pushnet: a net.Socket subclass over a native handle must derive from the original net.Socket');
  }
  this.allowHalfOpen = Boolean(options.allowHalfOpen);
  stream.Duplex.call(this, {
    allowHalfOpen: this.allowHalfOpen,
    emitClose: false,
    autoDestroy: true,
    decodeStrings: false,
    highWaterMark: options.highWaterMark,
    readableHighWaterMark: options.readableHighWaterMark,
    writableHighWaterMark: options.writableHighWaterMark,
  });
  this._session = session();
  this._id = null;
  this._connectRequest = null;
  this._where = null;
  this.connecting = false;
  this._closed = false;
  this._refed = true;
  this._active = false;
  this._counted = false;
  this._local = null;
  this._remote = null;
  this._owed = 0;
  this._held = false;
  this._unsynced = 0;
  this._syncedAt = 0; // the session's `dispatched` when `_unsynced` started counting
  this._pressured = false; // a `pressure` came (or a reply said need_drain): hold writes
  this._pendingWrite = null;
  this._pendingFinal = null;
  this._awaitDrain = null;
  this._readStopped = false; // not reading (see _busy)
  this._onread = onread.parse(options.onread); // { buffer, callback } (net_onread.js)
  this._gotEnd = false;
  this._timer = null;
  this.timeout = 0;
  this._noDelay = options.noDelay ? true : null;
  this._sentNoDelay = null; // what the sidecar was last told (setNoDelay, setKeepAlive)
  this._sentKeepAlive = null;
  this._keepAlive = options.keepAlive ? [true, options.keepAliveInitialDelay || 0] : null;
  this.bytesRead = 0;
  this._bytesWritten = 0;
  this.server = null;
  this._server = null;
  // Node's sockets walk `_parent` to null (a TLSSocket refreshes its timers up the chain).
  this._parent = null;
  this._pollKind = 'socket';
  this._attempts = null;
  this._lookupHost = undefined;
  // Node's own listener: without allowHalfOpen, a write after the peer's end fails EPIPE.
  this.on('end', onReadableStreamEnd);
  if (options.signal) netConnect.addAbortSignal(this, options.signal);
  const accepted = options[kAccepted];
  if (accepted) {
    this._local = accepted.local;
    this._remote = accepted.remote;
    this._attach(accepted.id);
    // Acknowledge the accept: the connection leaves the server's backlog.
    this._session.send('net.credit', { socket: this._id, bytes: 0 });
    this._applyOptions();
  }
}
util.inherits(Socket, stream.Duplex);

function onReadableStreamEnd() {
  if (!this.allowHalfOpen) this.write = writeAfterFIN;
}

function writeAfterFIN(chunk, encoding, cb) {
  if (!this.writableEnded) return stream.Duplex.prototype.write.call(this, chunk, encoding, cb);
  if (typeof encoding === 'function') cb = encoding;
  const err = new Error('This socket has been ended by the other party');
  err.code = 'EPIPE';
  if (typeof cb === 'function') process.nextTick(cb, err);
  this.destroy(err);
  return false;
}

Socket.prototype._attach = function (id) {
  this._id = id;
  this._active = true;
  this._session.register(id, this);
  updateRef(this);
};

Socket.prototype._applyOptions = function () {
  if (this._noDelay !== null) this.setNoDelay(this._noDelay);
  if (this._keepAlive !== null) this.setKeepAlive(this._keepAlive[0], this._keepAlive[1]);
};

// --- connect ---------------------------------------------------------------------

Socket.prototype.connect = function (...args) {
  return netConnect.connect(this, args, normalizeArgs);
};

// From connect(), once the arguments are valid: the socket is connecting from now on.
Socket.prototype._startConnect = function () {
  this.connecting = true;
  this._active = true;
  updateRef(this);
};

Socket.prototype._onConnected = function (event) {
  if (this.destroyed) {
    // Destroyed while connecting: let the new connection go at once.
    this._session.send('net.destroy', { socket: event.socket });
    return;
  }
  this._local = event.local;
  this._remote = event.remote;
  this.connecting = false;
  this._connectRequest = null;
  if (this._id !== event.socket) this._attach(event.socket);
  else updateRef(this);
  this._applyOptions();
  this._refreshTimer();
  const host = this._lookupHost;
  if (host !== undefined) {
    // The sidecar resolved the name: the address it connected to, as Node's 'lookup'.
    this._lookupHost = undefined;
    this.emit('lookup', null, this._remote && this._remote.address, familyNumber(this._remote), host);
  }
  if (this._pendingWrite) {
    const { data, cb } = this._pendingWrite;
    this._pendingWrite = null;
    this._writeData(data, cb);
  }
  if (this._pendingFinal) {
    const cb = this._pendingFinal;
    this._pendingFinal = null;
    this._final(cb);
  }
  this.emit('connect');
  this.emit('ready');
  // Paused before it connected or in a 'connect' listener: as Node's, it never starts
  // reading (and does not hold the process) until resumed or read.
  if (this.isPaused()) this._setReading(false);
};

// --- events from the sidecar ---------------------------------------------------------

Socket.prototype._onEvent = function (event, payload) {
  switch (event.event) {
    case 'connect':
      return this._onConnected(event);
    case 'data':
      return this._onData(payload);
    case 'end':
      return this._onEnd();
    case 'drain':
      return this._onDrain();
    case 'pressure':
      this._pressured = true;
      return undefined;
    case 'error':
      return this._onError(event);
    case 'close':
      return this._onClose(event);
    default:
      return undefined;
  }
};

Socket.prototype._onData = function (payload) {
  if (this.destroyed || this._gotEnd) return;
  this.bytesRead += payload.length;
  this._refreshTimer();
  if (this._onread) {
    // Credit goes back for what the program's callback took.
    this._owed += onread.deliver(this, this._onread, payload);
    if (this._owed >= GRANT_BATCH || this._onread.stopped) this._grant();
    return;
  }
  this._owed += payload.length;
  if (!this.push(payload)) {
    this._held = true;
    this._setReading(false);
  }
  else if (this._owed >= GRANT_BATCH) this._grant();
};

Socket.prototype._grant = function () {
  if (this._id === null || this._closed || this._owed === 0) return;
  this._session.send('net.credit', { socket: this._id, bytes: this._owed });
  this._owed = 0;
};

// Whether the socket holds the process open (with ref): as Node's, while it connects,
// reads or waits to write. Node's socket stops reading (and no longer holds the loop)
// once its buffer is full (push() says so), when accepted with pauseOnConnect, or when
// paused before 'connect' returned; pause() alone does not stop it; _read() restarts it.
Socket.prototype._busy = function () {
  return this.connecting || !this._readStopped || this._awaitDrain !== null || this._pendingWrite !== null;
};

Socket.prototype._setReading = function (reading) {
  if (this._readStopped !== reading) return;
  this._readStopped = !reading;
  updateRef(this);
};

Socket.prototype.resume = function () {
  if (this._onread && this._onread.stopped) {
    this._owed += onread.restart(this, this._onread);
    this._grant();
    if (this._onread.endPending && this._onread.waiting.length === 0) this._onEnd();
  }
  return stream.Duplex.prototype.resume.call(this);
};

Socket.prototype.pause = function () {
  if (this._onread) this._onread.stopped = true;
  return stream.Duplex.prototype.pause.call(this);
};

Socket.prototype._read = function () {
  // Not the read(0) a push() into a paused stream makes: data a guest socket receives
  // while it "does not read" (the sidecar's window) must not restart it.
  if (this._held || !this.isPaused()) this._setReading(true);
  if (this._held || this._owed >= GRANT_BATCH) {
    this._held = false;
    this._grant();
  }
};

Socket.prototype._onEnd = function () {
  if (this._gotEnd) return;
  if (this._onread && this._onread.waiting.length > 0) {
    // The EOF comes after the bytes still waiting for the program's callback.
    this._onread.endPending = true;
    return;
  }
  this._gotEnd = true;
  this.push(null);
  // As Node's own sockets do on EOF: a stream nobody reads, with nothing buffered,
  // still ends (and, with both sides done, closes).
  this.read(0);
};

Socket.prototype._onDrain = function () {
  this._pressured = false;
  const waiting = this._awaitDrain;
  if (!waiting) return;
  this._awaitDrain = null;
  updateRef(this);
  waiting.resume();
};

Socket.prototype._onError = function (event) {
  if (this.destroyed) return;
  if (this.connecting) {
    this._connectFailed(fromWire(event, 'connect', this._where));
    return;
  }
  const syscall = event.request !== undefined ? 'write' : 'read';
  this.destroy(fromWire(event, syscall));
};

function familyNumber(endpoint) {
  if (!endpoint) return undefined;
  if (endpoint.family === 'IPv6' || endpoint.family === 6) return 6;
  return 4;
}

Socket.prototype._onClose = function () {
  this._release();
  if (this.destroyed) return;
  if (this._awaitDrain) {
    const { cb } = this._awaitDrain;
    this._awaitDrain = null;
    cb(sysError('EPIPE', 'write'));
  }
  // Nothing more will arrive; what was received is still the program's to read.
  this._onEnd();
};

Socket.prototype._onLost = function (err) {
  this._release();
  if (!this.destroyed) this.destroy(err);
};

// The sidecar id is gone (closed there, or destroyed here).
Socket.prototype._release = function () {
  if (this._id !== null && !this._closed) this._session.unregister(this._id);
  this._closed = true;
  this._active = false;
  updateRef(this);
};

// --- writing -----------------------------------------------------------------------

function toBuffer(chunk, encoding) {
  return typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk;
}

Socket.prototype._write = function (chunk, encoding, cb) {
  this._writeData(toBuffer(chunk, encoding), cb);
};

Socket.prototype._writev = function (chunks, cb) {
  const data = chunks.length === 1 ? toBuffer(chunks[0].chunk, chunks[0].encoding) : Buffer.concat(chunks.map((c) => toBuffer(c.chunk, c.encoding)));
  this._writeData(data, cb);
};

Socket.prototype._writeData = function (data, cb) {
  if (this.connecting) {
    this._pendingWrite = { data, cb };
    return;
  }
  if (this._id === null) return cb(nodeError('ERR_SOCKET_CLOSED', 'Socket is closed'));
  if (this._closed) return cb(sysError('EPIPE', 'write'));
  this._bytesWritten += data.length;
  this._refreshTimer();
  this._sendData(data, 0, cb);
};

Socket.prototype._sendData = function (data, offset, cb) {
  // Pieces fit the sidecar's frame limit with room for the header.
  const piece = Math.min(WRITE_PIECE, this._session.channel.sendLimit - 4096);
  const session = this._session;
  while (offset < data.length) {
    if (this._closed) return cb(sysError('EPIPE', 'write'));
    if (this._pressured) {
      // Past the high-water mark: the rest waits for `drain`.
      const rest = offset;
      this._awaitDrain = { resume: () => this._sendData(data, rest, cb), cb };
      updateRef(this);
      return undefined;
    }
    const n = Math.min(piece, data.length - offset);
    const bytes = offset === 0 && n === data.length ? data : data.subarray(offset, offset + n);
    offset += n;
    if (session.pressure && this._syncedAt !== session.dispatched) {
      // Events came since the count started: a `pressure` pushed before them is seen.
      this._syncedAt = session.dispatched;
      this._unsynced = 0;
    }
    this._unsynced += n;
    try {
      if (this._unsynced < SYNC_EVERY) {
        session.send('net.write', { socket: this._id }, bytes);
        continue;
      }
      this._unsynced = 0;
      const { result } = session.call('net.write', { socket: this._id }, bytes);
      if (result && result.need_drain) {
        // With `pressure`, the `drain` that ends this crossing clears it.
        this._pressured = true;
        const rest = offset;
        this._awaitDrain = { resume: () => this._sendData(data, rest, cb), cb };
        updateRef(this);
        return undefined;
      }
    } catch (e) {
      return cb(toSysError(e, 'write'));
    }
  }
  return cb();
};

Socket.prototype._final = function (cb) {
  if (this.connecting) {
    this._pendingFinal = cb;
    return;
  }
  if (this._id !== null && !this._closed) {
    try {
      this._session.send('net.shutdown', { socket: this._id });
    } catch (e) {
      return cb(toSysError(e, 'shutdown'));
    }
  }
  return cb();
};

Socket.prototype._destroy = function (err, cb) {
  if (this._timer) {
    clearTimeout(this._timer);
    this._timer = null;
  }
  this.connecting = false;
  if (this._id !== null && !this._closed) {
    const id = this._id;
    this._release();
    try {
      this._session.send('net.destroy', { socket: id });
    } catch {
      // The sidecar is gone: so is the socket.
    }
  } else {
    this._release();
  }
  cb(err);
  process.nextTick(() => this.emit('close', Boolean(err)));
  const server = this._server;
  if (server && !this._uncounted) {
    this._uncounted = true;
    server._connections--;
    if (server._emitCloseIfDrained) server._emitCloseIfDrained();
  }
};

Socket.prototype.destroySoon = function () {
  if (this.writable) this.end();
  if (this.writableFinished) this.destroy();
  else this.once('finish', this.destroy);
};

Socket.prototype.resetAndDestroy = function () {
  return this.destroy();
};

function toSysError(e, syscall, where) {
  if (e && e.wire) return fromWire(e.wire, syscall, where);
  return e;
}

// --- options, timers, refs ---------------------------------------------------------

// Each sends only a change: node:http's keep-alive agent calls setKeepAlive(true, ...)
// every time a socket goes back to its pool, and every frame is a wake of the sidecar.
Socket.prototype.setNoDelay = function (enable = true) {
  this._noDelay = Boolean(enable);
  if (this._id !== null && !this._closed && this._sentNoDelay !== this._noDelay) {
    this._sentNoDelay = this._noDelay;
    this._session.send('net.socket_set_no_delay', { socket: this._id, enable: this._noDelay });
  }
  return this;
};

Socket.prototype.setKeepAlive = function (enable = false, initialDelay = 0) {
  this._keepAlive = [Boolean(enable), Math.max(0, Math.floor(Number(initialDelay) || 0))];
  const key = `${this._keepAlive[0]} ${this._keepAlive[1]}`;
  if (this._id !== null && !this._closed && this._sentKeepAlive !== key) {
    this._sentKeepAlive = key;
    this._session.send('net.socket_set_keep_alive', { socket: this._id, enable: this._keepAlive[0], initial_delay_ms: this._keepAlive[1] });
  }
  return this;
};

Socket.prototype.setTimeout = function (msecs, callback) {
  // As Node's getTimerDuration and validateFunction.
  v.validateNumber(msecs, 'msecs');
  if (msecs < 0 || !Number.isFinite(msecs)) throw v.outOfRange('msecs', 'a non-negative finite number', msecs);
  if (callback !== undefined) v.validateFunction(callback, 'callback');
  if (this._timer) {
    clearTimeout(this._timer);
    this._timer = null;
  }
  this.timeout = msecs;
  if (msecs > 0 && !this.destroyed) {
    // An idle timeout the program asked for (unref'd, as Node's): re-armed by activity.
    this._timer = setTimeout(() => this.emit('timeout'), msecs);
    this._timer.unref();
  }
  if (callback) {
    if (msecs === 0) this.removeListener('timeout', callback);
    else this.once('timeout', callback);
  }
  return this;
};

Socket.prototype._refreshTimer = function () {
  if (this._timer) this._timer.refresh();
};

defineRef(Socket.prototype);

// --- addresses and state -----------------------------------------------------------

Socket.prototype.address = function () {
  if (!this._local || this._local.path !== undefined) return {};
  return { address: this._local.address, family: this._local.family, port: this._local.port };
};

function define(name, get) {
  Object.defineProperty(Socket.prototype, name, { get, configurable: true, enumerable: false });
}
define('remoteAddress', function () {
  return this._remote && this._remote.address;
});
define('remotePort', function () {
  return this._remote && this._remote.port;
});
define('remoteFamily', function () {
  return this._remote && this._remote.family;
});
define('localAddress', function () {
  return this._local && this._local.address;
});
define('localPort', function () {
  return this._local && this._local.port;
});
define('localFamily', function () {
  return this._local && this._local.family;
});
// As Node's: what was sent, plus what is queued (before connect, or behind a write).
define('bytesWritten', function () {
  let bytes = this._bytesWritten;
  const queued = this.writableBuffer;
  if (!queued) return undefined;
  for (const el of queued) bytes += Buffer.isBuffer(el.chunk) ? el.chunk.length : Buffer.byteLength(el.chunk, el.encoding);
  if (this._pendingWrite) bytes += this._pendingWrite.data.length;
  return bytes;
});
define('bufferSize', function () {
  return this.writableLength;
});
define('pending', function () {
  return this._id === null || this.connecting;
});
// Open (connecting or connected, not destroyed): a stand-in handle (handle_shim.js).
Object.defineProperty(Socket.prototype, '_handle', {
  get() {
    if (this.destroyed || (!this.connecting && this._id === null)) return null;
    return socketHandle(this);
  },
  set() {},
  configurable: true,
  enumerable: false,
});
define('readyState', function () {
  if (this.connecting) return 'opening';
  if (this.readable && this.writable) return 'open';
  if (this.readable && !this.writable) return 'readOnly';
  if (!this.readable && this.writable) return 'writeOnly';
  return 'closed';
});

function install(originals) {
  OriginalSocket = originals.Socket;
  normalizeArgs = originals.normalizeArgs;
  netConnect.install(normalizeArgs);
  netConnect.defineAttempts(Socket, { toSysError });
  // Sockets Node makes over fds (stdio pipes) are instances of the original class; they
  // still count as net.Socket.
  Object.defineProperty(Socket, Symbol.hasInstance, {
    value: (obj) => obj instanceof OriginalSocket || Socket.prototype.isPrototypeOf(obj),
  });
}

module.exports = { Socket, kAccepted, install, normalize: (args) => normalizeArgs(args) };
