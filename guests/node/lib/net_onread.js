'use strict';
// The `onread` option of net.Socket / net.connect ({ buffer, callback }): received bytes
// are copied into the program's buffer (a Uint8Array, or a function returning one) and
// handed to callback(nread, buffer) instead of 'data' events. A callback that returns
// false stops reading, as Node's does: what arrives meanwhile waits (and, past the
// receive window, the sidecar stops reading) until resume(). EOF still ends the
// readable side ('end').

function parse(onread) {
  if (onread === null || typeof onread !== 'object') return null;
  const { buffer, callback } = onread;
  if (typeof callback !== 'function') return null;
  if (typeof buffer !== 'function' && !(buffer instanceof Uint8Array)) return null;
  return { buffer, callback, stopped: false, waiting: [] };
}

// Delivers `payload` to the program's callback; returns the bytes it consumed.
function deliver(socket, state, payload) {
  if (state.stopped) {
    state.waiting.push(payload);
    return 0;
  }
  let offset = 0;
  while (offset < payload.length) {
    const target = typeof state.buffer === 'function' ? state.buffer() : state.buffer;
    const n = Math.min(target.length, payload.length - offset);
    if (n === 0) break;
    target.set(payload.subarray(offset, offset + n), 0);
    offset += n;
    if (state.callback(n, target) === false) {
      state.stopped = true;
      if (offset < payload.length) state.waiting.push(payload.subarray(offset));
      break;
    }
  }
  return offset;
}

// resume(): deliver what waited, until the callback stops again.
function restart(socket, state) {
  state.stopped = false;
  let consumed = 0;
  while (!state.stopped && state.waiting.length > 0) consumed += deliver(socket, state, state.waiting.shift());
  return consumed;
}

module.exports = { parse, deliver, restart };
