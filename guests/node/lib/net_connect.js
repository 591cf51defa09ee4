'use strict';
// net.Socket#connect's argument handling and name lookup, as Node's (lib/net.js
// Socket.prototype.connect, lookupAndConnect, lookupAndConnectMultiple), ending in
// `socket._connectTo(where)` (net_socket.js) where Node's end in internalConnect.
//
// - Validation throws Node's errors synchronously (ERR_MISSING_ARGS, ERR_SOCKET_BAD_PORT,
//   ERR_INVALID_ARG_TYPE, ERR_INVALID_IP_ADDRESS ...).
// - A host that is an IP connects on the next tick. A name goes through
//   `options.lookup` when the program gives one (called as Node calls it: with
//   `{ family, hints, all }`), and the socket emits 'lookup' (err, address, family,
//   host) for each address, then tries them in turn (autoSelectFamily: IPv6 and IPv4
//   alternated, first family first). Without a `lookup` option the name is resolved by
//   the sidecar inside the VM as part of net.connect (one call, not two); 'lookup'
//   is then emitted, with the address connected to, just before 'connect' (or with the
//   error, if the name did not resolve).
// - `signal`: aborting destroys the socket with an AbortError (code ABORT_ERR).

const net = require('net');
const dns = require('dns');
const { nodeError, sysError } = require('./errors');
const v = require('./validators');

let kNormalized = null;

function install(normalizeArgs) {
  kNormalized = Object.getOwnPropertySymbols(normalizeArgs([{}]))[0] || null;
}

function isNormalized(args) {
  if (!Array.isArray(args[0])) return false;
  if (kNormalized !== null && args[0][kNormalized]) return true;
  // Normalized by the runtime itself (net.connect, tls.js).
  return args.length === 1 && args[0].length === 2 && typeof args[0][0] === 'object' && args[0][0] !== null;
}

const RESOLVE_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'EAI_NONAME']);

// Socket.prototype.connect(...args) for the guest socket `socket`.
function connect(socket, args, normalizeArgs) {
  const normalized = isNormalized(args) ? args[0] : normalizeArgs(args);
  const [options, cb] = normalized;
  if (socket._parent && socket._parent.connecting) return socket;
  if (socket.connecting || (socket._id !== null && !socket._closed && !socket.destroyed)) {
    throw nodeError('ERR_SOCKET_CONNECTING', 'Socket is already connected or connecting');
  }
  const path = options.path;
  if (options.port === undefined && (path === undefined || path === null)) throw v.missingArgs('options', 'port', 'path');
  if (path) v.validateString(path, 'options.path');
  if (socket.destroyed || socket._closed) socket._reset();
  if (cb) socket.once('connect', cb);
  if (path) {
    socket._startConnect();
    socket._connectTo({ path });
    return socket;
  }
  lookupAndConnect(socket, options);
  return socket;
}

function socketToDnsFamily(family) {
  if (family === 'IPv4') return 4;
  if (family === 'IPv6') return 6;
  return family;
}

