'use strict';
// Node-shaped errors from the sidecar's { code, message }: `.code` is the POSIX name
// programs match on, `.errno` the negative number Node reports, `.syscall` the operation.

const { errno: ERRNO } = require('os').constants;

// An error as Node's libuv wrappers build them: "connect ECONNREFUSED 127.0.0.1:8081".
function sysError(code, syscall, detail, fields) {
  const message = detail ? `${syscall} ${code} ${detail}` : `${syscall} ${code}`;
  const err = new Error(message);
  err.errno = ERRNO[code] !== undefined ? -ERRNO[code] : undefined;
  err.code = code;
  err.syscall = syscall;
  if (fields) Object.assign(err, fields);
  return err;
}

// From a wire error object and the operation that failed. `where` is an endpoint
// ({ host, port } or { path }) or undefined.
function fromWire(wire, syscall, where) {
  const code = wire && typeof wire.code === 'string' ? wire.code : 'EIO';
  if (where && where.path !== undefined) return sysError(code, syscall, where.path, { address: where.path });
  if (where && where.port !== undefined) {
    const address = where.address !== undefined ? where.address : where.host;
    return sysError(code, syscall, `${address}:${where.port}`, { address, port: where.port });
  }
  const err = sysError(code, syscall);
  if (wire && wire.message) err.message = `${syscall} ${code}: ${wire.message}`;
  return err;
}

// Errors Node throws with its own codes (ERR_*), for misuse of the API.
function nodeError(code, message, Type = Error) {
  const err = new Type(message);
  err.code = code;
  return err;
}

module.exports = { sysError, fromWire, nodeError };
