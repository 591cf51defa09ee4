'use strict';
// Real database servers for the compat suites, started by the test on a free loopback
// port in a temporary directory and stopped (and the directory removed) by stop(): a
// PostgreSQL cluster (initdb, then postgres in the foreground) and a redis-server
// (no persistence). Each start waits for the server's own "ready" log line, with a
// deadline; a server that cannot start rejects with why (missing binary, its log),
// so the test fails saying so rather than skipping.

const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const START_DEADLINE_MS = 30000;

// A port no one listens on now (the kernel's pick, released at once for the server).
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// The first `name` on PATH, else in the first of `dirs` that has it, or null.
function findBinary(name, dirs = []) {
  const candidates = [...(process.env.PATH || '').split(path.delimiter), ...dirs];
  for (const dir of candidates) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

// Debian installs PostgreSQL's server binaries under /usr/lib/postgresql/<major>/bin,
// off PATH: the newest major there.
function postgresBinDirs() {
  const root = '/usr/lib/postgresql';
  let majors = [];
  try {
    majors = fs.readdirSync(root).filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  return majors.sort((a, b) => Number(b) - Number(a)).map((major) => path.join(root, major, 'bin'));
}

// Starts `argv` and resolves once its output matches `ready`; rejects (with the
// output) if it exits first or the deadline passes, killing it then.
function startUntilReady(what, argv, { ready, spawnOptions = {} }) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOptions });
    let log = '';
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(new Error(`${what} did not start: ${why}\n--- ${argv.join(' ')}\n${log}`));
    };
    const deadline = setTimeout(() => fail(`not ready within ${START_DEADLINE_MS} ms`), START_DEADLINE_MS);
    const onData = (text) => {
      log += text;
      if (!settled && ready.test(log)) {
        settled = true;
        clearTimeout(deadline);
        resolve({ child, log: () => log });
      }
    };
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', onData);
    }
    child.on('error', (error) => fail(error.message));
    child.on('exit', (code, signal) => fail(`it exited (code ${code}, signal ${signal})`));
  });
}

// Sends `signal` and waits for the exit (SIGKILL after a deadline).
function stopChild(child, signal) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => child.kill('SIGKILL'), 10000);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    child.kill(signal);
  });
}

// PostgreSQL refuses to run as root: as root, initdb and postgres run as the `postgres`
// user (the Debian package creates it), which owns the temporary directory.
function postgresIdentity() {
  if (process.getuid() !== 0) return {};
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new Error('PostgreSQL cannot run as root and there is no `postgres` user to run it as (apt-get install postgresql creates one)');
  }
}

// A fresh cluster: trust authentication, superuser `pushnet`, TCP on 127.0.0.1:port,
// its Unix socket in its own directory, no fsync. Resolves { host, port, user,
// database, stop }.
async function startPostgres() {
  const dirs = postgresBinDirs();
  const initdb = findBinary('initdb', dirs);
  const postgres = findBinary('postgres', dirs);
  if (!initdb || !postgres) {
    throw new Error('PostgreSQL is not installed: no initdb/postgres on PATH or under /usr/lib/postgresql/*/bin (apt-get install postgresql; .ci/run does)');
  }
  const identity = postgresIdentity();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushnet-pg-'));
  const stopAll = { child: null };
  const stop = async () => {
    await stopChild(stopAll.child, 'SIGINT'); // "fast" shutdown
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (identity.uid !== undefined) fs.chownSync(dir, identity.uid, identity.gid);
    const data = path.join(dir, 'data');
    const user = 'pushnet';
    try {
      execFileSync(initdb, ['-D', data, '-U', user, '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], { ...identity, cwd: dir, stdio: 'pipe', encoding: 'utf8' });
    } catch (error) {
      throw new Error(`initdb failed: ${error.message}\n${error.stdout || ''}${error.stderr || ''}`);
    }
    const port = await freePort();
    const argv = [postgres, '-D', data, '-p', String(port), '-h', '127.0.0.1', '-k', dir, '-c', 'fsync=off', '-c', 'logging_collector=off'];
    const server = await startUntilReady('postgres', argv, { ready: /database system is ready to accept connections/, spawnOptions: { ...identity, cwd: dir } });
    stopAll.child = server.child;
    return { host: '127.0.0.1', port, user, database: 'postgres', stop, log: server.log };
  } catch (error) {
    await stop();
    throw error;
  }
}

// redis-server on 127.0.0.1:port, no RDB or AOF, its working directory a temporary one.
// Resolves { host, port, stop }.
async function startRedis() {
  const redisServer = findBinary('redis-server');
  if (!redisServer) throw new Error('redis-server is not installed (apt-get install redis-server; .ci/run does)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushnet-redis-'));
  const port = await freePort();
  const argv = [redisServer, '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--protected-mode', 'no'];
  let server;
  try {
    server = await startUntilReady('redis-server', argv, { ready: /Ready to accept connections/, spawnOptions: { cwd: dir } });
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const stop = async () => {
    await stopChild(server.child, 'SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { host: '127.0.0.1', port, stop, log: server.log };
}

module.exports = { startPostgres, startRedis, freePort };
