'use strict';
// The frame codec of docs/PROTOCOL.md §3:
//   u32 BE total | u32 BE header_len | JSON header | raw payload
// where total = 4 + header_len + payload_len. Socket bytes are the payload, never JSON.

const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;

class FramingError extends Error {
  constructor(message) {
    super(message);
    this.code = 'EPROTO';
  }
}

// The most bytes encodeHead writes for a header of JSON text `json` (3 bytes per UTF-16
// unit at worst).
function headRoom(json) {
  return 8 + 3 * json.length;
}

// Writes the prefix and the header's JSON text into `into` from offset 0 (it needs
// headRoom(json) bytes); returns the bytes written, 8 + header_len. The JSON goes
// straight into `into`: no Buffer of it is made and copied.
function encodeHead(into, json, payloadLength) {
  const headerLength = into.utf8Write(json, 8);
  into.writeUInt32BE(4 + headerLength + payloadLength, 0);
  into.writeUInt32BE(headerLength, 4);
  return 8 + headerLength;
}

// Encodes one frame as a list of buffers to write in order: [prefix+header] or
// [prefix+header, payload] (the payload is not copied). `header`: an object or its JSON.
function encodeFrame(header, payload) {
  const json = typeof header === 'string' ? header : JSON.stringify(header);
  const payloadLength = payload ? payload.length : 0;
  const head = Buffer.allocUnsafe(headRoom(json));
  const headLength = encodeHead(head, json, payloadLength);
  return payloadLength > 0 ? [head.subarray(0, headLength), payload] : [head.subarray(0, headLength)];
}

// Method names as JSON strings, made once each.
const quotedMethods = new Map();

// The JSON text of a call header: the same as JSON.stringify of { type, id, method,
// params, noreply? }, built from pieces so that only params is stringified.
function callJson(id, method, params, noreply) {
  let quoted = quotedMethods.get(method);
  if (quoted === undefined) {
    quoted = JSON.stringify(String(method));
    quotedMethods.set(method, quoted);
  }
  const tail = noreply ? ',"noreply":true}' : '}';
  // id: the channel's own counter, a safe integer, so its decimal text is its JSON.
  return '{"type":"call","id":' + id + ',"method":' + quoted + ',"params":' + JSON.stringify(params) + tail;
}

// Incremental decoder: push() byte chunks as they arrive, then take frames with next()
// until it returns null. A frame is { header, payload } (payload: a Buffer, maybe empty).
// Chunks are kept by reference (no copy) unless a frame spans several of them; a caller
// that reuses its read buffer must push a copy.
class FrameDecoder {
  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.chunks = [];
    this.offset = 0; // read position in chunks[0]
    this.length = 0; // bytes buffered in total, after offset
  }

  push(chunk) {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  // Bytes [start, start + 4) as a u32 BE without consuming them.
  peekU32(start) {
    let value = 0;
    let index = 0;
    let position = this.offset + start;
    for (let i = 0; i < 4; i++) {
      while (position >= this.chunks[index].length) {
        position -= this.chunks[index].length;
        index++;
      }
      value = value * 256 + this.chunks[index][position];
      position++;
    }
    return value;
  }

  // Consumes n bytes and returns them as one Buffer (a view when they sit in one chunk).
  take(n) {
    const first = this.chunks[0];
    let out;
    if (first.length - this.offset >= n) {
      out = first.subarray(this.offset, this.offset + n);
      this.offset += n;
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0];
        const copied = chunk.copy(out, filled, this.offset, Math.min(chunk.length, this.offset + n - filled));
        filled += copied;
        this.offset += copied;
        if (this.offset === chunk.length) {
          this.chunks.shift();
          this.offset = 0;
        }
      }
    }
    if (this.chunks.length > 0 && this.offset === this.chunks[0].length) {
      this.chunks.shift();
      this.offset = 0;
    }
    this.length -= n;
    return out;
  }

  // Takes every buffered byte not decoded yet, as a list of buffers (for another decoder).
  takeRest() {
    const rest = this.chunks.map((chunk, i) => (i === 0 ? chunk.subarray(this.offset) : chunk));
    this.chunks = [];
    this.offset = 0;
    this.length = 0;
    return rest;
  }

  // The next complete frame, or null. Throws FramingError when the stream is broken
  // (the stream can no longer be trusted: the caller must close it).
  next() {
    if (this.length < 4) return null;
    const total = this.peekU32(0);
    if (total > this.maxFrame) throw new FramingError(`frame of ${total} bytes exceeds the limit of ${this.maxFrame}`);
    if (total < 4) throw new FramingError(`frame total ${total} < 4`);
    if (this.length < 4 + total) return null;
    const frame = this.take(4 + total);
    const headerLength = frame.readUInt32BE(4);
    if (headerLength > total - 4) throw new FramingError(`header length ${headerLength} exceeds the frame`);
    let header;
    try {
      header = JSON.parse(frame.toString('utf8', 8, 8 + headerLength));
    } catch (e) {
      throw new FramingError(`malformed header from the sidecar: ${e.message}`);
    }
    return { header, payload: frame.subarray(8 + headerLength) };
  }
}

module.exports = { encodeFrame, encodeHead, headRoom, callJson, FrameDecoder, FramingError, DEFAULT_MAX_FRAME };
