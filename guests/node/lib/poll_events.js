'use strict';
// Poll mode (PROTOCOL.md §10): the old polyfill's way, kept honest as the baseline. The
// sidecar pushes nothing; each live handle asks for its events with `net.poll` /
// `net.server_poll` / `dgram.poll` and `wait_ms = 0`, takes every event that is ready,
// and when none is, re-arms a 4 ms timer. Every event therefore waits for a tick.
//
// The timers are ref'd only while some handle holds the process open (Session.ref), so
// unref'd handles do not keep it alive, as in push mode.

const POLL_INTERVAL_MS = 4;
// Events taken in one go before yielding to the event loop (setImmediate).
const BATCH = 64;

const METHODS = {
  socket: ['net.poll', 'socket'],
  server: ['net.server_poll', 'server'],
  udp: ['dgram.poll', 'socket'],
};

function create(session) {
  const watched = new Map(); // id → { handle, timer }
  let held = false;

  function arm(id, entry, immediate) {
    const run = () => poll(id);
    entry.timer = immediate ? setImmediate(run) : setTimeout(run, POLL_INTERVAL_MS);
    if (!held) entry.timer.unref();
  }

  // Dispatching runs the program's handlers: one that throws (an uncaught exception
  // the program may catch with process.on('uncaughtException')) must not stop this
  // handle's polling, so the next poll is armed in a finally.
  function poll(id) {
    const entry = watched.get(id);
    if (!entry) return;
    entry.timer = null;
    const [method, field] = METHODS[entry.handle._pollKind];
    let next = 'immediate';
    try {
      for (let i = 0; i < BATCH; i++) {
        let reply;
        try {
          reply = session.call(method, { [field]: id, wait_ms: 0 });
        } catch (e) {
          next = null;
          if (session.channel.broken) return session.connectionLost(e);
          // EBADF: the id is gone (closed meanwhile); nothing more to poll.
          watched.delete(id);
          return undefined;
        }
        if (reply.result === null) {
          next = 'timer';
          return undefined;
        }
        session.dispatch(reply.result, reply.payload);
        if (watched.get(id) !== entry) return undefined; // closed by that event
      }
    } finally {
      // Not if that handle was closed meanwhile (by an event, or by the program).
      if (next !== null && watched.get(id) === entry && entry.timer === null) arm(id, entry, next === 'immediate');
    }
    return undefined;
  }

  return {
    watch(id, handle) {
      const entry = { handle, timer: null };
      watched.set(id, entry);
      arm(id, entry, true);
    },
    unwatch(id) {
      const entry = watched.get(id);
      if (!entry) return;
      watched.delete(id);
      if (entry.timer) {
        clearTimeout(entry.timer);
        clearImmediate(entry.timer);
      }
    },
    ref() {
      held = true;
      for (const entry of watched.values()) if (entry.timer) entry.timer.ref();
    },
    unref() {
      held = false;
      for (const entry of watched.values()) if (entry.timer) entry.timer.unref();
    },
  };
}

module.exports = { create, POLL_INTERVAL_MS };
