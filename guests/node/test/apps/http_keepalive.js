'use strict';
// node:http server and client in one process: two GETs and a POST over one keep-alive
// connection (the second request reuses the socket). The process then exits on its
// own: the agent's idle socket is unref'd, and nothing else is open once the server
// closes.
const http = require('http');
const assert = require('assert');

let connections = 0;
const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (text) => (body += text));
  req.on('end', () => {
    res.setHeader('content-type', 'text/plain');
    res.end(`${req.method} ${req.url} ${body}`);
  });
});
server.on('connection', () => connections++);

function request(agent, options, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, host: '127.0.0.1', port: server.address().port, ...options }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode, text, reused: req.reusedSocket, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

server.listen(0, '127.0.0.1', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const first = await request(agent, { path: '/one' });
  assert.strictEqual(first.status, 200);
  assert.strictEqual(first.text, 'GET /one ');
  assert.strictEqual(first.headers['content-type'], 'text/plain');
  const second = await request(agent, { path: '/two' });
  assert.strictEqual(second.text, 'GET /two ');
  assert.strictEqual(second.reused, true, 'the keep-alive socket was not reused');
  const post = await request(agent, { method: 'POST', path: '/three' }, 'a body');
  assert.strictEqual(post.text, 'POST /three a body');
  assert.strictEqual(connections, 1);
  // The default global agent (keep-alive in Node 20) too.
  const viaGet = await new Promise((resolve, reject) => {
    http.get(`http://127.0.0.1:${server.address().port}/four`, (res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
  assert.strictEqual(viaGet, 'GET /four ');
  server.close();
  // Node 20's close() does this itself; Node 18's waits for idle keep-alive connections
  // to time out (5 s).
  server.closeIdleConnections();
  console.log('http keep-alive ok');
  // No process.exit(): the program must end by itself.
});
