'use strict';
// Node-shaped errors from the sidecar's { code, message }: `.code` is the POSIX name
// programs match on, `.errno` the negative number Node reports, `.syscall` the operation.

const { errno: ERRNO } = require('os').constants;
const util = require('util');

// libuv's text for a code ("address already in use"), as Node's UVException shows it.
function uvMessage(code) {
  const entry = ERRNO[code] !== undefined ? util.getSystemErrorMap().get(-ERRNO[code]) : undefined;
  return entry ? entry[1] : undefined;
}

// An error as Node's libuv wrappers build them: "connect ECONNREFUSED 127.0.0.1:8081".
// With `uv`, as Node's UVException builds them: "listen EADDRINUSE: address already in
// use 127.0.0.1:8080".
function sysError(code, syscall, detail, fields, uv = false) {
  const text = uv ? uvMessage(code) : undefined;
  const head = text ? `${syscall} ${code}: ${text}` : `${syscall} ${code}`;
  const message = detail ? `${head} ${detail}` : head;
  const err = new Error(message);
  err.errno = ERRNO[code] !== undefined ? -ERRNO[code] : undefined;
  err.code = code;
  err.syscall = syscall;
  if (fields) Object.assign(err, fields);
  return err;
}

// From a wire error object and the operation that failed. `where` is an endpoint
// ({ host, port } or { path }) or undefined.
function fromWire(wire, syscall, where, { uv = false } = {}) {
  const code = wire && typeof wire.code === 'string' ? wire.code : 'EIO';
  if (where && where.path !== undefined) return sysError(code, syscall, where.path, { address: where.path }, uv);
  if (where && where.port !== undefined) {
    const address = where.address !== undefined ? where.address : where.host;
    return sysError(code, syscall, `${address}:${where.port}`, { address, port: where.port }, uv);
  }
  const err = sysError(code, syscall);
  if (wire && wire.message) err.message = `${syscall} ${code}: ${wire.message}`;
  return err;
}

// Errors Node throws with its own codes (ERR_*), for misuse of the API.
// As Node's: the stack and toString() read "TypeError [CODE]: message".
function nodeError(code, message, Type = Error) {
  const err = new Type(message);
  Object.defineProperty(err, 'name', { value: `${Type.name} [${code}]`, configurable: true, writable: true });
  void err.stack; // the stack's first line is made now, with that name
  delete err.name;
  err.code = code;
  Object.defineProperty(err, 'toString', { value: () => `${err.name} [${code}]: ${err.message}`, configurable: true, writable: true });
  return err;
}

module.exports = { sysError, fromWire, nodeError };
