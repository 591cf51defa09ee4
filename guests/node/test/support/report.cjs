'use strict';
// Loaded with `node -r` by the tests: at exit, one line on stderr saying whether the
// program ran as a guest and, if so, its session's counters (calls made, events pushed,
// the sidecar's health), so a test can check the sockets really were sidecar sockets.
// Workers load it too (they inherit execArgv): only the main thread reports.
if (require('worker_threads').isMainThread) process.on('exit', () => {
  const api = process[Symbol.for('pushnet')];
  let report = { guest: false };
  if (api) {
    const stats = api.stats();
    report = { guest: true, mode: api.mode, seq_gaps: api.seqGaps(), calls: stats.session.calls, events: stats.session.events_pushed, health: stats.health };
  }
  process.stderr.write(`pushnet-report: ${JSON.stringify(report)}\n`);
});