function lookupAndConnect(socket, options) {
  const { localAddress, localPort } = options;
  const host = options.host || 'localhost';
  let { port } = options;
  if (localAddress && !net.isIP(localAddress)) throw v.invalidIpAddress(localAddress);
  if (localPort) v.validateNumber(localPort, 'options.localPort');
  if (port !== undefined) {
    if (typeof port !== 'number' && typeof port !== 'string') throw v.invalidArgType('options.port', ['number', 'string'], port);
    v.validatePort(port);
  }
  port |= 0;
  let autoSelectFamily = options.autoSelectFamily;
  if (autoSelectFamily !== undefined && autoSelectFamily !== null) v.validateBoolean(autoSelectFamily, 'options.autoSelectFamily');
  else autoSelectFamily = net.getDefaultAutoSelectFamily ? net.getDefaultAutoSelectFamily() : false;
  const attemptTimeout = options.autoSelectFamilyAttemptTimeout;
  if (attemptTimeout !== undefined && attemptTimeout !== null) v.validateInt32(attemptTimeout, 'options.autoSelectFamilyAttemptTimeout', 1);
  const local = localAddress || localPort ? { localAddress, localPort } : null;

  const family = net.isIP(host);
  // Everything that throws is checked before the socket counts as connecting (it then
  // holds the process open).
  if (!family && options.lookup !== undefined && options.lookup !== null) v.validateFunction(options.lookup, 'options.lookup');
  const dnsopts = { family: socketToDnsFamily(options.family), hints: options.hints || 0 };
  if (!family && !options.lookup && dnsopts.family !== undefined && dnsopts.family !== 0 && dnsopts.family !== 4 && dnsopts.family !== 6) {
    // The sidecar resolves the name as it connects: `family` is checked as dns.lookup does.
    throw v.invalidArgValue('options.family', dnsopts.family, 'must be one of: 0, 4, 6');
  }
  socket._startConnect();
  if (family) {
    process.nextTick(() => {
      if (socket.connecting) socket._connectTo({ host, port, ...local });
    });
    return;
  }
  if (dnsopts.family !== 4 && dnsopts.family !== 6 && dnsopts.hints === 0) dnsopts.hints = dns.ADDRCONFIG;
  socket._host = host;
  if (!options.lookup) {
    socket._lookupHost = host;
    process.nextTick(() => {
      if (socket.connecting) socket._connectTo({ host, port, ...local });
    });
    return;
  }
  const lookup = options.lookup;
  if (dnsopts.family !== 4 && dnsopts.family !== 6 && !localAddress && autoSelectFamily) {
    dnsopts.all = true;
    lookup(host, dnsopts, (err, addresses) => onAddresses(socket, host, port, local, options, err, addresses));
    return;
  }
  lookup(host, dnsopts, (err, ip, addressType) => {
    socket.emit('lookup', err, ip, addressType, host);
    if (!socket.connecting) return;
    if (err) process.nextTick(() => socket.destroy(err));
    else if (!net.isIP(ip)) process.nextTick(() => socket.destroy(v.invalidIpAddress(ip)));
    else if (addressType !== 4 && addressType !== 6) process.nextTick(() => socket.destroy(invalidFamily(addressType, options)));
    else socket._connectTo({ host: ip, port, ...local });
  });
}

function invalidFamily(addressType, options) {
  return nodeError('ERR_INVALID_ADDRESS_FAMILY', `Invalid address family: ${addressType} ${options.host}:${options.port}`, RangeError);
}

// The lookup gave every address (autoSelectFamily): try them in turn.
function onAddresses(socket, host, port, local, options, err, addresses) {
  if (!socket.connecting) return;
  if (err) {
    socket.emit('lookup', err, undefined, undefined, host);
    process.nextTick(() => socket.destroy(err));
    return;
  }
  const valid = [[], []];
  let order = null;
  for (let i = 0; i < addresses.length; i++) {
    const { address: ip, family } = addresses[i];
    socket.emit('lookup', err, ip, family, host);
    if (!socket.connecting) return;
    if (net.isIP(ip) && (family === 4 || family === 6)) {
      order = order || (family === 6 ? { 6: 0, 4: 1 } : { 4: 0, 6: 1 });
      const group = valid[order[family]];
      if (!group.some((a) => a.address === ip)) group.push({ address: ip, family });
    }
  }
  if (valid[0].length === 0 && valid[1].length === 0) {
    const first = addresses[0] || {};
    if (!net.isIP(first.address)) process.nextTick(() => socket.destroy(v.invalidIpAddress(first.address)));
    else process.nextTick(() => socket.destroy(invalidFamily(first.family, options)));
    return;
  }
  const toAttempt = [];
  for (let i = 0; i < Math.max(valid[0].length, valid[1].length); i++) {
    if (i < valid[0].length) toAttempt.push(valid[0][i]);
    if (i < valid[1].length) toAttempt.push(valid[1][i]);
  }
  if (toAttempt.length === 1) {
    socket._connectTo({ host: toAttempt[0].address, port, ...local });
    return;
  }
  socket.autoSelectFamilyAttemptedAddresses = [];
  socket._connectTo({ host: toAttempt[0].address, port, ...local }, { rest: toAttempt.slice(1), errors: [] });
}

