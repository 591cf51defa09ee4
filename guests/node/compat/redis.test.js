'use strict';
// ioredis against a real redis-server on the host's loopback, started here
// (support/servers.js), over TCP; a guest reaches it through the sidecar with an
// `--allow` rule for the server's port.

const { test, before, after } = require('node:test');
const { LANES, laneName, runCompat } = require('./helpers');
const { startRedis } = require('./support/servers');

let redis;
// A server that cannot start fails every test below with its reason.
before(async () => (redis = await startRedis()));
after(async () => redis && redis.stop());

for (const lane of LANES) {
  test(`ioredis_pipeline.js against Redis passes ${laneName(lane)}`, { timeout: 90000 }, async () => {
    await runCompat('ioredis_pipeline.js', lane, { output: /ioredis ok/, methods: ['net.connect', 'net.write'], allow: [`127.0.0.1:${redis.port}`], env: { REDIS_PORT: String(redis.port) } });
  });
}
