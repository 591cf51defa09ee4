//! A session's push side: replies and events, encoded and handed to the transport
//! without ever blocking the pusher.
//!
//! Every event gets the session's next sequence number under the same lock that hands it
//! to the transport, so `seq` order is delivery order with no gaps, whichever thread
//! pushes (the RPC loop today; the readiness thread's handlers for host sockets later).
//! A [`FrameSink`] must accept a frame without blocking: the in-process pipe queues it,
//! a stream transport writes what the kernel takes and queues the rest for its writer.
//!
//! With an event channel negotiated, events wait in a queue until the second stream
//! attaches, then go there; replies always go on the primary stream.
//!
//! In poll mode nothing is pushed: [`Outbound::deliver`] queues each event under the id it
//! names and notifies that id's fabric key, and a poll call takes it with
//! [`Outbound::take_polled`] and answers with [`Outbound::reply_polled`], which numbers it
//! then (so `seq` stays contiguous in the order the guest receives events). Events the
//! guest could not poll for are pushed even in poll mode: those that name no id, and the
//! `connect` that tells a `noreply` connect's new id.
//!
//! What is queued for a guest and not taken yet is capped per session (`room.rs`, [`Room`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use notify_fabric::Fabric;
use parking_lot::Mutex;
use serde::Serialize;
use sidecar_protocol::{
    encode_event_head, encode_reply_err, encode_reply_ok, Event, EventBody, Mode, SocketId,
    WireError, HEAD_GUESS,
};

use crate::core::Key;
use crate::metrics::{EventCounts, Metrics};

mod room;
pub use room::{Gate, Room};

/// Room for a `message` event's prefix and header (or a poll reply's around it): its
/// fields are ids, numbers and one IP address, under 200 bytes as JSON.
const MESSAGE_HEAD_ROOM: usize = 256;

/// An event waiting in a poll-mode queue, with its payload.
pub type Polled = (EventBody, Vec<u8>);

/// The id whose poll returns this event: the server for an `accept` (its new socket is
/// not known to the guest yet), none for the `connect` of a `noreply` connect (the event
/// is how the guest learns the socket's id, so it could poll for it only by guessing: it
/// is pushed, as a failed `noreply` call's `error` is), else the socket or server it
/// names.
fn poll_id(body: &EventBody) -> Option<u64> {
    match body {
        EventBody::Accept { server, .. } => Some(server.0),
        EventBody::Connect {
            request: Some(_), ..
        } => None,
        other => other
            .socket()
            .or(other.server().map(|s| SocketId(s.0)))
            .map(|s| s.0),
    }
}

/// Poll-mode delivery: per-id queues, and who to notify.
struct PollSide {
    session: u64,
    fabric: Fabric<Key>,
    queues: Mutex<HashMap<u64, PollQueue>>,
}

#[derive(Default)]
struct PollQueue {
    events: VecDeque<Polled>,
    bytes: usize,
}

/// The transport is gone; the frame was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// Where a session's encoded frames go. Must never block.
pub trait FrameSink: Send + Sync {
    /// Hands one complete encoded frame to the transport.
    fn send(&self, frame: Vec<u8>) -> Result<(), SinkClosed>;
    /// Hands one frame in two parts, its prefix and header (`head`) and its payload: a
    /// byte-stream sink writes both with one vectored write, so a large payload is not
    /// copied into a frame first. By default the parts are joined and sent.
    fn send_parts(&self, mut head: Vec<u8>, payload: &[u8]) -> Result<(), SinkClosed> {
        head.extend_from_slice(payload);
        self.send(head)
    }
    /// Closes the transport's outgoing side (after what was sent is flushed, if it can be).
    fn close(&self);
    /// Bytes handed over that the guest has not taken yet (0 if the transport cannot
    /// tell).
    fn queued_bytes(&self) -> usize {
        0
    }
    /// A listener notified once the guest has taken frames so that at most `target`
    /// bytes are left queued (and when the transport closes); `None` if the transport
    /// cannot tell (then only the fallback re-check sees room).
    fn listen_drained(&self, target: usize) -> Option<event_listener::EventListener> {
        let _ = target;
        None
    }
    /// The guest's side is gone: what is queued will never be taken.
    fn is_gone(&self) -> bool {
        false
    }
}

