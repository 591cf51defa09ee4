'use strict';
// What every guest handle (stream socket, server, UDP socket) shares: whether it holds
// the process open. A handle counts while it is active (has or is getting a sidecar id)
// and ref'd; the session's event source is ref'd while any handle counts.

function updateRef(handle) {
  const want = handle._refed && handle._active;
  if (want && !handle._counted) {
    handle._counted = true;
    handle._session.ref();
  } else if (!want && handle._counted) {
    handle._counted = false;
    handle._session.unref();
  }
}

// The guest's one session, set by install() before anything is patched.
let current = null;
function session() {
  if (!current) throw new Error('pushnet: no sidecar session (the preload did not attach)');
  return current;
}
function setSession(s) {
  current = s;
}

module.exports = { updateRef, session, setSession };
