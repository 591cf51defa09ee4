'use strict';
// PUSHNET_DEBUG=1: every call and event on stderr (for debugging the runtime itself).
const enabled = Boolean(process.env.PUSHNET_DEBUG);
function debug(...args) {
  if (enabled) process._rawDebug('pushnet:', ...args);
}
module.exports = { debug, enabled };
