'use strict';
// express (a published framework on node:http) served in this process and driven by
// Node's global fetch (undici inside Node): JSON routes, a JSON body parser, route
// params, a 404 from express's final handler, a 256 KiB streamed body, and 50 requests
// at once on fetch's connection pool (how many connections it opens is undici's choice:
// not asserted). It checks its own results and prints "express fetch ok".
const express = require('express');
const assert = require('assert');
const crypto = require('crypto');

const big = crypto.randomBytes(256 * 1024);
const app = express();
app.use(express.json());
app.get('/hello', (req, res) => res.json({ hello: 'world', q: req.query.q }));
app.get('/users/:id', (req, res) => res.type('text').send(`user ${req.params.id}`));
app.post('/echo', (req, res) => res.status(201).json({ got: req.body }));
app.get('/big', (req, res) => {
  res.type('application/octet-stream');
  // Written in 16 KiB slices: the response is streamed, not one buffer.
  for (let at = 0; at < big.length; at += 16384) res.write(big.subarray(at, at + 16384));
  res.end();
});

let connections = 0;
const server = app.listen(0, '127.0.0.1', async () => {
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    const hello = await fetch(`${base}/hello?q=1`);
    assert.strictEqual(hello.status, 200);
    assert.match(hello.headers.get('content-type'), /application\/json/);
    assert.deepStrictEqual(await hello.json(), { hello: 'world', q: '1' });

    const user = await fetch(`${base}/users/42`);
    assert.strictEqual(await user.text(), 'user 42');

    const echo = await fetch(`${base}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: [1, 2, 3] }) });
    assert.strictEqual(echo.status, 201);
    assert.deepStrictEqual(await echo.json(), { got: { a: [1, 2, 3] } });

    const missing = await fetch(`${base}/nowhere`);
    assert.strictEqual(missing.status, 404);
    assert.match(await missing.text(), /Cannot GET \/nowhere/);

    const body = Buffer.from(await (await fetch(`${base}/big`)).arrayBuffer());
    assert.ok(body.equals(big), `the 256 KiB body differs (${body.length} bytes)`);

    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => fetch(`${base}/users/${i}`).then((r) => r.text())));
    many.forEach((text, i) => assert.strictEqual(text, `user ${i}`));
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  }
  server.close();
  server.closeAllConnections();
  if (!process.exitCode) console.log(`express fetch ok (${connections} connections)`);
});
server.on('connection', () => connections++);
