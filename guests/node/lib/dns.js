'use strict';
// dns.lookup and dns.promises.lookup over the sidecar's `dns.lookup`: names resolve
// inside the guest's VM (`localhost` → the VM's loopback), other names through the
// host's resolver. The answer is synchronous; the callback runs on the next tick.

const net = require('net');
const { session } = require('./handle');
const { sysError, nodeError } = require('./errors');

function parseOptions(options) {
  if (typeof options === 'number') return { family: options, all: false };
  if (!options || typeof options !== 'object') return { family: 0, all: false };
  let family = options.family || 0;
  if (family === 'IPv4') family = 4;
  else if (family === 'IPv6') family = 6;
  if (family !== 0 && family !== 4 && family !== 6) {
    throw nodeError('ERR_INVALID_ARG_VALUE', `The property 'options.family' must be one of: 0, 4, 6. Received ${family}`, TypeError);
  }
  return { family, all: Boolean(options.all) };
}

// → { addresses: [{ address, family }] } or throws a Node-shaped error.
function resolve(hostname, family) {
  const ipFamily = net.isIP(hostname);
  if (ipFamily) return [{ address: hostname, family: ipFamily }];
  try {
    return session().call('dns.lookup', { host: hostname, family }).result.addresses;
  } catch (e) {
    if (!e.wire) throw e;
    throw sysError(e.wire.code, 'getaddrinfo', hostname, { hostname });
  }
}

function lookup(hostname, options, callback) {
  if (typeof options === 'function') {
    callback = options;
    options = 0;
  }
  if (typeof callback !== 'function') {
    throw nodeError('ERR_INVALID_ARG_TYPE', 'The "callback" argument must be of type function.', TypeError);
  }
  if (hostname !== undefined && hostname !== null && typeof hostname !== 'string') {
    throw nodeError('ERR_INVALID_ARG_TYPE', 'The "hostname" argument must be of type string.', TypeError);
  }
  const { family, all } = parseOptions(options);
  if (!hostname) {
    process.nextTick(callback, null, all ? [] : null, family === 6 ? 6 : 4);
    return {};
  }
  let addresses;
  try {
    addresses = resolve(hostname, family);
  } catch (err) {
    process.nextTick(callback, err);
    return {};
  }
  if (all) process.nextTick(callback, null, addresses);
  else process.nextTick(callback, null, addresses[0].address, addresses[0].family);
  return {};
}

function lookupPromise(hostname, options) {
  return new Promise((resolvePromise, reject) => {
    lookup(hostname, options, (err, address, family) => {
      if (err) reject(err);
      else if (Array.isArray(address)) resolvePromise(address);
      else resolvePromise({ address, family });
    });
  });
}

module.exports = { lookup, lookupPromise };
