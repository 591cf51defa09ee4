'use strict';
// A socket's own listeners and state as Node's: one 'end' listener of its own,
// connecting / pending / readyState through its life, bytesRead; connect() again on a
// closed socket reconnects it.
const net = require('net');
const assert = require('assert');

const server = net.createServer((s) => {
  // An accepted socket carries Node's own 'end' listener and nothing else of its own.
  assert.strictEqual(s.listenerCount('end'), 1);
  assert.strictEqual(s.listenerCount('close'), 0);
  assert.strictEqual(s.listenerCount('data'), 0);
  s.end('four');
});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const socket = new net.Socket();
  assert.strictEqual(socket.listenerCount('end'), 1);
  assert.strictEqual(socket.connecting, false);
  assert.strictEqual(socket.pending, true);
  assert.strictEqual(socket.bytesRead, 0);
  assert.strictEqual(socket.bytesWritten, 0);
  socket.connect(port, '127.0.0.1');
  assert.strictEqual(socket.connecting, true);
  assert.strictEqual(socket.readyState, 'opening');
  socket.once('connect', () => {
    assert.strictEqual(socket.connecting, false);
    assert.strictEqual(socket.pending, false);
    assert.strictEqual(socket.readyState, 'open');
  });
  socket.resume();
  socket.once('close', () => {
    assert.strictEqual(socket.bytesRead, 4);
    assert.strictEqual(socket.readyState, 'closed');
    assert.strictEqual(socket.destroyed, true);
    // Again, on the same object.
    let again = '';
    socket.connect(port, '127.0.0.1', () => assert.strictEqual(socket.destroyed, false));
    socket.on('data', (d) => (again += d));
    socket.once('close', () => {
      assert.strictEqual(again, 'four');
      server.close(() => console.log('socket state ok'));
    });
  });
});
