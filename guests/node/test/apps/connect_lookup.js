'use strict';
// net.connect's `lookup` option is called as Node calls it, the socket emits 'lookup'
// (err, address, family, host) before 'connect', `autoSelectFamily` is accepted, a
// lookup error fails the connect with that error, and http.request passes `lookup` on.
const net = require('net');
const http = require('http');
const assert = require('assert');

const server = net.createServer((s) => s.end('hi'));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  custom(port, () => single(port, () => failing(port, () => viaHttp(() => server.close(() => console.log('connect lookup ok'))))));
});

// autoSelectFamily (the default): the lookup is asked for every address.
function custom(port, done) {
  const calls = [];
  const events = [];
  const socket = net.connect({
    port,
    host: 'my-service.example',
    autoSelectFamily: true,
    lookup(host, options, cb) {
      calls.push([host, options.all]);
      // As a resolver does: the answer comes later.
      if (options.all) setImmediate(cb, null, [{ address: '127.0.0.1', family: 4 }]);
      else setImmediate(cb, null, '127.0.0.1', 4);
    },
  });
  socket.on('lookup', (err, address, family, host) => events.push(['lookup', err, address, family, host]));
  socket.on('connect', () => events.push(['connect']));
  socket.on('data', (d) => assert.strictEqual(d.toString(), 'hi'));
  socket.on('close', () => {
    assert.strictEqual(calls.length, 1);
    assert.strictEqual(calls[0][0], 'my-service.example');
    assert.deepStrictEqual(events, [['lookup', null, '127.0.0.1', 4, 'my-service.example'], ['connect']]);
    done();
  });
}

// autoSelectFamily off: one address, Node's (err, address, family) callback.
function single(port, done) {
  let looked = 0;
  const socket = net.connect({ port, host: 'other.example', autoSelectFamily: false, family: 4, lookup: (h, o, cb) => setImmediate(cb, null, '127.0.0.1', 4) });
  socket.on('lookup', (err, address, family, host) => {
    looked++;
    assert.deepStrictEqual([err, address, family, host], [null, '127.0.0.1', 4, 'other.example']);
  });
  socket.resume();
  socket.on('close', () => {
    assert.strictEqual(looked, 1);
    done();
  });
}

function failing(port, done) {
  const failure = Object.assign(new Error('no such name'), { code: 'ENOTFOUND' });
  const socket = net.connect({ port, host: 'missing.example', lookup: (h, o, cb) => setImmediate(cb, failure) });
  let sawLookup = false;
  socket.on('lookup', (err) => {
    sawLookup = true;
    assert.strictEqual(err, failure);
  });
  socket.on('connect', () => assert.fail('connected without an address'));
  socket.on('error', (err) => {
    assert.strictEqual(err, failure);
    assert.ok(sawLookup);
    done();
  });
}

function viaHttp(done) {
  const web = http.createServer((req, res) => res.end('web'));
  web.listen(0, '127.0.0.1', () => {
    let looked = null;
    const lookup = (host, options, cb) => {
      looked = host;
      if (options.all) setImmediate(cb, null, [{ address: '127.0.0.1', family: 4 }]);
      else setImmediate(cb, null, '127.0.0.1', 4);
    };
    http.get({ host: 'web.example', port: web.address().port, lookup, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        assert.strictEqual(body, 'web');
        assert.strictEqual(looked, 'web.example');
        web.close(done);
      });
    });
  });
}
