'use strict';
// The compat suites run published npm packages (installed here by `npm ci`) the way
// guests/node/test runs its own apps: each app under plain Node, as a push-mode guest and
// as a poll-mode guest of an embedded sidecar, with guests/node/test/helpers.js's
// watchdog and report checks. What this adds: the apps live in ./apps (so `require`
// finds ./node_modules), and a guest can be given `--allow` rules for host servers.

const path = require('path');
const fs = require('fs');
const { SIDECAR, NODE, run, describe, assertRan, report } = require('../test/helpers');

const APPS = path.join(__dirname, 'apps');
const REPORT = path.join(__dirname, '..', 'test', 'support', 'report.cjs');
const LANES = ['plain', 'push', 'poll'];

if (!fs.existsSync(path.join(__dirname, 'node_modules'))) {
  throw new Error(`${path.join(__dirname, 'node_modules')} is missing: run \`npm ci\` in ${__dirname} (.ci/run does)`);
}

// `node -r report.cjs apps/<app>` under plain Node, or as a guest of VM `t` of an
// embedded sidecar ('push' or 'poll'), its host destinations limited to `allow`.
function compatArgv(app, lane, { allow = [] } = {}) {
  const node = [NODE, '-r', REPORT, path.join(APPS, app)];
  if (lane === 'plain') return node;
  const rules = allow.flatMap((rule) => ['--allow', rule]);
  return [SIDECAR, 'run', '--vm', 't', ...(lane === 'poll' ? ['--poll'] : []), ...rules, '--', ...node];
}

function laneName(lane) {
  return lane === 'plain' ? 'under plain node' : `as a ${lane}-mode guest`;
}

// Runs the app in `lane` (env adds to the environment; allow as compatArgv) and asserts
// it exited 0 printing `output` and, as a guest, made each of `methods`.
async function runCompat(app, lane, { output, methods = [], allow = [], env = {}, timeoutMs = 60000 }) {
  const result = await run(compatArgv(app, lane, { allow }), { env, timeoutMs });
  return assertRan(result, lane, { output, methods });
}

module.exports = { APPS, LANES, compatArgv, laneName, runCompat, run, describe, report };