enum EventTarget {
    /// Events share the primary stream.
    Primary,
    /// An event channel was negotiated but has not attached yet.
    Waiting(VecDeque<Vec<u8>>),
    /// The event channel.
    Channel(Arc<dyn FrameSink>),
}

struct State {
    seq: u64,
    events: EventTarget,
    /// Bytes in `EventTarget::Waiting`.
    waiting_bytes: usize,
    closed: bool,
}

/// The push side of one session.
pub struct Outbound {
    primary: Arc<dyn FrameSink>,
    poll: Option<PollSide>,
    state: Mutex<State>,
    /// The largest frame this session's guest accepts.
    max_frame: usize,
    metrics: Arc<Metrics>,
    /// The guest negotiated `pressure`: it is told when a write passes the high-water mark.
    pressure: bool,
    /// Per-session counts (the guest's `stats` shows its own).
    pub session_events: EventCounts,
    pub events_undeliverable: AtomicU64,
    /// Datagrams dropped because a `message` event carrying them could not fit this
    /// guest's `max_frame` (also counted as finding no room, by the caller).
    pub datagrams_too_large: AtomicU64,
    /// The cap on what is queued for the guest, and who waits for room under it.
    pub room: Room,
}

impl Outbound {
    /// The push side of session `session`; `fabric` is used in poll mode to wake parked
    /// polls.
    pub fn new(
        primary: Arc<dyn FrameSink>,
        max_frame: usize,
        metrics: Arc<Metrics>,
        mode: Mode,
        session: u64,
        fabric: Fabric<Key>,
        pressure: bool,
    ) -> Self {
        let poll = (mode == Mode::Poll).then(|| PollSide {
            session,
            fabric,
            queues: Mutex::new(HashMap::new()),
        });
        Outbound {
            primary,
            poll,
            state: Mutex::new(State {
                seq: 0,
                events: EventTarget::Primary,
                waiting_bytes: 0,
                closed: false,
            }),
            max_frame,
            metrics,
            pressure,
            session_events: EventCounts::default(),
            events_undeliverable: AtomicU64::new(0),
            datagrams_too_large: AtomicU64::new(0),
            room: Room::new(crate::Limits::default().session_outbound_bytes),
        }
    }

    /// The cap on what may be queued for the guest (`session_outbound_bytes`).
    pub fn with_outbound_cap(mut self, cap: usize) -> Self {
        self.room = Room::new(cap);
        self
    }

    /// Pushes `pressure` for `socket` if the guest negotiated it: a write left `buffered`
    /// bytes for the peer, at or past the high-water mark. Callers push it once per
    /// crossing, when they start waiting to push the `drain` that ends it (and before
    /// that `drain` can be pushed).
    pub fn pressure(&self, socket: SocketId, buffered: usize) {
        if self.pressure {
            let buffered = buffered as u64;
            self.deliver(EventBody::Pressure { socket, buffered }, &[]);
        }
    }

    /// The largest payload a `data` event to this guest may carry (room left for the
    /// header, which is tiny for data events).
    pub fn max_data_payload(&self) -> usize {
        self.max_frame.saturating_sub(1024).max(1)
    }

    /// From now on events wait for an event channel.
    pub fn expect_event_channel(&self) {
        let mut state = self.state.lock();
        if matches!(state.events, EventTarget::Primary) {
            state.events = EventTarget::Waiting(VecDeque::new());
        }
    }

