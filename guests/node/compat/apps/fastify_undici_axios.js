'use strict';
// fastify (a published framework with its own router and JSON schema validation) served
// in this process, driven by two published clients: undici (request(), a Pool with
// pipelining, stream bodies) and axios (its node:http adapter). It checks its own
// results and prints "fastify undici axios ok".
const fastify = require('fastify')({ logger: false });
const { request, Pool } = require('undici');
const axios = require('axios');
const assert = require('assert');
const crypto = require('crypto');

const items = new Map();
fastify.get('/items/:id', async (req, reply) => {
  const item = items.get(req.params.id);
  if (!item) return reply.code(404).send({ error: 'no such item' });
  return item;
});
fastify.post(
  '/items',
  { schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, qty: { type: 'integer' } } } } },
  async (req, reply) => {
    const id = String(items.size + 1);
    items.set(id, { id, ...req.body });
    return reply.code(201).send({ id });
  }
);
// Echoes a raw body back (fastify parses octet-stream as a Buffer when told to).
fastify.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: 4 << 20 }, (req, body, done) => done(null, body));
fastify.put('/blob', async (req, reply) => reply.type('application/octet-stream').send(req.body));

async function main() {
  await fastify.listen({ port: 0, host: '127.0.0.1' });
  const base = `http://127.0.0.1:${fastify.server.address().port}`;

  // undici: request() on its global dispatcher.
  const created = await request(`${base}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bolt', qty: 3 }) });
  assert.strictEqual(created.statusCode, 201);
  const { id } = await created.body.json();
  const got = await request(`${base}/items/${id}`);
  assert.deepStrictEqual(await got.body.json(), { id, name: 'bolt', qty: 3 });
  const invalid = await request(`${base}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ qty: 'many' }) });
  assert.strictEqual(invalid.statusCode, 400, 'fastify schema validation did not reject the body');
  await invalid.body.text();

  // undici: a Pool of two connections, pipelining ten requests each.
  const pool = new Pool(base, { connections: 2, pipelining: 10 });
  const answers = await Promise.all(
    Array.from({ length: 100 }, (_, i) => pool.request({ path: `/items/${i % 2 ? id : 'none'}`, method: 'GET' }).then(async (r) => [r.statusCode, await r.body.json()]))
  );
  answers.forEach(([status, body], i) => {
    if (i % 2) assert.deepStrictEqual([status, body.name], [200, 'bolt']);
    else assert.deepStrictEqual([status, body], [404, { error: 'no such item' }]);
  });
  const blob = crypto.randomBytes(1 << 20);
  const echoed = await pool.request({ path: '/blob', method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: blob });
  assert.ok(Buffer.from(await echoed.body.arrayBuffer()).equals(blob), 'the 1 MiB body came back different');
  await pool.close();

  // axios (node:http underneath).
  const posted = await axios.post(`${base}/items`, { name: 'nut' });
  assert.strictEqual(posted.status, 201);
  const fetched = await axios.get(`${base}/items/${posted.data.id}`);
  assert.deepStrictEqual(fetched.data, { id: posted.data.id, name: 'nut' });
  await assert.rejects(axios.get(`${base}/items/999`), (error) => error.response && error.response.status === 404);
  const large = await axios.put(`${base}/blob`, blob, { headers: { 'content-type': 'application/octet-stream' }, responseType: 'arraybuffer' });
  assert.ok(Buffer.from(large.data).equals(blob), 'axios: the 1 MiB body came back different');

  await fastify.close();
  console.log('fastify undici axios ok');
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
