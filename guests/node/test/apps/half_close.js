'use strict';
// Half-close: with allowHalfOpen the server reads the client's whole request (until
// 'end'), then still writes its answer and ends; without it, a received end ends the
// socket's writable side at once.
const net = require('net');
const assert = require('assert');

function halfOpenServer(done) {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    let request = '';
    socket.setEncoding('utf8');
    socket.on('data', (text) => (request += text));
    socket.on('end', () => {
      assert.strictEqual(request, 'question');
      assert.strictEqual(socket.writable, true, 'still writable after the peer ended');
      socket.end('answer to ' + request);
    });
  });
  server.listen(0, () => {
    const client = net.connect(server.address().port, () => client.end('question'));
    let reply = '';
    client.setEncoding('utf8');
    client.on('data', (text) => (reply += text));
    client.on('end', () => {
      assert.strictEqual(reply, 'answer to question');
      server.close(done);
    });
  });
}

function autoEndServer(done) {
  const server = net.createServer((socket) => {
    socket.resume();
    socket.on('end', () => {
      // allowHalfOpen false: Node ends our side for us.
      socket.on('finish', () => assert.strictEqual(socket.writableEnded, true));
    });
  });
  server.listen(0, () => {
    const client = net.connect(server.address().port, () => client.end());
    client.resume();
    client.on('end', () => server.close(done));
  });
}

halfOpenServer(() => autoEndServer(() => console.log('half close ok')));
