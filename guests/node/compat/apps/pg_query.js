'use strict';
// pg (node-postgres, the published client) against a real PostgreSQL server on the
// host's loopback, over TCP: PGHOST/PGPORT/PGUSER/PGDATABASE name it (the test starts
// the server; as a guest, an --allow rule lets the sidecar reach it). A Client runs
// parameterised queries, a transaction rolled back, an error with its SQLSTATE, and
// LISTEN/NOTIFY; a Pool runs 20 queries over 4 connections. It checks its own results
// and prints "pg ok".
const { Client, Pool } = require('pg');
const assert = require('assert');

async function main() {
  const client = new Client();
  await client.connect();
  const sum = await client.query('SELECT $1::int + $2::int AS sum, current_user AS who', [40, 2]);
  assert.deepStrictEqual(sum.rows, [{ sum: 42, who: process.env.PGUSER }]);

  await client.query('CREATE TEMP TABLE parts (id serial PRIMARY KEY, name text NOT NULL, qty int)');
  for (let i = 0; i < 50; i++) await client.query('INSERT INTO parts (name, qty) VALUES ($1, $2)', [`part ${i}`, i]);
  const total = await client.query('SELECT count(*)::int AS n, sum(qty)::int AS qty FROM parts');
  assert.deepStrictEqual(total.rows[0], { n: 50, qty: 1225 });

  await client.query('BEGIN');
  await client.query('DELETE FROM parts');
  await client.query('ROLLBACK');
  assert.strictEqual((await client.query('SELECT count(*)::int AS n FROM parts')).rows[0].n, 50);

  await assert.rejects(client.query('SELEC 1'), (error) => error.code === '42601');
  // The connection is still usable after an error.
  const wide = await client.query("SELECT repeat('x', 100000) AS text");
  assert.strictEqual(wide.rows[0].text.length, 100000);

  const listener = new Client();
  await listener.connect();
  await listener.query('LISTEN parts_changed');
  const notified = new Promise((resolve) => listener.once('notification', resolve));
  await client.query("SELECT pg_notify('parts_changed', 'part 7')");
  const note = await notified;
  assert.deepStrictEqual([note.channel, note.payload], ['parts_changed', 'part 7']);
  await listener.end();
  await client.end();

  const pool = new Pool({ max: 4 });
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => pool.query('SELECT $1::int * 2 AS double, pg_backend_pid() AS pid', [i])));
  results.forEach((r, i) => assert.strictEqual(r.rows[0].double, 2 * i));
  const backends = new Set(results.map((r) => r.rows[0].pid));
  assert.ok(backends.size >= 1 && backends.size <= 4, `${backends.size} backends for a pool of 4`);
  await pool.end();
  console.log(`pg ok (${backends.size} pooled connections)`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
