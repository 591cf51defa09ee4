'use strict';
// The smaller parts of net.Socket: setNoDelay / setKeepAlive / ref / unref return the
// socket, readyState follows the connection, an idle socket gets 'timeout' (the
// program's own timer, set with setTimeout), pause() stops 'data' until resume(), and
// destroy() gives 'close' with had_error false.
const net = require('net');
const assert = require('assert');

const server = net.createServer((socket) => {
  socket.write('first');
  socket.once('data', () => socket.end('second'));
});

server.listen(0, '127.0.0.1', () => {
  const client = net.connect(server.address().port, '127.0.0.1');
  assert.strictEqual(client.readyState, 'opening');
  assert.strictEqual(client.connecting, true);
  assert.strictEqual(client.setNoDelay(true), client);
  assert.strictEqual(client.setKeepAlive(true, 1000), client);
  assert.strictEqual(client.unref(), client);
  assert.strictEqual(client.ref(), client);
  client.on('connect', () => {
    assert.strictEqual(client.readyState, 'open');
    assert.strictEqual(client.connecting, false);
    assert.strictEqual(client.pending, false);
  });
  client.once('data', (first) => {
    assert.strictEqual(first.toString(), 'first');
    client.pause();
    assert.strictEqual(client.isPaused(), true);
    // Nothing is written by the server until we speak: the socket is idle.
    client.setTimeout(20, () => {
      client.setTimeout(0);
      let resumed = false;
      client.on('data', (second) => {
        assert.ok(resumed, "'data' while paused");
        assert.strictEqual(second.toString(), 'second');
      });
      client.write('go');
      // The server's answer must wait for resume(): resume on the next turn.
      setImmediate(() => {
        resumed = true;
        client.resume();
      });
    });
  });
  client.on('end', () => {
    client.destroy();
  });
  client.on('close', (hadError) => {
    assert.strictEqual(hadError, false);
    assert.strictEqual(client.readyState, 'closed');
    server.close(() => console.log('socket misc ok'));
  });
});
