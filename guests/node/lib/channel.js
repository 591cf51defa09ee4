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
//
// Every write is synchronous, so a frame is encoded into one scratch buffer per channel,
// reused by the next call: a call allocates no Buffer. A payload of at most JOIN_PAYLOAD
// bytes (an HTTP request or response, a credit grant has none) is copied behind the
// header so the frame is one write(2); a larger one is written from where it is, by writev.

const fs = require('fs');
const { encodeFrame, encodeHead, headRoom, callJson, FrameDecoder } = require('./wire');
const { sysError } = require('./errors');
const { debug, enabled: debugging, redact } = require('./debug');

const JOIN_PAYLOAD = 4 * 1024;
const SCRATCH = 16 * 1024;

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
    this.scratch = Buffer.allocUnsafeSlow(SCRATCH);
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
    this.write(method, callJson(id, method, params || {}, false), payload);
    const frame = this.waitReply(id);
    const { header } = frame;
    if (header.error) throw new WireError(method, header.error);
    return { result: header.result === undefined ? null : header.result, payload: frame.payload };
  }

  // A call with `noreply`; returns its request id (named by an `error` event if it fails).
  send(method, params, payload) {
    const id = this.takeId();
    this.write(method, callJson(id, method, params || {}, true), payload);
    return id;
  }

  // Writes one call frame; `json` is its header's JSON text (wire.callJson).
  write(method, json, payload) {
    this.checkUsable();
    if (debugging) debug(`fd ${this.fd} →`, redact(json), payload ? payload.length : 0);
    const payloadLength = payload ? payload.length : 0;
    const joined = payloadLength <= JOIN_PAYLOAD;
    let head;
    let headLength;
    if (headRoom(json) + JOIN_PAYLOAD <= this.scratch.length) {
      head = this.scratch;
      headLength = encodeHead(head, json, payloadLength);
    } else {
      // A header too big for the scratch buffer (long params): a buffer of its own.
      [head] = encodeFrame(json, payload);
      headLength = head.length;
    }
    // The sidecar closes a session that sends a frame over its limit: refuse it here.
    const total = headLength - 4 + payloadLength;
    if (total > this.sendLimit) {
      throw Object.assign(new Error(`${method}: a ${total}-byte frame exceeds the sidecar's limit of ${this.sendLimit}`), { code: 'EMSGSIZE' });
    }
    try {
      if (joined && head === this.scratch) {
        if (payloadLength > 0) head.set(payload, headLength);
        writeAll(this.fd, head, headLength + payloadLength);
      } else if (payloadLength === 0) {
        writeAll(this.fd, head, headLength);
      } else {
        writevAll(this.fd, head.subarray(0, headLength), payload);
      }
    } catch (e) {
      throw this.fail(e);
    }
  }

  waitReply(id) {
    for (;;) {
      let frame;
      while ((frame = this.decoder.next()) !== null) {
        if (frame.header.type === 'reply' && frame.header.id === id) {
          if (debugging) debug(`fd ${this.fd} ←`, redact(JSON.stringify(frame.header)));
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

// Writes buffer[0, length) (all of it by default).
function writeAll(fd, buffer, length = buffer.length) {
  let offset = 0;
  while (offset < length) {
    try {
      offset += fs.writeSync(fd, buffer, offset, length - offset);
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
