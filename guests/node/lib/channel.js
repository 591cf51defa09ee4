'use strict';
// The synchronous call channel: the primary stream (fd 3 by default), left blocking.
//
// A call writes its frame with fs.writeSync and then reads with fs.readSync until the
// reply with its id is complete. The JS thread is frozen meanwhile, exactly like an
// isolate's callSync: nothing else of the program runs, so the reply is seen before any
// event pushed about the id it creates can be dispatched (events are dispatched from the
// event loop, which is not running). That is why the guest never has to hold events.
//
// `noreply` sends (writes, credit grants) return at once; the sidecar answers nothing on
// success and reports a failure as an `error` event naming the request.

const fs = require('fs');
const { encodeFrame, FrameDecoder } = require('./wire');
const { sysError } = require('./errors');
const { debug, enabled: debugging } = require('./debug');

// A reply whose `error` is set: thrown by call() with the wire error attached.
class WireError extends Error {
  constructor(method, wire) {
    super(`${method}: ${wire.code}: ${wire.message}`);
    this.code = wire.code;
    this.wire = wire;
  }
}

class CallChannel {
  // onStray(frame): frames read while waiting that are not the awaited reply (events
  // on a stream that carries them: poll mode's unsolicited errors, or events that came
  // before the event channel's hello reply).
  constructor(fd, onStray) {
    this.fd = fd;
    this.onStray = onStray || (() => {});
    this.nextId = 1;
    this.decoder = new FrameDecoder();
    this.buffer = Buffer.allocUnsafe(64 * 1024);
    this.broken = null;
    // Largest frame the sidecar accepts (its hello reply says; 16 MiB by default).
    this.sendLimit = 16 * 1024 * 1024;
  }

  takeId() {
    return this.nextId++;
  }

  // A blocking call: returns { result, payload } or throws WireError (the sidecar said
  // no) or a ECONNRESET error (the sidecar is gone).
  call(method, params, payload) {
    const id = this.takeId();
    this.write({ type: 'call', id, method, params: params || {} }, payload);
    const frame = this.waitReply(id);
    const { header } = frame;
    if (header.error) throw new WireError(method, header.error);
    return { result: header.result === undefined ? null : header.result, payload: frame.payload };
  }

  // A call with `noreply`; returns its request id (named by an `error` event if it fails).
  send(method, params, payload) {
    const id = this.takeId();
    this.write({ type: 'call', id, method, params: params || {}, noreply: true }, payload);
    return id;
  }

  write(header, payload) {
    this.checkUsable();
    if (debugging) debug(`fd ${this.fd} →`, JSON.stringify(header), payload ? payload.length : 0);
    const parts = encodeFrame(header, payload);
    // The sidecar closes a session that sends a frame over its limit: refuse it here.
    const total = parts[0].length - 4 + (payload ? payload.length : 0);
    if (total > this.sendLimit) {
      throw Object.assign(new Error(`${header.method}: a ${total}-byte frame exceeds the sidecar's limit of ${this.sendLimit}`), { code: 'EMSGSIZE' });
    }
    try {
      if (parts.length === 1) writeAll(this.fd, parts[0]);
      else writevAll(this.fd, parts[0], parts[1]);
    } catch (e) {
      throw this.fail(e);
    }
  }

  waitReply(id) {
    for (;;) {
      let frame;
      while ((frame = this.decoder.next()) !== null) {
        if (frame.header.type === 'reply' && frame.header.id === id) {
          if (debugging) debug(`fd ${this.fd} ←`, JSON.stringify(frame.header));
          return frame;
        }
        this.onStray(frame);
      }
      let n;
      try {
        n = readSome(this.fd, this.buffer);
      } catch (e) {
        throw this.fail(e);
      }
      if (n === 0) throw this.fail(null);
      // The read buffer is reused: the decoder keeps a copy.
      this.decoder.push(Buffer.from(this.buffer.subarray(0, n)));
    }
  }

  checkUsable() {
    if (this.broken) throw this.broken;
  }

  // The sidecar is gone (or the stream broke): every later call fails the same way.
  fail(cause) {
    if (!this.broken) {
      const err = sysError('ECONNRESET', 'pushnet', cause ? `(the sidecar connection broke: ${cause.message})` : '(the sidecar closed the connection)');
      this.broken = err;
    }
    return this.broken;
  }
}

function writeAll(fd, buffer) {
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += fs.writeSync(fd, buffer, offset, buffer.length - offset);
    } catch (e) {
      if (e.code === 'EINTR' || e.code === 'EAGAIN') continue;
      throw e;
    }
  }
}

// Header and payload in one writev (one system call, no copy of the payload).
function writevAll(fd, head, payload) {
  let written;
  for (;;) {
    try {
      written = fs.writevSync(fd, [head, payload]);
      break;
    } catch (e) {
      if (e.code === 'EINTR' || e.code === 'EAGAIN') continue;
      throw e;
    }
  }
  if (written >= head.length + payload.length) return;
  if (written < head.length) {
    writeAll(fd, head.subarray(written));
    written = head.length;
  }
  writeAll(fd, payload.subarray(written - head.length));
}

function readSome(fd, buffer) {
  for (;;) {
    try {
      return fs.readSync(fd, buffer, 0, buffer.length, null);
    } catch (e) {
      if (e.code === 'EINTR' || e.code === 'EAGAIN') continue;
      throw e;
    }
  }
}

module.exports = { CallChannel, WireError };
