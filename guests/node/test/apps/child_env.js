'use strict';
// The guest's own environment no longer shows PUSHNET_* (nor the secret), and a child
// process does not attach to the guest's session: it runs as plain Node.
const { execFileSync } = require('child_process');
const assert = require('assert');

const NAMES = ['PUSHNET_FD', 'PUSHNET_EVENT_FD', 'PUSHNET_VM', 'PUSHNET_SECRET', 'PUSHNET_MODE'];
const own = NAMES.filter((k) => k in process.env);
assert.deepStrictEqual(own, []);
const script = `console.log(JSON.stringify({ vars: ${JSON.stringify(NAMES)}.filter((k) => k in process.env), guest: Boolean(process[Symbol.for('pushnet')]) }))`;
const child = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' });
assert.deepStrictEqual(JSON.parse(child), { vars: [], guest: false });
console.log('child env ok');
