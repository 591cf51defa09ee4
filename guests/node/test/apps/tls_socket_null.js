'use strict';
// `new tls.TLSSocket(null)` then `.connect(port, host)`: a TLSSocket that makes its own
// connection (in a guest, over a guest socket: the runtime's tls_socket.js). Against a
// tls.Server echoing, with a self-signed certificate made here by openssl: the handshake
// completes (the certificate is the server's), 64 KiB go each way, hashed; connecting
// to a port nobody listens on fails with ECONNREFUSED as an 'error' event.
const assert = require('assert');
const crypto = require('crypto');
const tls = require('tls');

const { makeCertificate } = require('../support/certificate');

const { key, cert } = makeCertificate();
const sha = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
const payload = crypto.randomBytes(64 * 1024);

function echoRound(port) {
  return new Promise((resolve, reject) => {
    const socket = new tls.TLSSocket(null, { rejectUnauthorized: false });
    assert.ok(socket instanceof tls.TLSSocket);
    const chunks = [];
    let connected = false;
    socket.on('error', reject);
    socket.on('secure', () => {
      assert.strictEqual(socket.getPeerCertificate().subject.CN, 'localhost');
    });
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      if (Buffer.concat(chunks).length === payload.length) socket.end();
    });
    socket.on('end', () => {
      assert.ok(connected, "no 'connect' before the data");
      assert.strictEqual(sha(Buffer.concat(chunks)), sha(payload));
      resolve();
    });
    socket.connect(port, '127.0.0.1', () => {
      connected = true;
      // A client TLSSocket made by hand starts its handshake when told (tls.connect
      // does this itself).
      socket._start();
      socket.write(payload);
    });
  });
}

function refusedRound(port) {
  return new Promise((resolve, reject) => {
    const socket = new tls.TLSSocket(undefined, {});
    socket.on('error', (err) => {
      try {
        assert.strictEqual(err.code, 'ECONNREFUSED');
        resolve();
      } catch (e) {
        reject(e);
      }
    });
    socket.connect(port, '127.0.0.1', () => reject(new Error('connected to a closed port')));
  });
}

const server = tls.createServer({ key, cert }, (socket) => socket.pipe(socket));
server.listen(0, '127.0.0.1', async () => {
  const { port } = server.address();
  try {
    await echoRound(port);
    server.close();
    await new Promise((resolve) => server.once('close', resolve));
    await refusedRound(port);
    console.log('tls socket null ok');
  } catch (e) {
    console.error(e);
    process.exit(1);
  }
});