// `signal` (the Socket constructor's option): abort destroys the socket.
function addAbortSignal(socket, signal) {
  v.validateAbortSignal(signal, 'signal');
  const onAbort = () => socket.destroy(new v.AbortError(undefined, { cause: signal.reason }));
  if (signal.aborted) {
    process.nextTick(onAbort);
    return;
  }
  signal.addEventListener('abort', onAbort, { once: true });
  socket.once('close', () => signal.removeEventListener('abort', onAbort));
}

// The guest Socket's connect attempts: _connectTo (one address), _connectBlocking (poll
// mode), _connectFailed (the next address, or the error as Node reports it), _reset
// (reconnect). `deps.toSysError` turns a call's wire error into a Node error.
function defineAttempts(Socket, { toSysError }) {
  const proto = Socket.prototype;
  // Connects to `where` ({ host: an IP or a name the sidecar resolves, port } or
  // { path }); `attempts` ({ rest, errors }): the addresses still to try if this fails.
  proto._connectTo = function (where, attempts = null) {
    this._where = where;
    this._attempts = attempts;
    if (attempts && this.autoSelectFamilyAttemptedAddresses) this.autoSelectFamilyAttemptedAddresses.push(`${where.host}:${where.port}`);
    const params = where.path !== undefined ? { path: where.path } : { host: where.host, port: where.port };
    if (this._session.mode === 'poll') return this._connectBlocking(params);
    try {
      this._connectRequest = this._session.send('net.connect', params);
      this._session.requests.set(this._connectRequest, this);
    } catch (e) {
      process.nextTick(() => this._connectFailed(toSysError(e, 'connect', where)));
    }
    return this;
  };

  // Poll mode: a blocking net.connect, as the old polyfill made it (a `noreply` connect
  // reports its socket id in an event, and a poll-mode guest polls by socket id). The
  // socket is polled from now on; its `connect` event, polled, completes the connect.
  proto._connectBlocking = function (params) {
    let result;
    try {
      result = this._session.call('net.connect', params).result;
    } catch (e) {
      process.nextTick(() => this._connectFailed(toSysError(e, 'connect', this._where)));
      return this;
    }
    this._local = result.local;
    this._remote = result.remote;
    this._attach(result.socket);
    return this;
  };

  // A connect attempt failed: the next address (autoSelectFamily), or the socket fails
  // as Node's does (a name that did not resolve: 'lookup' with the error first).
  proto._connectFailed = function (err) {
    if (this.destroyed || !this.connecting) return;
    const attempts = this._attempts;
    if (attempts && attempts.rest.length > 0) {
      attempts.errors.push(err);
      const next = attempts.rest.shift();
      this._connectTo({ ...this._where, host: next.address }, attempts);
      return;
    }
    if (attempts && attempts.errors.length > 0) {
      attempts.errors.push(err);
      const all = new AggregateError(attempts.errors, err.message);
      all.code = err.code;
      this.destroy(all);
      return;
    }
    const host = this._lookupHost;
    if (host !== undefined && RESOLVE_ERRORS.has(err.code)) {
      this._lookupHost = undefined;
      const lookupErr = sysError(err.code, 'getaddrinfo', host, { hostname: host });
      this.emit('lookup', lookupErr, undefined, undefined, host);
      this.destroy(lookupErr);
      return;
    }
    this.destroy(err);
  };

  // Reconnect (connect() on a closed socket): back to a new socket's state, as Node's
  // connect() does with _undestroy().
  proto._reset = function () {
    this._undestroy();
    this._id = null;
    this._closed = false;
    this._gotEnd = false;
    this._local = null;
    this._remote = null;
    this._owed = 0;
    this._held = false;
    this._pressured = false;
    this._unsynced = 0;
    this._sentNoDelay = null;
    this._sentKeepAlive = null;
    this._pendingWrite = null;
    this._pendingFinal = null;
    this._awaitDrain = null;
    this._readStopped = false;
    if (this.write !== proto.write) this.write = proto.write;
  };
}

module.exports = { install, connect, addAbortSignal, defineAttempts, RESOLVE_ERRORS };
