'use strict';
// Shared by the suites: run a program as a guest (`sidecar run`) or under plain Node,
// with a watchdog so nothing hangs, and read the report line of support/report.cjs.

const { spawn } = require('child_process');
const path = require('path');
const assert = require('assert');

const SIDECAR = process.env.PUSHNET_SIDECAR;
const APPS = path.join(__dirname, 'apps');
const REPORT = path.join(__dirname, 'support', 'report.cjs');
const NODE = process.execPath;

if (!SIDECAR) throw new Error('PUSHNET_SIDECAR must name the sidecar binary (the Rust test node_guest sets it)');

// Runs argv; resolves { code, signal, stdout, stderr, timedOut } when it exits. A
// watchdog kills it after timeoutMs (a hang fails the test, it never blocks CI).
function run(argv, { timeoutMs = 30000, env = {}, onStdout } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (text) => {
      stdout += text;
      if (onStdout) onStdout(stdout, child);
    });
    child.stderr.on('data', (text) => (stderr += text));
    const watchdog = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(watchdog);
      resolve({ code, signal, stdout, stderr, timedOut, child });
    });
  });
}

// `node -r report.cjs <app> args...` as `lane`: 'plain' (no sidecar), 'push' or 'poll'
// (a guest of VM `vm` of an embedded sidecar), or { connect: path, vm: NAME, secret:
// SECRET[, poll: true] } (a guest of a running sidecar). The secret never goes on a
// command line: `--vm NAME=env:LANE_SECRET_VAR`, the variable set in run's environment
// (laneEnv) and taken out of it by run before it starts the guest.
const LANE_SECRET_VAR = 'PUSHNET_TEST_LANE_SECRET';
function appArgv(app, lane, args = []) {
  const node = [NODE, '-r', REPORT, path.join(APPS, app), ...args];
  if (lane === 'plain') return node;
  if (lane === 'push') return [SIDECAR, 'run', '--vm', 't', '--', ...node];
  if (lane === 'poll') return [SIDECAR, 'run', '--vm', 't', '--poll', '--', ...node];
  return [SIDECAR, 'run', '--vm', `${lane.vm}=env:${LANE_SECRET_VAR}`, '--connect', lane.connect, ...(lane.poll ? ['--poll'] : []), '--', ...node];
}

// What `lane` adds to the environment of the command appArgv makes.
function laneEnv(lane) {
  return typeof lane === 'object' && lane.secret !== undefined ? { [LANE_SECRET_VAR]: lane.secret } : {};
}

function runApp(app, lane, options = {}) {
  return run(appArgv(app, lane, options.args), { ...options, env: { ...laneEnv(lane), ...options.env } });
}

function report(result) {
  const line = result.stderr.split('\n').find((l) => l.startsWith('pushnet-report: '));
  assert.ok(line, `no report line\n${describe(result)}`);
  return JSON.parse(line.slice('pushnet-report: '.length));
}

function describe(result) {
  return `exit code ${result.code}, signal ${result.signal}${result.timedOut ? ' (killed by the watchdog)' : ''}\n--- stdout\n${result.stdout}--- stderr\n${result.stderr}`;
}

// The run succeeded (exit 0, expected output) and, for a guest lane, really went through
// the sidecar: the report names the methods it used, shows no lost event, and (push
// mode) no timer-origin wake.
function assertRan(result, lane, { output, methods = [] }) {
  assert.strictEqual(result.code, 0, describe(result));
  assert.match(result.stdout, output, describe(result));
  const r = report(result);
  if (lane === 'plain') {
    assert.strictEqual(r.guest, false);
    return r;
  }
  assert.strictEqual(r.guest, true, describe(result));
  assert.strictEqual(r.mode, lane === 'poll' || lane.poll ? 'poll' : 'push');
  assert.strictEqual(r.seq_gaps, 0, 'an event was lost');
  for (const method of methods) assert.ok(r.calls[method] >= 1, `no ${method} call: ${JSON.stringify(r.calls)}`);
  if (r.mode === 'push') assert.strictEqual(r.health.timer_origin_wakes, 0);
  assert.strictEqual(r.health.fallback_found_work, 0);
  return r;
}

// Resolves with the first match of `pattern` in the child's stdout (the child keeps
// running); the returned promise `exited` resolves when it ends.
function startApp(app, lane, options = {}) {
  let found;
  const matched = new Promise((resolve) => (found = resolve));
  const exited = run(appArgv(app, lane, options.args), {
    ...options,
    env: { ...laneEnv(lane), ...options.env },
    onStdout: (stdout, child) => {
      const m = stdout.match(options.ready);
      if (m) found({ match: m, child });
    },
  });
  exited.then((result) => found({ match: null, result }));
  return { ready: matched, exited };
}

module.exports = { SIDECAR, NODE, APPS, LANE_SECRET_VAR, run, runApp, appArgv, laneEnv, report, describe, assertRan, startApp };
