'use strict';
// ws (the published WebSocket library): a WebSocketServer on node:http and a ws client
// in this process. 1,000 text messages are echoed one round trip at a time, then a
// 1 MiB binary message (many TCP reads, one frame), then a ping and a clean close with
// a code and reason. It checks its own results and prints "ws echo ok".
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');
const assert = require('assert');
const crypto = require('crypto');

const server = http.createServer();
const wss = new WebSocketServer({ server, maxPayload: 4 << 20 });
wss.on('connection', (socket, req) => {
  assert.strictEqual(req.url, '/echo');
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  socket.on('close', (code, reason) => {
    assert.strictEqual(code, 4001);
    assert.strictEqual(reason.toString(), 'done');
  });
});

function next(socket) {
  return new Promise((resolve, reject) => {
    const onMessage = (data, isBinary) => {
      socket.off('error', reject);
      resolve({ data, isBinary });
    };
    socket.once('message', onMessage);
    socket.once('error', reject);
  });
}

server.listen(0, '127.0.0.1', async () => {
  try {
    const client = new WebSocket(`ws://127.0.0.1:${server.address().port}/echo`, { maxPayload: 4 << 20 });
    await new Promise((resolve, reject) => {
      client.once('open', resolve);
      client.once('error', reject);
    });
    for (let i = 0; i < 1000; i++) {
      const reply = next(client);
      client.send(`message ${i}`);
      const { data, isBinary } = await reply;
      assert.strictEqual(isBinary, false);
      assert.strictEqual(data.toString(), `message ${i}`);
    }
    const big = crypto.randomBytes(1 << 20);
    const reply = next(client);
    client.send(big);
    const { data, isBinary } = await reply;
    assert.strictEqual(isBinary, true);
    assert.ok(Buffer.from(data).equals(big), `the 1 MiB message came back different (${data.length} bytes)`);

    const pong = new Promise((resolve) => client.once('pong', resolve));
    client.ping('are you there');
    assert.strictEqual((await pong).toString(), 'are you there');

    const closed = new Promise((resolve) => client.once('close', (code, reason) => resolve([code, reason.toString()])));
    client.close(4001, 'done');
    assert.deepStrictEqual(await closed, [4001, 'done']);
    wss.close();
    server.close();
    console.log('ws echo ok');
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});
