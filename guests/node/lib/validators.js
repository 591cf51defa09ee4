'use strict';
// Node's argument checks, with Node's error classes, codes and messages (those of its
// internal/validators and internal/errors, which programs cannot require): a program
// that matches `err.code` or `err.message` of a misused API sees what it would see
// under plain Node.

const util = require('util');
const { nodeError } = require('./errors');

// How Node's messages describe the value received ("Received type number (-1)").
function describeReceived(value) {
  if (value === null || value === undefined) return ` Received ${value}`;
  if (typeof value === 'function') return ` Received function ${value.name}`;
  if (typeof value === 'object') {
    if (value.constructor && value.constructor.name) return ` Received an instance of ${value.constructor.name}`;
    return ` Received ${util.inspect(value, { depth: -1 })}`;
  }
  let inspected = util.inspect(value, { colors: false });
  if (inspected.length > 28) inspected = `${inspected.slice(0, 25)}...`;
  return ` Received type ${typeof value} (${inspected})`;
}

function subject(name) {
  return name.includes('.') ? `The "${name}" property` : `The "${name}" argument`;
}

const INSTANCE = /^[A-Z]/;

// expected: a type name ('number'), a class name ('AbortSignal'), or a list of them.
function invalidArgType(name, expected, actual) {
  const list = Array.isArray(expected) ? expected : [expected];
  const types = list.filter((t) => !INSTANCE.test(t));
  const instances = list.filter((t) => INSTANCE.test(t));
  const parts = [];
  if (types.length > 0) {
    parts.push(types.length === 1 ? `of type ${types[0]}` : `one of type ${types.slice(0, -1).join(', ')} or ${types[types.length - 1]}`);
  }
  if (instances.length > 0) {
    const what = instances.length === 1 ? `an instance of ${instances[0]}` : `an instance of ${instances.slice(0, -1).join(', ')} or ${instances[instances.length - 1]}`;
    parts.push(what);
  }
  const msg = `${subject(name)} must be ${parts.join(' or ')}.${describeReceived(actual)}`;
  return nodeError('ERR_INVALID_ARG_TYPE', msg, TypeError);
}

function invalidArgValue(name, value, reason = 'is invalid') {
  const kind = name.includes('.') ? 'property' : 'argument';
  let inspected = util.inspect(value);
  if (inspected.length > 128) inspected = `${inspected.slice(0, 128)}...`;
  return nodeError('ERR_INVALID_ARG_VALUE', `The ${kind} '${name}' ${reason}. Received ${inspected}`, TypeError);
}

function outOfRange(name, range, value) {
  return nodeError('ERR_OUT_OF_RANGE', `The value of "${name}" is out of range. It must be ${range}. Received ${util.inspect(value)}`, RangeError);
}

function validateFunction(value, name) {
  if (typeof value !== 'function') throw invalidArgType(name, 'function', value);
}

function validateBoolean(value, name) {
  if (typeof value !== 'boolean') throw invalidArgType(name, 'boolean', value);
}

function validateNumber(value, name) {
  if (typeof value !== 'number') throw invalidArgType(name, 'number', value);
}

function validateString(value, name) {
  if (typeof value !== 'string') throw invalidArgType(name, 'string', value);
}

function validateInt32(value, name, min = -2147483648, max = 2147483647) {
  if (typeof value !== 'number') throw invalidArgType(name, 'number', value);
  if (!Number.isInteger(value)) throw outOfRange(name, 'an integer', value);
  if (value < min || value > max) throw outOfRange(name, `>= ${min} && <= ${max}`, value);
}

function validateAbortSignal(signal, name) {
  if (signal !== undefined && (signal === null || typeof signal !== 'object' || !('aborted' in signal))) {
    throw invalidArgType(name, 'AbortSignal', signal);
  }
}

// As Node's validatePort: a number or a non-empty numeric string in [0, 65536).
function validatePort(port, name = 'Port', allowZero = true) {
  const ok =
    (typeof port === 'number' || (typeof port === 'string' && port.trim().length !== 0)) &&
    +port === +port >>> 0 &&
    port <= 0xffff &&
    (allowZero || +port !== 0);
  if (!ok) {
    throw nodeError('ERR_SOCKET_BAD_PORT', `${name} should be >= 0 and < 65536. Received ${describeReceived(port).slice(' Received '.length)}.`, RangeError);
  }
  return port | 0;
}

function invalidIpAddress(ip) {
  return nodeError('ERR_INVALID_IP_ADDRESS', `Invalid IP address: ${ip}`, TypeError);
}

function missingArgs(...names) {
  // As Node's ERR_MISSING_ARGS given one list of alternatives.
  const list = names.map((n) => `"${n}"`).join(' or ');
  return nodeError('ERR_MISSING_ARGS', `The ${list} argument must be specified`, TypeError);
}

// As Node's AbortError (the class is not exported): name 'AbortError', code ABORT_ERR.
class AbortError extends Error {
  constructor(message = 'The operation was aborted', options = undefined) {
    super(message, options);
    this.code = 'ABORT_ERR';
    this.name = 'AbortError';
  }
}

module.exports = {
  describeReceived,
  invalidArgType,
  invalidArgValue,
  outOfRange,
  validateFunction,
  validateBoolean,
  validateNumber,
  validateString,
  validateInt32,
  validateAbortSignal,
  validatePort,
  invalidIpAddress,
  missingArgs,
  AbortError,
};
