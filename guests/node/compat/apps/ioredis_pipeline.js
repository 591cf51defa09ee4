'use strict';
// ioredis (the published Redis client) against a real redis-server on the host's
// loopback, over TCP: REDIS_PORT names it (the test starts the server; as a guest, an
// --allow rule lets the sidecar reach it). 10,000 commands in one pipeline (SET then
// GET, read back in order), a MULTI transaction, then pub/sub: a subscriber connection
// receives 200 published messages in order. It checks its own results and prints
// "ioredis ok".
const Redis = require('ioredis');
const assert = require('assert');

const options = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT), maxRetriesPerRequest: 1, retryStrategy: () => null };

async function main() {
  const redis = new Redis(options);
  assert.strictEqual(await redis.ping(), 'PONG');
  const prefix = `pushnet:${process.pid}:`;

  const pipeline = redis.pipeline();
  for (let i = 0; i < 5000; i++) pipeline.set(`${prefix}${i}`, `value ${i}`);
  for (let i = 0; i < 5000; i++) pipeline.get(`${prefix}${i}`);
  const replies = await pipeline.exec();
  assert.strictEqual(replies.length, 10000);
  replies.forEach(([error, reply], i) => {
    assert.ifError(error);
    assert.strictEqual(reply, i < 5000 ? 'OK' : `value ${i - 5000}`);
  });

  const [[, incr], [, got]] = await redis.multi().incrby(`${prefix}n`, 5).get(`${prefix}n`).exec();
  assert.deepStrictEqual([incr, got], [5, '5']);
  const big = 'y'.repeat(512 * 1024);
  await redis.set(`${prefix}big`, big);
  assert.strictEqual(await redis.get(`${prefix}big`), big);

  const subscriber = new Redis(options);
  const received = [];
  const all = new Promise((resolve) =>
    subscriber.on('message', (channel, message) => {
      assert.strictEqual(channel, `${prefix}news`);
      received.push(message);
      if (received.length === 200) resolve();
    })
  );
  assert.strictEqual(await subscriber.subscribe(`${prefix}news`), 1);
  for (let i = 0; i < 200; i++) assert.strictEqual(await redis.publish(`${prefix}news`, `item ${i}`), 1);
  await all;
  received.forEach((message, i) => assert.strictEqual(message, `item ${i}`));

  await redis.del(...Array.from({ length: 5000 }, (_, i) => `${prefix}${i}`), `${prefix}n`, `${prefix}big`);
  await subscriber.quit();
  await redis.quit();
  console.log('ioredis ok');
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
