// ESM named imports of node:net and node:dgram see the guest's functions.
import { createServer, connect } from 'node:net';
import { createSocket } from 'node:dgram';
import assert from 'node:assert';

const server = createServer((socket) => socket.pipe(socket));
server.listen(0, '127.0.0.1', () => {
  const client = connect(server.address().port, '127.0.0.1', () => client.end('esm'));
  let got = '';
  client.on('data', (chunk) => (got += chunk));
  client.on('end', () => {
    assert.strictEqual(got, 'esm');
    server.close();
    const udp = createSocket('udp4');
    udp.bind(0, '127.0.0.1', () => {
      udp.on('message', (msg) => {
        assert.strictEqual(msg.toString(), 'to myself');
        udp.close(() => console.log('esm ok'));
      });
      udp.send('to myself', udp.address().port, '127.0.0.1');
    });
  });
});
