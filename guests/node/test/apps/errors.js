'use strict';
// Errors surface as Node errors with .code: ECONNREFUSED (nobody listens), EADDRINUSE
// (the port is taken), both as 'error' events, never thrown.
const net = require('net');
const assert = require('assert');

// A port nobody listens on: one we listened on and closed.
const probe = net.createServer();
probe.listen(0, '127.0.0.1', () => {
  const { port } = probe.address();
  probe.close(() => refused(port));
});

function refused(port) {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('connect', () => assert.fail('connected to a closed port'));
  socket.on('error', (err) => {
    assert.strictEqual(err.code, 'ECONNREFUSED');
    assert.strictEqual(err.syscall, 'connect');
    assert.strictEqual(err.port, port);
    socket.on('close', (hadError) => {
      assert.strictEqual(hadError, true);
      inUse();
    });
  });
}

function inUse() {
  const first = net.createServer();
  first.listen(0, '127.0.0.1', () => {
    const { port } = first.address();
    const second = net.createServer();
    second.on('listening', () => assert.fail('listened twice on one port'));
    second.on('error', (err) => {
      assert.strictEqual(err.code, 'EADDRINUSE');
      assert.strictEqual(err.syscall, 'listen');
      assert.strictEqual(second.listening, false);
      first.close(() => console.log('errors ok'));
    });
    second.listen(port, '127.0.0.1');
  });
}
