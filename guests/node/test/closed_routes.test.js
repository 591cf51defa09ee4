'use strict';
// The in-process routes to a native socket that the runtime closes in a guest
// (lib/closed_routes.js): apps/closed_routes.js checks each as a push-mode and a
// poll-mode guest (under plain Node they are open: apps/escape_routes.js and
// crates/sidecar/tests/sandbox_escape.rs show that, and that the sandbox closes them).

const { test } = require('node:test');
const { runApp, assertRan } = require('./helpers');

for (const lane of ['push', 'poll']) {
  test(`closed routes fail clearly in a ${lane}-mode guest`, { timeout: 60000 }, async () => {
    assertRan(await runApp('closed_routes.js', lane), lane, { output: /closed routes ok/ });
  });
}

test('PUSHNET_ALLOW_INSPECTOR=1 lets a guest open the inspector', { timeout: 60000 }, async () => {
  const result = await runApp('closed_routes.js', 'push', { args: ['allow-inspector'], env: { PUSHNET_ALLOW_INSPECTOR: '1' } });
  assertRan(result, 'push', { output: /closed routes ok/ });
});
