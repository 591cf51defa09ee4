'use strict';
// pg (node-postgres) against a real PostgreSQL server on the host's loopback, started
// here (support/servers.js), over TCP. A guest reaches it only through the sidecar, with
// an `--allow` rule for the server's port; without one, its connect is refused.

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { LANES, laneName, runCompat, compatArgv, run, describe } = require('./helpers');
const { startPostgres } = require('./support/servers');

let postgres;
// A server that cannot start fails every test below with its reason.
before(async () => (postgres = await startPostgres()));
after(async () => postgres && postgres.stop());

const env = () => ({ PGHOST: postgres.host, PGPORT: String(postgres.port), PGUSER: postgres.user, PGDATABASE: postgres.database, PGCONNECT_TIMEOUT: '10' });

for (const lane of LANES) {
  test(`pg_query.js against PostgreSQL passes ${laneName(lane)}`, { timeout: 90000 }, async () => {
    await runCompat('pg_query.js', lane, { output: /pg ok/, methods: ['net.connect', 'net.write'], allow: [`127.0.0.1:${postgres.port}`], env: env() });
  });
}

test('without an --allow rule, a guest cannot reach the host PostgreSQL', { timeout: 60000 }, async () => {
  const result = await run(compatArgv('pg_query.js', 'push'), { env: env(), timeoutMs: 30000 });
  assert.notStrictEqual(result.code, 0, describe(result));
  assert.doesNotMatch(result.stdout, /pg ok/, describe(result));
  assert.match(result.stderr, /ECONNREFUSED/, describe(result));
});
