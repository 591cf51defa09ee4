'use strict';
// Writes made while the socket is still connecting are queued, counted in
// bytesWritten at once, and sent once connected, in order; end() before connect too.
const net = require('net');
const assert = require('assert');

const server = net.createServer((socket) => {
  let got = '';
  socket.on('data', (d) => (got += d));
  socket.on('end', () => {
    assert.strictEqual(got, 'hello world!');
    socket.end();
  });
});
server.listen(0, '127.0.0.1', () => {
  const socket = net.connect(server.address().port, '127.0.0.1');
  assert.strictEqual(socket.connecting, true);
  socket.write('hello ');
  socket.write(Buffer.from('world'));
  assert.strictEqual(socket.bytesWritten, 11);
  socket.end('!');
  assert.strictEqual(socket.bytesWritten, 12);
  let finished = false;
  socket.on('finish', () => (finished = true));
  socket.resume();
  socket.on('close', (hadError) => {
    assert.strictEqual(hadError, false);
    assert.ok(finished);
    assert.strictEqual(socket.bytesWritten, 12);
    server.close(() => console.log('write before connect ok'));
  });
});
