'use strict';
// net.Server#listen over the sidecar, with Node's own argument handling.
//
// Node's Server.prototype.listen sorts out every signature ((port, host, backlog, cb),
// (options, cb), (path, cb), (handle), listen(), listen(cb), port 0, `signal`,
// `ipv6Only` ...), validates with Node's errors, resolves a host name with dns.lookup
// (the guest's), and then hands the result to `this._listen2(address, port,
// addressType, backlog, fd, flags)`, a prototype method "still named like this to
// avoid breaking code that wraps this method". Its code touches no native handle
// before that call except through `this._handle`, so the guest net.Server uses Node's
// listen itself and supplies _listen2: a synchronous net.listen, then 'listening' (or
// 'error') on the next tick, as Node's setupListenHandle does.
//
// Not possible by design: listening on an inherited fd (`{ fd }`) or a native handle
// (there are none in a guest): 'error' ENOTSUP / ERR_INVALID_ARG_VALUE.

const { fromWire, sysError } = require('./errors');
const { updateRef } = require('./handle');

function install(Server, nodeListen) {
  if (typeof nodeListen !== 'function') throw new Error('pushnet: this Node has no net.Server.prototype.listen');
  Server.prototype.listen = nodeListen;
  Server.prototype._listen2 = listen2;
}

// As Node's setupListenHandle (address null: the unspecified address; port -1 with an
// address: a Unix path; fd: an inherited descriptor).
function listen2(address, port, addressType, backlog, fd, flags) {
  if (typeof fd === 'number' && fd >= 0) {
    const err = sysError('ENOTSUP', 'listen', `fd ${fd} (a guest has no file descriptors to listen on)`);
    process.nextTick(() => this.emit('error', err));
    return;
  }
  let params;
  if (port === -1 && typeof address === 'string') {
    params = { path: address };
  } else {
    params = { port };
    if (address) params.host = address;
  }
  if (backlog) params.backlog = backlog;
  // flags: UV_TCP_IPV6ONLY (1). An in-VM listener on `::` takes IPv4 peers as well;
  // the flag is not sent (documented in docs/node-compat.md).
  void flags;
  void addressType;
  let reply;
  try {
    reply = this._session.call('net.listen', params).result;
  } catch (e) {
    const where = params.path !== undefined ? params : { address: params.host || '::', port: params.port };
    const err = e.wire ? fromWire(e.wire, 'listen', where, { uv: true }) : e;
    process.nextTick(() => this.emit('error', err));
    return;
  }
  this._id = reply.server;
  this._local = reply.local;
  this._active = true;
  this._session.register(this._id, this);
  updateRef(this);
  process.nextTick(() => {
    if (this._id !== null) this.emit('listening');
  });
}

module.exports = { install };
