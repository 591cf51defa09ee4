'use strict';
// The guest's one session with the sidecar: the call channel (fd PUSHNET_FD, blocking),
// the event source (push: the event channel on PUSHNET_EVENT_FD; poll: per-handle
// polling), the table of live handles by id, and the reference count that decides
// whether pending events keep the process alive.

const { CallChannel } = require('./channel');
const { sysError } = require('./errors');
const { debug, enabled: debugging } = require('./debug');

const CAPABILITIES = ['push', 'poll', 'noreply', 'tcp', 'unix', 'udp', 'dns', 'credit', 'event_channel', 'pressure'];
const CREDIT_WINDOW = 256 * 1024;

class Session {
  // env: { fd, eventFd, vm, secret (undefined on a pre-attached stream), mode: 'push' | 'poll' }
  constructor(env, originals) {
    this.mode = env.mode;
    this.originals = originals;
    // Live handles (stream sockets, servers, UDP sockets) by their sidecar id: socket
    // and server ids come from one counter, so one table holds them all.
    this.handles = new Map();
    // Handles waiting for the event of a `noreply` call (a non-blocking connect).
    this.requests = new Map();
    this.refs = 0;
    this.lastSeq = 0;
    this.seqGaps = 0;
    // Events dispatched so far: a socket that sees it move knows that events pushed
    // before then (a `pressure`, say) have reached it.
    this.dispatched = 0;
    this.lost = null;
    this.channel = new CallChannel(env.fd, (frame) => this.stray(frame));
    // A stream `sidecar run` hands over is already attached to its VM: the hello then
    // carries no VM name and no secret (PROTOCOL.md §6.4).
    const credentials = env.secret === undefined ? {} : { vm: env.vm, secret: env.secret };
    const hello = this.channel.call('hello', {
      version: 1,
      ...credentials,
      mode: this.mode,
      credit: CREDIT_WINDOW,
      capabilities: this.mode === 'push' ? CAPABILITIES : CAPABILITIES.filter((c) => c !== 'event_channel'),
      cwd: process.cwd(),
    }).result;
    this.hello = hello;
    this.capabilities = new Set(hello.capabilities);
    this.channel.sendLimit = hello.max_frame;
    // The sidecar says when a write passes a socket's high-water mark (PROTOCOL §11), so
    // writes need not be synchronous to learn it.
    this.pressure = this.capabilities.has('pressure');
    for (const needed of ['noreply', 'credit', this.mode]) {
      if (!this.capabilities.has(needed)) throw new Error(`pushnet: the sidecar does not offer '${needed}'`);
    }
    if (this.mode === 'push') {
      if (!hello.event_channel_token) throw new Error('pushnet: the sidecar offered no event channel');
      this.events = require('./push_events').attach(this, env, hello.event_channel_token);
    } else {
      this.events = require('./poll_events').create(this);
    }
  }

  call(method, params, payload) {
    return this.channel.call(method, params, payload);
  }

  send(method, params, payload) {
    return this.channel.send(method, params, payload);
  }

  register(id, handle) {
    this.handles.set(id, handle);
    this.events.watch(id, handle);
  }

  unregister(id) {
    this.handles.delete(id);
    this.events.unwatch(id);
  }

  // A handle that holds the process open (ref'd and active) takes a reference; the
  // event source is ref'd while there is at least one.
  ref() {
    if (this.refs++ === 0) this.events.ref();
  }

  unref() {
    if (--this.refs === 0) this.events.unref();
  }

  // One event from the sidecar (pushed, or returned by a poll).
  dispatch(event, payload) {
    if (debugging) debug('event', JSON.stringify(event), payload ? payload.length : 0);
    this.dispatched++;
    if (typeof event.seq === 'number' && event.seq > 0) {
      if (this.lastSeq !== 0 && event.seq !== this.lastSeq + 1) this.seqGaps++;
      this.lastSeq = event.seq;
    }
    let target;
    if (event.request !== undefined && this.requests.has(event.request)) {
      target = this.requests.get(event.request);
      this.requests.delete(event.request);
    } else if (event.server !== undefined) {
      // Before `socket`: an `accept` names both, and belongs to the server.
      target = this.handles.get(event.server);
    } else if (event.socket !== undefined) {
      target = this.handles.get(event.socket);
    }
    if (target) {
      target._onEvent(event, payload);
    } else if (event.event === 'accept' && event.socket !== undefined) {
      // A connection accepted for a server this guest closed meanwhile (the accept was
      // pushed before the sidecar saw net.server_close): nobody will take it, so it is
      // closed, and its peer sees the close.
      try {
        this.send('net.destroy', { socket: event.socket });
      } catch {
        // The sidecar is gone: so is the connection.
      }
    } else if (event.event === 'error' && event.request !== undefined && event.code === 'EBADF') {
      // A `noreply` call on an id the sidecar closed meanwhile (the guest sends them only
      // on ids it holds): e.g. net.shutdown sent in the same tick as the peer's destroy,
      // which closes this end too (PROTOCOL §7.1). The `close` for the id says the rest.
    } else if (event.event === 'error' && event.socket === undefined && event.server === undefined) {
      process.emitWarning(`pushnet: sidecar error ${event.code}: ${event.message}`);
    }
    // Anything else names an id this guest already let go of (destroyed, closed): the
    // sidecar's `close` for it, or data that raced the destroy. Nothing to do.
  }

  // Frames on the call stream that are not the awaited reply.
  stray(frame) {
    if (frame.header.type === 'event') this.dispatch(frame.header, frame.payload);
  }

  // The sidecar is gone: every call fails, every handle sees ECONNRESET then closes.
  connectionLost(cause) {
    if (this.lost) return;
    this.lost = sysError('ECONNRESET', 'pushnet', `(the sidecar connection was lost${cause ? `: ${cause.message}` : ''})`);
    this.channel.fail(cause || null);
    const handles = [...this.handles.values(), ...this.requests.values()];
    this.handles.clear();
    this.requests.clear();
    for (const handle of handles) handle._onLost(this.lost);
  }
}

module.exports = { Session, CREDIT_WINDOW };
