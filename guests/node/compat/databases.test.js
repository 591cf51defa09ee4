'use strict';
// Published database clients against real servers on the host's loopback, started here
// (support/servers.js): pg against PostgreSQL, ioredis against Redis, over TCP. A guest
// reaches them only through the sidecar, with an `--allow` rule for the server's port;
// without one, the guest's connect is refused by policy and the app fails.

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { LANES, laneName, runCompat, compatArgv, run, describe } = require('./helpers');
const { startPostgres, startRedis } = require('./support/servers');

let postgres;
let redis;

before(async () => {
  // Both start; a server that cannot start fails every test below with its reason.
  [postgres, redis] = await Promise.all([startPostgres(), startRedis()]);
});

after(async () => {
  await Promise.all([postgres && postgres.stop(), redis && redis.stop()]);
});

const pgEnv = () => ({ PGHOST: postgres.host, PGPORT: String(postgres.port), PGUSER: postgres.user, PGDATABASE: postgres.database, PGCONNECT_TIMEOUT: '10' });
const redisEnv = () => ({ REDIS_PORT: String(redis.port) });

for (const lane of LANES) {
  test(`pg_query.js against PostgreSQL passes ${laneName(lane)}`, { timeout: 90000 }, async () => {
    await runCompat('pg_query.js', lane, { output: /pg ok/, methods: ['net.connect', 'net.write'], allow: [`127.0.0.1:${postgres.port}`], env: pgEnv() });
  });
  test(`ioredis_pipeline.js against Redis passes ${laneName(lane)}`, { timeout: 90000 }, async () => {
    await runCompat('ioredis_pipeline.js', lane, { output: /ioredis ok/, methods: ['net.connect', 'net.write'], allow: [`127.0.0.1:${redis.port}`], env: redisEnv() });
  });
}

test('without an --allow rule, a guest cannot reach the host PostgreSQL', { timeout: 60000 }, async () => {
  const result = await run(compatArgv('pg_query.js', 'push'), { env: pgEnv(), timeoutMs: 30000 });
  assert.notStrictEqual(result.code, 0, describe(result));
  assert.doesNotMatch(result.stdout, /pg ok/, describe(result));
  assert.match(result.stderr, /ECONNREFUSED|EACCES|EPERM/, describe(result));
});
