'use strict';
// Back-pressure for a writer that yields between writes (one 16 KiB write per turn of
// the event loop), so that events reach it while it writes: the server does not read at
// first, write() returns false after a while, and once the server reads, 'drain' comes
// and every byte arrives. No write fails (the sidecar's hard limit is never reached).
const net = require('net');
const assert = require('assert');

const chunk = Buffer.alloc(16 * 1024, 0x62);
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
  client.on('error', (e) => assert.fail(`the writer failed: ${e.stack}`));
});

function start() {
  if (!serverSocket || !clientConnected) return;
  let written = 0;
  const writeOne = () => {
    written += chunk.length;
    if (client.write(chunk)) {
      assert.ok(written < 64 * 1024 * 1024, 'write() never returned false');
      setImmediate(writeOne);
      return;
    }
    client.once('drain', () => client.end());
    let received = 0;
    serverSocket.on('data', (data) => (received += data.length));
    serverSocket.on('end', () => {
      assert.strictEqual(received, written);
      console.log(`yielding writer ok: write() returned false after ${written} bytes`);
      server.close();
    });
    serverSocket.resume();
  };
  writeOne();
}
