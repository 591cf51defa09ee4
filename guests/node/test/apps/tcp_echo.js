'use strict';
// TCP echo in one process: a net.Server echoes, a client sends small messages and one
// 64 KiB message and checks what comes back, addresses and byte counts included.
const net = require('net');
const assert = require('assert');

const server = net.createServer((socket) => {
  assert.strictEqual(socket.remoteAddress, '127.0.0.1');
  assert.strictEqual(socket.localPort, server.address().port);
  socket.pipe(socket);
});

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  assert.strictEqual(address.address, '127.0.0.1');
  assert.strictEqual(address.family, 'IPv4');
  assert.ok(address.port > 0);
  const big = Buffer.alloc(64 * 1024, 7);
  const expected = Buffer.concat([Buffer.from('ping 1\nping 2\n'), big]);
  const client = net.createConnection({ port: address.port, host: '127.0.0.1' });
  client.setNoDelay(true);
  let connected = false;
  client.on('connect', () => {
    connected = true;
    assert.strictEqual(client.remotePort, address.port);
    assert.strictEqual(client.remoteAddress, '127.0.0.1');
    assert.strictEqual(client.address().address, '127.0.0.1');
    client.write('ping 1\n');
    client.write('ping 2\n');
    client.end(big);
  });
  const chunks = [];
  client.on('data', (chunk) => chunks.push(chunk));
  client.on('end', () => {
    const got = Buffer.concat(chunks);
    assert.ok(connected);
    assert.strictEqual(got.length, expected.length);
    assert.ok(got.equals(expected), 'echoed bytes differ');
    assert.strictEqual(client.bytesRead, expected.length);
    assert.strictEqual(client.bytesWritten, expected.length);
  });
  client.on('close', (hadError) => {
    assert.strictEqual(hadError, false);
    server.close(() => console.log('tcp echo ok'));
  });
});
