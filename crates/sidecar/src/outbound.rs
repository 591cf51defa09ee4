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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use sidecar_protocol::{
    encode_event, encode_reply_err, encode_reply_ok, Event, EventBody, WireError,
};

use crate::metrics::{EventCounts, Metrics};

/// The transport is gone; the frame was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkClosed;

/// Where a session's encoded frames go. Must never block.
pub trait FrameSink: Send + Sync {
    /// Hands one complete encoded frame to the transport.
    fn send(&self, frame: Vec<u8>) -> Result<(), SinkClosed>;
    /// Closes the transport's outgoing side (after what was sent is flushed, if it can be).
    fn close(&self);
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
    closed: bool,
}

/// The push side of one session.
pub struct Outbound {
    primary: Arc<dyn FrameSink>,
    state: Mutex<State>,
    /// The largest frame this session's guest accepts.
    max_frame: usize,
    metrics: Arc<Metrics>,
    /// Per-session counts (the guest's `stats` shows its own).
    pub session_events: EventCounts,
    pub events_undeliverable: AtomicU64,
}

impl Outbound {
    pub fn new(primary: Arc<dyn FrameSink>, max_frame: usize, metrics: Arc<Metrics>) -> Self {
        Outbound {
            primary,
            state: Mutex::new(State {
                seq: 0,
                events: EventTarget::Primary,
                closed: false,
            }),
            max_frame,
            metrics,
            session_events: EventCounts::default(),
            events_undeliverable: AtomicU64::new(0),
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
        state.events = EventTarget::Channel(sink);
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

    /// Pushes one event (numbered now). Returns false if the session is gone.
    pub fn event(&self, body: EventBody, payload: &[u8]) -> bool {
        let kind = body.kind();
        let mut state = self.state.lock();
        if state.closed {
            self.events_undeliverable.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        state.seq += 1;
        let event = Event::new(state.seq, body);
        let mut frame = Vec::with_capacity(64 + payload.len());
        if encode_event(&event, payload, self.max_frame, &mut frame).is_err() {
            // Callers split data to fit; an event that still does not fit is a bug.
            state.seq -= 1;
            self.events_undeliverable.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let sent = match &mut state.events {
            EventTarget::Primary => self.primary.send(frame),
            EventTarget::Waiting(queue) => {
                queue.push_back(frame);
                Ok(())
            }
            EventTarget::Channel(sink) => sink.send(frame),
        };
        if sent.is_err() {
            state.closed = true;
            return false;
        }
        self.metrics.events.bump(kind);
        self.session_events.bump(kind);
        true
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
    }
}
