'use strict';
// Unix-path echo: listen(path) / connect(path). As a guest the path is a name in the
// VM's own table; under plain Node it is a file in the temp directory.
const net = require('net');
const os = require('os');
const path = require('path');
const fs = require('fs');
const assert = require('assert');

const socketPath = path.join(os.tmpdir(), `pushnet-unix-echo-${process.pid}.sock`);
try {
  fs.unlinkSync(socketPath);
} catch {}

const server = net.createServer((socket) => socket.pipe(socket));
server.listen(socketPath, () => {
  assert.strictEqual(server.address(), socketPath);
  const client = net.connect(socketPath, () => client.end('over a unix path'));
  let got = '';
  client.setEncoding('utf8');
  client.on('data', (text) => (got += text));
  client.on('end', () => {
    assert.strictEqual(got, 'over a unix path');
    server.close(() => {
      console.log('unix echo ok');
    });
  });
});
