'use strict';
// PUSHNET_DEBUG=1: every call and event on stderr (for debugging the runtime itself).
// Callers test `enabled` first: the hot paths must not format what nobody prints.
const enabled = Boolean(process.env.PUSHNET_DEBUG);
function debug(...args) {
  if (enabled) process._rawDebug('pushnet:', ...args);
}
module.exports = { debug, enabled };
