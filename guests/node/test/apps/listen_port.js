'use strict';
// Listens on 127.0.0.1:<argv[2]> and talks to itself through it: as a guest, the port is
// the VM's own, whoever holds it on the host.
const net = require('net');
const assert = require('assert');

const port = Number(process.argv[2]);
const server = net.createServer((socket) => socket.end('inside'));
server.listen(port, '127.0.0.1', () => {
  assert.strictEqual(server.address().port, port);
  net.connect(port, '127.0.0.1').on('data', (data) => {
    assert.strictEqual(data.toString(), 'inside');
    server.close(() => console.log(`listened on ${port}`));
  });
});
