'use strict';
// The pushnet Node guest runtime, loaded before the program by
// `sidecar run --vm NAME -- node app.js` (NODE_OPTIONS=--require <this file>).
//
// With PUSHNET_FD set it attaches to the sidecar and patches node:net, node:dgram,
// node:dns and node:tls (see lib/install.js); without it (a plain `node`, or a child process of a
// guest) it does nothing, except in a worker thread of a guest, which it leaves with no
// network (lib/workers.js).

if (process.env.PUSHNET_FD !== undefined) {
  try {
    require('./lib/install').install();
  } catch (e) {
    process.stderr.write(`pushnet: cannot start the Node guest runtime: ${e && e.stack ? e.stack : e}\n`);
    process.exit(70);
  }
} else if (!require('worker_threads').isMainThread && require('./lib/workers').isGuestWorker()) {
  // A worker thread of a guest: no session, no network (see lib/workers.js).
  require('./lib/workers').installInWorker();
}
