'use strict';
// Push mode: events arrive on the event channel (PROTOCOL.md §6.3), a second stream the
// sidecar writes only events to. Its hello is made synchronously (the fd is still
// blocking), then the fd is wrapped in Node's ORIGINAL net.Socket so its bytes arrive on
// the event loop like any socket's: 'data' → frames → Session.dispatch. No timer is ever
// armed to look for events; an idle guest does not wake.
//
// The channel socket is unref'd unless some guest handle holds a reference (Session.ref),
// so a program exits when nothing is left, as under plain Node.

const { CallChannel } = require('./channel');
const { FrameDecoder } = require('./wire');

const ARENA = 512 * 1024;
const MIN_READ = 128 * 1024;

function attach(session, env, token) {
  // Events that reach the channel before its hello reply (the sidecar queues events
  // until the channel attaches) are kept and dispatched in order once it is wrapped.
  const early = [];
  const hello = new CallChannel(env.eventFd, (frame) => early.push(frame));
  // The one-time token is what attaches this stream; no secret is needed.
  hello.call('hello', { version: 1, event_channel_token: token });

  const decoder = new FrameDecoder();
  // Reads land in an arena of ARENA bytes, each in the part the previous ones left (at
  // least MIN_READ), so a frame read whole is a view: a 64 KiB `data` payload is neither
  // split over two 64 KiB reads (libuv's own buffer size) nor copied to be joined. The
  // decoder keeps chunks by reference; an arena is never written twice.
  let arena = Buffer.allocUnsafe(ARENA);
  let used = 0;
  const nextBuffer = () => {
    if (ARENA - used < MIN_READ) {
      arena = Buffer.allocUnsafe(ARENA);
      used = 0;
    }
    return arena.subarray(used);
  };
  const socket = new session.originals.Socket({
    fd: env.eventFd,
    readable: true,
    writable: false,
    onread: {
      buffer: nextBuffer,
      callback: (n, buffer) => {
        used += n;
        decoder.push(buffer.subarray(0, n));
        pump();
      },
    },
  });
  // Bytes the hello reader had read past its reply belong to the event stream.
  for (const rest of hello.decoder.takeRest()) decoder.push(rest);
  // Decodes and dispatches every complete frame. A framing error means the stream can
  // no longer be trusted: the session is lost. An exception thrown by a program's
  // handler propagates as in Node (uncaught), and the frames after it are still
  // dispatched on the next tick.
  const pump = () => {
    for (;;) {
      let frame;
      try {
        frame = decoder.next();
      } catch (e) {
        socket.destroy();
        session.connectionLost(e);
        return;
      }
      if (frame === null) return;
      if (frame.header.type !== 'event') continue;
      let dispatched = false;
      try {
        session.dispatch(frame.header, frame.payload);
        dispatched = true;
      } finally {
        if (!dispatched) process.nextTick(pump);
      }
    }
  };
  socket.on('error', (e) => session.connectionLost(e));
  socket.on('close', () => session.connectionLost(null));
  socket.unref();
  for (const frame of early) session.dispatch(frame.header, frame.payload);
  // Frames read together with the hello reply.
  process.nextTick(pump);

  return {
    ref: () => socket.ref(),
    unref: () => socket.unref(),
    // Push mode needs nothing per handle: every event of the session arrives here.
    watch: () => {},
    unwatch: () => {},
  };
}

module.exports = { attach };
