'use strict';
// TLS and HTTPS in one process, with a self-signed certificate made here by openssl
// (CN=localhost, SAN localhost and 127.0.0.1) in a temporary directory:
// - https: an https.Server, two https.get requests (the agent connects through
//   tls.connect), checked on both sides (addresses, authorized, bodies);
// - a tls.Server echoing, reached three ways: tls.connect(port, host, options),
//   tls.connect({ socket }) over a socket still connecting, and over one already
//   connected; 200 KiB each way, hashed;
// - tls.connect to a port nobody listens on fails with ECONNREFUSED.
const assert = require('assert');
const crypto = require('crypto');
const https = require('https');
const net = require('net');
const tls = require('tls');

const { makeCertificate } = require('../support/certificate');

const { key, cert } = makeCertificate();
const sha = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

function httpsRound() {
  return new Promise((resolve, reject) => {
    const server = https.createServer({ key, cert }, (req, res) => {
      assert.strictEqual(req.socket.encrypted, true);
      assert.strictEqual(req.socket.remoteAddress, '127.0.0.1');
      assert.strictEqual(req.socket.localPort, server.address().port);
      res.setHeader('content-type', 'text/plain');
      res.end(`hello ${req.url}`);
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', async () => {
      const { port } = server.address();
      const get = (url) =>
        new Promise((done, fail) => {
          https
            .get({ host: '127.0.0.1', port, path: url, ca: cert, servername: 'localhost' }, (res) => {
              assert.strictEqual(res.statusCode, 200);
              assert.strictEqual(res.socket.authorized, true);
              assert.strictEqual(res.socket.remotePort, port);
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (text) => (body += text));
              res.on('end', () => done(body));
            })
            .on('error', fail);
        });
      try {
        assert.strictEqual(await get('/one'), 'hello /one');
        assert.strictEqual(await get('/two'), 'hello /two');
      } catch (e) {
        reject(e);
        return;
      }
      server.close(() => resolve());
      server.closeAllConnections();
    });
  });
}

function echoOver(connectTls, payload) {
  return new Promise((resolve, reject) => {
    const client = connectTls();
    const chunks = [];
    client.on('secureConnect', () => {
      assert.strictEqual(client.authorized, true, String(client.authorizationError));
      client.end(payload);
    });
    client.on('data', (chunk) => chunks.push(chunk));
    client.on('error', reject);
    client.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

function tlsEcho() {
  return new Promise((resolve, reject) => {
    const server = tls.createServer({ key, cert }, (socket) => {
      assert.strictEqual(socket.encrypted, true);
      socket.pipe(socket);
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', async () => {
      const { port } = server.address();
      const options = { ca: cert, servername: 'localhost' };
      const payload = crypto.randomBytes(200 * 1024);
      const ways = {
        'tls.connect(port, host)': () => tls.connect(port, '127.0.0.1', options),
        'tls.connect({ socket }) connecting': () => tls.connect({ ...options, socket: net.connect(port, '127.0.0.1') }),
        'tls.connect({ socket }) connected': null,
      };
      try {
        for (const [name, way] of Object.entries(ways)) {
          let connectTls = way;
          if (!connectTls) {
            const raw = net.connect(port, '127.0.0.1');
            await new Promise((ok) => raw.once('connect', ok));
            connectTls = () => tls.connect({ ...options, socket: raw });
          }
          const back = await echoOver(connectTls, payload);
          assert.strictEqual(back.length, payload.length, name);
          assert.strictEqual(sha(back), sha(payload), name);
        }
      } catch (e) {
        reject(e);
        return;
      }
      server.close(() => resolve(port));
    });
  });
}

function refused(port) {
  return new Promise((resolve) => {
    tls.connect(port, '127.0.0.1', { ca: cert, servername: 'localhost' }).on('error', (err) => {
      assert.strictEqual(err.code, 'ECONNREFUSED');
      resolve();
    });
  });
}

(async () => {
  await httpsRound();
  const port = await tlsEcho();
  await refused(port);
  console.log('tls ok');
})().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
