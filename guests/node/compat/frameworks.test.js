'use strict';
// Published HTTP and WebSocket packages, server and client in one process, each
// unmodified under plain Node and as both kinds of guest (helpers.js).

const { test } = require('node:test');
const { LANES, laneName, runCompat } = require('./helpers');

const SERVED = ['net.listen', 'net.connect', 'net.write'];
const APPS = [
  { app: 'express_fetch.js', output: /express fetch ok/ },
  { app: 'fastify_undici_axios.js', output: /fastify undici axios ok/ },
  { app: 'ws_echo.js', output: /ws echo ok/ },
  { app: 'socketio.js', output: /socket\.io ok/ },
];

for (const lane of LANES) {
  for (const { app, output } of APPS) {
    test(`${app} passes ${laneName(lane)}`, { timeout: 90000 }, async () => {
      await runCompat(app, lane, { output, methods: SERVED });
    });
  }
}
