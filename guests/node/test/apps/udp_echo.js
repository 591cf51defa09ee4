'use strict';
// UDP echo: a bound server answers each datagram to its sender; one client sends to an
// address, a second one connect()s first, then disconnect()s and sends to an address
// again. Datagram boundaries are kept.
const dgram = require('dgram');
const assert = require('assert');

const server = dgram.createSocket('udp4');
server.on('message', (msg, rinfo) => {
  assert.strictEqual(rinfo.address, '127.0.0.1');
  assert.strictEqual(rinfo.size, msg.length);
  server.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address);
});

server.bind(0, '127.0.0.1', () => {
  const { port, address, family } = server.address();
  assert.strictEqual(address, '127.0.0.1');
  assert.strictEqual(family, 'IPv4');
  const client = dgram.createSocket('udp4');
  const replies = [];
  client.on('message', (msg) => {
    replies.push(msg.toString());
    if (replies.length < 2) return;
    assert.deepStrictEqual(replies.sort(), ['echo:one', 'echo:two']);
    client.close();
    connectedClient();
  });
  client.send('one', port, '127.0.0.1', (err, bytes) => {
    assert.ifError(err);
    assert.strictEqual(bytes, 3);
    assert.ok(client.address().port > 0, 'bound by the first send');
    client.send(Buffer.from('two'), port, '127.0.0.1');
  });

  function connectedClient() {
    const connected = dgram.createSocket('udp4');
    connected.connect(port, '127.0.0.1', () => {
      assert.strictEqual(connected.remoteAddress().port, port);
      connected.send('three');
    });
    const expected = ['echo:three', 'echo:four'];
    connected.on('message', (msg) => {
      assert.strictEqual(msg.toString(), expected.shift());
      if (expected.length === 1) {
        connected.disconnect();
        assert.throws(() => connected.remoteAddress(), { code: 'ERR_SOCKET_DGRAM_NOT_CONNECTED' });
        assert.throws(() => connected.disconnect(), { code: 'ERR_SOCKET_DGRAM_NOT_CONNECTED' });
        connected.send('four', port, '127.0.0.1');
        return;
      }
      connected.close(() => server.close(() => console.log('udp echo ok')));
    });
  }
});
