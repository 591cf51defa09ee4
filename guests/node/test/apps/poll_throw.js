'use strict';
// A 'data' handler that throws, caught by process.on('uncaughtException'): the
// socket keeps receiving (the next data still arrives).
const net = require('net');
const assert = require('assert');

const server = net.createServer((socket) => {
  socket.write('one');
  socket.on('data', (d) => {
    assert.strictEqual(d.toString(), 'next');
    socket.end('two');
  });
});
let caught = 0;
process.on('uncaughtException', (err) => {
  assert.strictEqual(err.message, 'thrown by a handler');
  caught++;
  client.write('next');
});
let client;
server.listen(0, '127.0.0.1', () => {
  client = net.connect(server.address().port, '127.0.0.1');
  const got = [];
  client.on('data', (d) => {
    got.push(d.toString());
    if (got.length === 1) throw new Error('thrown by a handler');
  });
  client.on('end', () => {
    assert.deepStrictEqual(got, ['one', 'two']);
    assert.strictEqual(caught, 1);
    client.end();
    server.close(() => console.log('poll throw ok'));
  });
});
