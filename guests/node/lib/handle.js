'use strict';
// What every guest handle (stream socket, server, UDP socket) shares: whether it holds
// the process open. A handle counts while it is active (has or is getting a sidecar id)
// and ref'd; the session's event source is ref'd while any handle counts.

// A handle with a `_busy()` counts only while busy: as a libuv stream, which keeps the
// loop alive only while it reads, writes or connects (a paused idle socket does not).
function updateRef(handle) {
  const want = handle._refed && handle._active && (handle._busy === undefined || handle._busy());
  if (want && !handle._counted) {
    handle._counted = true;
    handle._session.ref();
  } else if (!want && handle._counted) {
    handle._counted = false;
    handle._session.unref();
  }
}

// Gives a handle class Node's ref()/unref(): whether the handle holds the process open.
function defineRef(proto) {
  proto.ref = function () {
    this._refed = true;
    updateRef(this);
    return this;
  };
  proto.unref = function () {
    this._refed = false;
    updateRef(this);
    return this;
  };
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

module.exports = { updateRef, defineRef, session, setSession };
