'use strict';
// tls.connect() whose options are rejected throws at once, and leaves nothing open: the
// program then exits by itself (the server closes once nothing is connected to it).
const net = require('net');
const tls = require('tls');
const assert = require('assert');

const server = net.createServer((socket) => socket.destroy());
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const base = { port, host: '127.0.0.1' };
  assert.throws(() => tls.connect({ ...base, ciphers: 'no-such-cipher' }), /no cipher match/i);
  assert.throws(() => tls.connect({ ...base, minVersion: 'TLSv0.9' }), { code: 'ERR_TLS_INVALID_PROTOCOL_VERSION' });
  assert.throws(() => tls.connect({ ...base, secureProtocol: 'NoSuchMethod' }));
  assert.throws(() => tls.connect({ ...base, pfx: Buffer.from('not a pfx') }));
  assert.throws(() => tls.connect({ ...base, key: 'not a key', passphrase: 'x' }));
  server.close(() => console.log('tls bad options ok'));
});
