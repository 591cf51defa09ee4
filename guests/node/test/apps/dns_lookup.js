'use strict';
// dns.lookup and dns.promises.lookup: localhost and IP literals.
const dns = require('dns');
const assert = require('assert');

dns.lookup('localhost', { family: 4 }, (err, address, family) => {
  assert.ifError(err);
  assert.strictEqual(address, '127.0.0.1');
  assert.strictEqual(family, 4);
  dns.lookup('127.0.0.1', (err2, literal, family2) => {
    assert.ifError(err2);
    assert.strictEqual(literal, '127.0.0.1');
    assert.strictEqual(family2, 4);
    promises();
  });
});

async function promises() {
  const all = await dns.promises.lookup('localhost', { all: true });
  assert.ok(all.some((a) => a.address === '127.0.0.1' && a.family === 4), JSON.stringify(all));
  const one = await require('dns/promises').lookup('::1');
  assert.deepStrictEqual(one, { address: '::1', family: 6 });
  console.log('dns ok');
}
