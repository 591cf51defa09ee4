'use strict';
// Sockets that do not read, with nothing left to write, do not keep the process alive,
// as Node's: one accepted with pauseOnConnect, and a client paused in its 'connect'
// listener (before it started reading). The program ends with both ends of the
// connection still open.
const net = require('net');
const assert = require('assert');

let client;
let ended = false;
process.on('beforeExit', () => {
  if (ended) return;
  ended = true;
  assert.strictEqual(client.destroyed, false, 'the client socket is still open');
  assert.strictEqual(client.isPaused(), true);
  console.log('paused exit ok');
  client.destroy();
});
const server = net.createServer({ pauseOnConnect: true }, (socket) => {
  server.close();
  socket.write('unread');
});
server.listen(0, '127.0.0.1', () => {
  client = net.connect(server.address().port, '127.0.0.1', () => client.pause());
});