    /// The event channel attached: flush what waited, then send events there.
    pub fn attach_event_channel(&self, sink: Arc<dyn FrameSink>) {
        let mut state = self.state.lock();
        if let EventTarget::Waiting(queued) = &mut state.events {
            for frame in queued.drain(..) {
                if sink.send(frame).is_err() {
                    break;
                }
            }
        }
        state.waiting_bytes = 0;
        state.events = EventTarget::Channel(sink);
        drop(state);
        // A wait for room listens to the sinks there are: it must listen again.
        self.room.changed();
    }

    /// A successful reply (on the primary stream).
    pub fn reply_ok<T: Serialize + ?Sized>(&self, id: u64, result: &T, payload: &[u8]) {
        let mut frame = Vec::new();
        match encode_reply_ok(id, result, payload, self.max_frame, &mut frame) {
            Ok(()) => self.send_primary(frame),
            Err(e) => self.reply_err(
                id,
                &WireError::new(sidecar_protocol::ErrorCode::Emsgsize, e.to_string()),
            ),
        }
    }

    /// An error reply (on the primary stream).
    pub fn reply_err(&self, id: u64, error: &WireError) {
        let mut frame = Vec::new();
        if encode_reply_err(id, error, self.max_frame, &mut frame).is_ok() {
            self.send_primary(frame);
        }
    }

    fn send_primary(&self, frame: Vec<u8>) {
        if self.state.lock().closed {
            return;
        }
        if self.primary.send(frame).is_err() {
            self.state.lock().closed = true;
        }
    }

    /// Delivers one event: pushed in push mode; in poll mode queued under the id it names
    /// (pushed if it names none). Returns false if the session is gone.
    pub fn deliver(&self, body: EventBody, payload: &[u8]) -> bool {
        let Some(poll) = &self.poll else {
            return self.push(body, payload);
        };
        let Some(id) = poll_id(&body) else {
            return self.push(body, payload);
        };
        if self.state.lock().closed {
            return false;
        }
        {
            let mut queues = poll.queues.lock();
            let queue = queues.entry(id).or_default();
            queue.bytes += payload.len();
            queue.events.push_back((body, payload.to_vec()));
        }
        poll.fabric.notify_all(&Key::Poll(poll.session, id));
        true
    }

    /// Push mode: bytes of events handed to the transport that the guest has not taken
    /// yet (how far behind it is reading).
    pub fn queued_bytes(&self) -> usize {
        let state = self.state.lock();
        match &state.events {
            EventTarget::Primary => self.primary.queued_bytes(),
            EventTarget::Waiting(_) => state.waiting_bytes,
            EventTarget::Channel(sink) => sink.queued_bytes(),
        }
    }

    /// The largest datagram a `message` event (pushed, or in a poll reply) to this guest
    /// can carry within its `max_frame`.
    pub fn max_datagram(&self) -> usize {
        self.max_frame.saturating_sub(MESSAGE_HEAD_ROOM)
    }

