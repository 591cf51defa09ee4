'use strict';
// Code that reaches into socket._handle / server._handle finds an object while the
// socket or server is open (null once closed), with fd, setNoDelay, setKeepAlive,
// getsockname and getpeername.
const net = require('net');
const assert = require('assert');

const server = net.createServer((socket) => {
  const h = socket._handle;
  assert.ok(h, 'an accepted socket has a handle');
  const peer = {};
  assert.strictEqual(h.getpeername(peer), 0);
  assert.strictEqual(peer.port, socket.remotePort);
  socket.end('bye');
});
assert.strictEqual(server._handle, null);
server.listen(0, '127.0.0.1', () => {
  assert.ok(server._handle, 'a listening server has a handle');
  assert.strictEqual(typeof server._handle.fd, 'number');
  const name = {};
  assert.strictEqual(server._handle.getsockname(name), 0);
  assert.strictEqual(name.port, server.address().port);
  const socket = net.connect(server.address().port, '127.0.0.1');
  assert.ok(socket._handle, 'a connecting socket has a handle');
  socket.on('connect', () => {
    const h = socket._handle;
    assert.strictEqual(typeof h.fd, 'number');
    assert.strictEqual(h.setNoDelay(true), 0);
    assert.strictEqual(h.setKeepAlive(true, 10), 0);
    const local = {};
    assert.strictEqual(h.getsockname(local), 0);
    assert.strictEqual(local.port, socket.localPort);
    assert.strictEqual(local.address, socket.localAddress);
    const remote = {};
    assert.strictEqual(h.getpeername(remote), 0);
    assert.strictEqual(remote.port, server.address().port);
  });
  socket.resume();
  socket.on('close', () => {
    assert.strictEqual(socket._handle, null);
    server.close(() => {
      assert.strictEqual(server._handle, null);
      console.log('handle shim ok');
    });
  });
});
