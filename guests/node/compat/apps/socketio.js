'use strict';
// socket.io (server and client, both published): the client connects with HTTP long
// polling, upgrades to a WebSocket (the library's default order), then exchanges
// acknowledged events, a room broadcast to a second client, and binary data both ways.
// It checks its own results and prints "socket.io ok".
const http = require('http');
const { Server } = require('socket.io');
const { io } = require('socket.io-client');
const assert = require('assert');

const server = http.createServer();
const ioServer = new Server(server);
ioServer.on('connection', (socket) => {
  socket.on('add', (a, b, ack) => ack(a + b));
  socket.on('join', (room, ack) => {
    socket.join(room);
    ack();
  });
  socket.on('shout', (room, text) => socket.to(room).emit('heard', text));
  socket.on('bytes', (data, ack) => ack(Buffer.from(data).reverse()));
});

function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, resolve));
}

server.listen(0, '127.0.0.1', async () => {
  const url = `http://127.0.0.1:${server.address().port}`;
  const clients = [];
  try {
    const first = io(url, { reconnection: false });
    clients.push(first);
    // The manager opens its engine at once; its first transport is long polling.
    const engine = first.io.engine;
    assert.strictEqual(engine.transport.name, 'polling', 'the first transport is not long polling');
    const upgraded = once(engine, 'upgrade');
    await Promise.race([once(first, 'connect'), once(first, 'connect_error').then((e) => Promise.reject(e))]);
    assert.strictEqual(await first.emitWithAck('add', 1, 2), 3);
    assert.strictEqual((await upgraded).name, 'websocket');
    assert.strictEqual(first.io.engine.transport.name, 'websocket');

    for (let i = 0; i < 100; i++) assert.strictEqual(await first.emitWithAck('add', i, i), 2 * i);
    const reversed = await first.emitWithAck('bytes', Buffer.from([1, 2, 3, 4]));
    assert.deepStrictEqual([...Buffer.from(reversed)], [4, 3, 2, 1]);

    const second = io(url, { reconnection: false, transports: ['websocket'] });
    clients.push(second);
    await once(second, 'connect');
    await second.emitWithAck('join', 'lobby');
    const heard = once(second, 'heard');
    first.emit('shout', 'lobby', 'hello room');
    assert.strictEqual(await heard, 'hello room');
    console.log('socket.io ok');
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  }
  for (const client of clients) client.close();
  ioServer.close();
});
