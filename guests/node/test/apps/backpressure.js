'use strict';
// Back-pressure: the server does not read at first (pauseOnConnect), so the client's
// write() returns false after a while; once the server reads, 'drain' comes and every
// byte arrives.
const net = require('net');
const assert = require('assert');

const chunk = Buffer.alloc(16 * 1024, 0x61);
let serverSocket = null;
let client = null;
let clientConnected = false;

const server = net.createServer({ pauseOnConnect: true }, (socket) => {
  serverSocket = socket;
  start();
});

server.listen(0, '127.0.0.1', () => {
  client = net.connect(server.address().port, '127.0.0.1', () => {
    clientConnected = true;
    start();
  });
});

// Once both ends exist: fill the pipe until write() says stop, then let the server read.
function start() {
  if (!serverSocket || !clientConnected) return;
  let written = 0;
  while (client.write(chunk)) {
    written += chunk.length;
    assert.ok(written < 256 * 1024 * 1024, 'write() never returned false');
  }
  written += chunk.length;
  assert.strictEqual(client.writableNeedDrain, true);
  let drained = false;
  client.once('drain', () => {
    drained = true;
    client.end();
  });
  let received = 0;
  serverSocket.on('data', (data) => (received += data.length));
  serverSocket.on('end', () => {
    assert.ok(drained, "no 'drain' before the end");
    assert.strictEqual(received, written);
    console.log(`backpressure ok: write() returned false after ${written} bytes`);
    server.close();
  });
  serverSocket.resume();
}
