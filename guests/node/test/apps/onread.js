'use strict';
// net.connect's `onread` option: the bytes arrive in the program's own buffer through
// its callback (no 'data' events); a callback that returns false stops reading until
// resume(); 'end' still comes.
const net = require('net');
const assert = require('assert');

const total = 200 * 1024;
const server = net.createServer((socket) => socket.end(Buffer.alloc(total, 'z')));
server.listen(0, '127.0.0.1', () => {
  const buffer = Buffer.alloc(4096);
  let received = 0;
  let stops = 0;
  const client = net.connect({
    port: server.address().port,
    host: '127.0.0.1',
    onread: {
      buffer,
      callback(n, buf) {
        assert.strictEqual(buf, buffer);
        assert.ok(n > 0 && n <= buffer.length);
        for (let i = 0; i < n; i++) assert.strictEqual(buf[i], 0x7a);
        received += n;
        if (stops === 0 && received >= 8192) {
          stops++;
          setImmediate(() => client.resume());
          return false;
        }
        return undefined;
      },
    },
  });
  client.on('data', () => assert.fail('onread socket emitted data'));
  client.on('end', () => {
    assert.strictEqual(received, total);
    assert.strictEqual(stops, 1);
    client.end();
    server.close(() => console.log('onread ok'));
  });
});
