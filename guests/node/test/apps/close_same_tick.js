'use strict';
// The server closes while a connection to it is being made: whether it took the
// connection first (and ends it) or not (the connection it never took must be closed),
// the client sees 'close' (with or without an error, as the kernel decides), and the
// program ends. Two orders: close() in the tick of the connect, and in the client's
// 'connect' handler (before the server has seen the connection).
const net = require('net');
const assert = require('assert');

function attempt(closeOnConnect, done) {
  const server = net.createServer((socket) => socket.end());
  server.listen(0, '127.0.0.1', () => {
    const client = net.createConnection(server.address().port, '127.0.0.1');
    let serverClosed = false;
    const close = () => server.close(() => (serverClosed = true));
    if (closeOnConnect) client.on('connect', close);
    else close();
    client.on('error', (err) => assert.ok(['ECONNRESET', 'ECONNREFUSED', 'EPIPE'].includes(err.code), err.code));
    client.resume();
    client.on('close', () => {
      server.on('close', () => (serverClosed = true));
      setImmediate(() => {
        assert.strictEqual(server.listening, false);
        done();
      });
    });
  });
}

attempt(false, () => attempt(true, () => console.log('close same tick ok')));
