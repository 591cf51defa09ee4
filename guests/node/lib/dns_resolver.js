'use strict';
// Closes c-ares, Node's own DNS client: dns.Resolver, dns.promises.Resolver,
// dns.resolve*() and dns.reverse() send UDP queries straight to a DNS server, outside
// the sidecar, which offers only `dns.lookup` (docs/PROTOCOL.md). So does
// dns.lookupService() (getnameinfo through the host's resolver). Each fails as Node
// reports a failed query: the callback gets the error, the promise rejects, on a later
// tick; `.code` is ENOTSUP and the message says to use dns.lookup.
//
// The queries are refused on the prototype of the native channel every resolver holds,
// so a Resolver reached any way (the module's default one, new ones, subclasses) fails.

const dns = require('dns');
const { sysError } = require('./errors');

const HINT = 'pushnet: dns.Resolver, dns.resolve*(), dns.reverse() and dns.lookupService() would query a DNS server directly, outside the sidecar; use dns.lookup or dns.promises.lookup (resolved by the sidecar)';

function refusal(syscall, hostname) {
  const err = sysError('ENOTSUP', syscall, hostname, { hostname });
  err.message = `${err.message} (${HINT})`;
  return err;
}

function install() {
  const channel = Object.getPrototypeOf(new dns.Resolver()._handle);
  for (const name of Object.getOwnPropertyNames(channel)) {
    if (!/^query[A-Z]/.test(name) && name !== 'getHostByAddr') continue;
    if (typeof channel[name] !== 'function') continue;
    channel[name] = function (req, hostname) {
      const err = refusal(name, hostname);
      // A promise query carries resolve/reject, a callback query its callback.
      process.nextTick(() => (typeof req.reject === 'function' ? req.reject(err) : req.callback.call(req, err)));
      return 0;
    };
  }
  const lookupService = dns.lookupService;
  dns.lookupService = function (address, port, callback) {
    if (typeof callback !== 'function') return lookupService.call(this, address, port, callback); // Node's own argument errors
    process.nextTick(callback, refusal('getnameinfo', address));
    return undefined;
  };
  dns.promises.lookupService = (address) => Promise.reject(refusal('getnameinfo', address));
}

module.exports = { install };
