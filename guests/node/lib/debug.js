'use strict';
// PUSHNET_DEBUG=1: every call and event on stderr (for debugging the runtime itself).
// Callers test `enabled` first: the hot paths must not format what nobody prints.
const enabled = Boolean(process.env.PUSHNET_DEBUG);
function debug(...args) {
  if (enabled) process._rawDebug('pushnet:', ...args);
}

// The credentials a header may carry: a VM's attach secret (hello) and the one-time
// event channel token (hello's reply, the event channel's hello).
const CREDENTIALS = /"(secret|event_channel_token)":"(?:[^"\\]|\\.)*"/g;

// A header's JSON text as debug output shows it: every credential's value replaced by
// "<redacted>". Only what is printed changes; the frame written is the caller's own.
function redact(json) {
  return json.replace(CREDENTIALS, '"$1":"<redacted>"');
}

module.exports = { debug, enabled, redact };
