'use strict';
// net.Server#listen in each of Node's documented signatures: listen(cb) and listen()
// take a free port, (port, host, backlog, cb), (options, cb), port 0, a numeric string
// port, (path, cb); invalid ones throw Node's errors; listening twice throws.
const net = require('net');
const assert = require('assert');

const steps = [];
const step = (fn) => steps.push(fn);
const next = () => (steps.length ? steps.shift()() : console.log('listen signatures ok'));

function expectFreePort(server, done) {
  const { port, family } = server.address();
  assert.ok(Number.isInteger(port) && port > 0, `port ${port}`);
  assert.ok(family === 'IPv4' || family === 'IPv6');
  assert.strictEqual(server.listening, true);
  server.close(done);
}

step(() => {
  const server = net.createServer();
  server.listen(() => expectFreePort(server, next));
});
step(() => {
  const server = net.createServer();
  server.on('listening', () => expectFreePort(server, next));
  server.listen();
});
step(() => {
  const server = net.createServer();
  server.listen(0, '127.0.0.1', 5, () => {
    assert.strictEqual(server.address().address, '127.0.0.1');
    expectFreePort(server, next);
  });
});
step(() => {
  const server = net.createServer();
  server.listen({ port: 0, host: '127.0.0.1', backlog: 10 }, () => expectFreePort(server, next));
});
step(() => {
  const server = net.createServer();
  server.listen({ port: undefined }, () => expectFreePort(server, next));
});
step(() => {
  const server = net.createServer();
  server.listen(null, () => expectFreePort(server, next));
});
step(() => {
  // A port given as a numeric string, then a second listen while listening.
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1', () => {
    const { port } = probe.address();
    probe.close(() => {
      const server = net.createServer();
      server.listen(String(port), '127.0.0.1', () => {
        assert.strictEqual(server.address().port, port);
        assert.throws(() => server.listen(0), { code: 'ERR_SERVER_ALREADY_LISTEN', name: 'Error' });
        server.close(next);
      });
    });
  });
});
step(() => {
  // listen(path, cb): a Unix socket.
  const path = `/tmp/pushnet-listen-${process.pid}.sock`;
  const server = net.createServer((s) => s.end('unix'));
  server.listen(path, () => {
    assert.strictEqual(server.address(), path);
    net.connect(path).on('data', (d) => {
      assert.strictEqual(d.toString(), 'unix');
      server.close(next);
    });
  });
});
step(() => {
  const server = net.createServer();
  assert.throws(() => server.listen({}), { code: 'ERR_INVALID_ARG_VALUE', name: 'TypeError', message: /must have the property "port" or "path"/ });
  assert.throws(() => server.listen({ port: -1 }), { code: 'ERR_SOCKET_BAD_PORT', name: 'RangeError', message: /^options\.port should be >= 0 and < 65536\. Received type number \(-1\)\.$/ });
  assert.throws(() => server.listen(65536), { code: 'ERR_SOCKET_BAD_PORT' });
  assert.throws(() => server.listen({ port: 0, signal: 'x' }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.strictEqual(server.listening, false);
  // close() on a server that never listened: the callback gets ERR_SERVER_NOT_RUNNING.
  server.close((err) => {
    assert.strictEqual(err.code, 'ERR_SERVER_NOT_RUNNING');
    next();
  });
});
step(() => {
  // The port in use: an 'error' event (never thrown) with Node's message.
  const first = net.createServer();
  first.listen(0, '127.0.0.1', () => {
    const { port } = first.address();
    const second = net.createServer();
    second.on('error', (err) => {
      assert.strictEqual(err.code, 'EADDRINUSE');
      assert.strictEqual(err.message, `listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
      first.close(next);
    });
    second.listen(port, '127.0.0.1');
  });
});

next();
