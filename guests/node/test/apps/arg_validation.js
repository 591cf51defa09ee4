'use strict';
// Misused net APIs throw Node's errors: the same class, code and message.
const net = require('net');
const assert = require('assert');

const cases = [
  [() => net.connect(), { code: 'ERR_MISSING_ARGS', name: 'TypeError', message: 'The "options" or "port" or "path" argument must be specified' }],
  [() => net.connect({ host: 'localhost' }), { code: 'ERR_MISSING_ARGS' }],
  [() => net.connect({ port: true }), { code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError', message: 'The "options.port" property must be one of type number or string. Received type boolean (true)' }],
  [() => net.connect({ port: 70000 }), { code: 'ERR_SOCKET_BAD_PORT', name: 'RangeError', message: 'Port should be >= 0 and < 65536. Received type number (70000).' }],
  [() => net.connect({ port: -1 }), { code: 'ERR_SOCKET_BAD_PORT' }],
  [() => net.connect({ port: 80, host: 'a.example', lookup: 5 }), { code: 'ERR_INVALID_ARG_TYPE', message: 'The "options.lookup" property must be of type function. Received type number (5)' }],
  [() => net.connect({ port: 80, localAddress: 'abc' }), { code: 'ERR_INVALID_IP_ADDRESS', name: 'TypeError', message: 'Invalid IP address: abc' }],
  [() => net.connect({ port: 80, localPort: 'abc' }), { code: 'ERR_INVALID_ARG_TYPE', message: "The \"options.localPort\" property must be of type number. Received type string ('abc')" }],
  [() => net.connect({ port: 80, autoSelectFamily: 1 }), { code: 'ERR_INVALID_ARG_TYPE', message: 'The "options.autoSelectFamily" property must be of type boolean. Received type number (1)' }],
  [() => net.connect({ path: 5 }), { code: 'ERR_INVALID_ARG_TYPE', message: 'The "options.path" property must be of type string. Received type number (5)' }],
  [() => net.connect({ port: 80, signal: 1 }), { code: 'ERR_INVALID_ARG_TYPE', message: 'The "signal" argument must be an instance of AbortSignal. Received type number (1)' }],
  [() => net.connect({ port: 80, host: 'a.example', family: 5 }), { code: 'ERR_INVALID_ARG_VALUE', name: 'TypeError' }],
  [() => net.createServer().listen({}), { code: 'ERR_INVALID_ARG_VALUE', name: 'TypeError' }],
  [() => net.createServer().listen({ port: 1.5 }), { code: 'ERR_SOCKET_BAD_PORT', name: 'RangeError' }],
  [() => net.createServer().listen({ fd: -5 }), { code: 'ERR_INVALID_ARG_VALUE' }],
  [() => new net.Socket().write(5), { code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError' }],
  [() => new net.Socket().setTimeout(-1), { code: 'ERR_OUT_OF_RANGE', name: 'RangeError', message: 'The value of "msecs" is out of range. It must be a non-negative finite number. Received -1' }],
  [() => new net.Socket().setTimeout('x'), { code: 'ERR_INVALID_ARG_TYPE', message: "The \"msecs\" argument must be of type number. Received type string ('x')" }],
  [() => new net.Socket().setTimeout(10, 5), { code: 'ERR_INVALID_ARG_TYPE', message: 'The "callback" argument must be of type function. Received type number (5)' }],
  [() => new net.Server(5), { code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError', message: 'The "options" argument must be of type object. Received type number (5)' }],
  [() => net.createServer().getConnections(5), { code: 'ERR_INVALID_ARG_TYPE', message: 'The "callback" argument must be of type function. Received type number (5)' }],
];
for (const [fn, expected] of cases) {
  assert.throws(fn, expected);
}
// The errors print as Node's do: "TypeError [ERR_MISSING_ARGS]: ...".
try {
  net.connect();
} catch (err) {
  assert.match(String(err), /^TypeError \[ERR_MISSING_ARGS\]: /);
  assert.match(err.stack, /^TypeError \[ERR_MISSING_ARGS\]: /);
  assert.deepStrictEqual(Object.keys(err), ['code']);
}
console.log('arg validation ok');
