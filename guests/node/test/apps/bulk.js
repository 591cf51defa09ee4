'use strict';
// 8 MiB through an echo server with pipe() on both sides: many credit windows, drains
// and write pieces; the bytes that come back hash the same as the bytes sent.
const net = require('net');
const crypto = require('crypto');
const { Readable } = require('stream');
const assert = require('assert');

const TOTAL = 8 * 1024 * 1024;
const CHUNK = 100 * 1024 + 7; // not a power of two: pieces split everywhere
const sent = crypto.createHash('sha256');
const back = crypto.createHash('sha256');

const server = net.createServer((socket) => socket.pipe(socket));
server.listen(0, '127.0.0.1', () => {
  const client = net.connect(server.address().port, '127.0.0.1');
  let produced = 0;
  let seed = 1;
  const source = new Readable({
    read() {
      if (produced >= TOTAL) return this.push(null);
      const n = Math.min(CHUNK, TOTAL - produced);
      const chunk = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        chunk[i] = seed >>> 16;
      }
      produced += n;
      sent.update(chunk);
      return this.push(chunk);
    },
  });
  source.pipe(client);
  let received = 0;
  client.on('data', (data) => {
    received += data.length;
    back.update(data);
  });
  client.on('end', () => {
    assert.strictEqual(received, TOTAL);
    assert.strictEqual(back.digest('hex'), sent.digest('hex'));
    server.close(() => console.log('bulk ok'));
  });
});