    /// Room for a datagram of `len` bytes: in poll mode in `id`'s unpolled queue, in push
    /// mode in the transport's queue. No room: the caller drops it and counts it. A
    /// datagram over [`Outbound::max_datagram`] never has room (counted here too, in
    /// `datagrams_too_large`), so it is dropped before it is queued or numbered.
    pub fn has_datagram_room(
        &self,
        id: u64,
        len: usize,
        poll_room: usize,
        push_room: usize,
    ) -> bool {
        if len > self.max_datagram() {
            self.datagrams_too_large.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.poll {
            Some(_) => self.polled_bytes(id) + len <= poll_room,
            None => self.queued_bytes() + len <= push_room,
        }
    }

    /// Poll mode: bytes of payload waiting in every queue, not polled yet (0 in push mode).
    pub fn poll_queued_bytes(&self) -> usize {
        self.poll
            .as_ref()
            .map_or(0, |p| p.queues.lock().values().map(|q| q.bytes).sum())
    }

    /// Poll mode: bytes of payload waiting in `id`'s queue (UDP receive room).
    pub fn polled_bytes(&self, id: u64) -> usize {
        self.poll
            .as_ref()
            .and_then(|p| p.queues.lock().get(&id).map(|q| q.bytes))
            .unwrap_or(0)
    }

    /// Poll mode: whether `id` still has a queue (a closed id keeps one until its `close`
    /// has been polled).
    pub fn has_poll_queue(&self, id: u64) -> bool {
        self.poll
            .as_ref()
            .is_some_and(|p| p.queues.lock().contains_key(&id))
    }

    /// Poll mode: takes `id`'s next event. The queue goes away with its `close`, or when
    /// it empties.
    pub fn take_polled(&self, id: u64) -> Option<Polled> {
        let poll = self.poll.as_ref()?;
        let mut queues = poll.queues.lock();
        let queue = queues.get_mut(&id)?;
        let item = queue.events.pop_front();
        if let Some((_, payload)) = &item {
            queue.bytes -= payload.len();
        }
        if queue.events.is_empty() {
            queues.remove(&id);
        }
        item
    }

    /// Answers a poll call: `null`, or the event (numbered now) with its payload.
    pub fn reply_polled(&self, id: u64, polled: Option<Polled>) {
        let Some((body, payload)) = polled else {
            return self.reply_ok(id, &serde_json::Value::Null, &[]);
        };
        let kind = body.kind();
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        // Numbered and sent under one lock, so `seq` order is the order on the stream.
        let event = Event::new(state.seq + 1, body);
        let mut frame = Vec::with_capacity(HEAD_GUESS + payload.len());
        if let Err(e) = encode_reply_ok(id, &event, &payload, self.max_frame, &mut frame) {
            drop(state);
            let error = WireError::new(sidecar_protocol::ErrorCode::Emsgsize, e.to_string());
            return self.reply_err(id, &error);
        }
        state.seq += 1;
        if self.primary.send(frame).is_err() {
            state.closed = true;
            return;
        }
        self.metrics.events.bump(kind);
        self.session_events.bump(kind);
    }

    /// Pushes one event (numbered now). Returns false if the session is gone.
    fn push(&self, body: EventBody, payload: &[u8]) -> bool {
        let kind = body.kind();
        let mut state = self.state.lock();
        if state.closed {
            self.events_undeliverable.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        state.seq += 1;
        let event = Event::new(state.seq, body);
        let mut head = Vec::with_capacity(HEAD_GUESS + payload.len());
        if let Err(error) = encode_event_head(&event, payload.len(), self.max_frame, &mut head) {
            // Callers split data and refuse datagrams and names that could not fit, and
            // an `error` event's message is cut to fit: an event that still does not fit
            // is a bug, counted and logged.
            crate::warn_limited!(%error, kind = ?kind, "an event did not fit the guest's max_frame");
            state.seq -= 1;
            self.events_undeliverable.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let state = &mut *state;
        let sent = match &mut state.events {
            EventTarget::Primary => self.primary.send_parts(head, payload),
            EventTarget::Waiting(queue) => {
                head.extend_from_slice(payload);
                state.waiting_bytes += head.len();
                queue.push_back(head);
                Ok(())
            }
            EventTarget::Channel(sink) => sink.send_parts(head, payload),
        };
        if sent.is_err() {
            state.closed = true;
            return false;
        }
        self.metrics.events.bump(kind);
        self.session_events.bump(kind);
        true
    }

    /// Whether the session has ended (nothing more is delivered).
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Events pushed so far (the last sequence number).
    pub fn last_seq(&self) -> u64 {
        self.state.lock().seq
    }

    /// The session ended: close the transport's outgoing side(s); later pushes are dropped
    /// and counted.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        if let EventTarget::Channel(sink) = &state.events {
            sink.close();
        }
        drop(state);
        self.primary.close();
        self.room.changed();
    }
}
