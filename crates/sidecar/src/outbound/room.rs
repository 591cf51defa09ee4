//! The cap on what a session holds queued for its guest (`session_outbound_bytes`), and
//! the wait for room under it.
//!
//! Two gates measure against it ([`Gate`]): in-VM stream data for the guest is held back
//! on everything queued for it (both streams, and events waiting for the event channel);
//! its calls are held back on its primary stream only (see [`Gate::Calls`] for why).
//!
//! Why a cap and not a drop: replies cannot be dropped (a guest waits for each), and
//! stream data must not be. So a guest that does not read what it is sent is treated as
//! a TCP server treats a client that does not read its replies: the sidecar stops reading
//! that session's calls (its connection task waits; the loop serves everyone else) and
//! stops pushing its in-VM stream data (left in the writers' buffers, where `need_drain`,
//! `ENOBUFS` and the per-VM buffer cap push back on the writers). Datagrams keep their
//! counted drop (`event_queue_bytes`).
//!
//! The wait is on notifications: each sink says when its guest has taken frames down to a
//! level the waiter names (the fd writer after a flush, the in-process pipe's reader when
//! it takes frames), and the room itself when the event channel attaches or the session
//! closes. A waiter resumes at half the cap, so a guest that reads frame by frame does not
//! wake the loop once per frame. A bounded fallback re-check guards against a lost
//! notification; it is counted (`outbound_fallback_fired`), and so is one that found
//! room (`outbound_fallback_found_work`, a bug if not 0).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use event_listener::{Event, EventListener};

use super::{EventTarget, Outbound};
use crate::metrics::{bump, Metrics};

pub struct Room {
    cap: usize,
    changed: Event,
    /// In-VM stream data for this session was held back (see `Core::pump`): it is
    /// pushed again once there is room.
    held: AtomicBool,
}

impl Room {
    pub fn new(cap: usize) -> Self {
        Room {
            cap: cap.max(1),
            changed: Event::new(),
            held: AtomicBool::new(false),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The level a held-back session resumes at.
    pub fn resume_at(&self) -> usize {
        self.cap / 2
    }

    pub(super) fn listen(&self) -> EventListener {
        self.changed.listen()
    }

    /// What a waiter listens to changed (the event channel attached, the session closed).
    pub(super) fn changed(&self) {
        self.changed.notify(usize::MAX);
    }

    /// Marks stream data as held back; true the first time since the last resume.
    pub fn hold(&self) -> bool {
        !self.held.swap(true, Ordering::Relaxed)
    }

    /// Clears the held mark (the caller pushes what was held).
    pub fn release(&self) {
        self.held.store(false, Ordering::Relaxed);
    }
}

/// What a wait for room measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Reading the session's calls: what is queued on its primary stream (replies, and
    /// events when they share it). Not an event channel's backlog: a guest frozen in a
    /// sync call reads only its primary stream, so gating its calls on events it cannot
    /// read until the call returns would hang it.
    Calls,
    /// Pushing its stream data, and calls on its event channel: everything queued.
    All,
}

impl Outbound {
    /// Bytes queued for the guest that its transport has not taken: replies and events,
    /// on both streams, and events waiting for the event channel (what
    /// `session_outbound_bytes` caps).
    pub fn outbound_bytes(&self) -> usize {
        self.gated_bytes(Gate::All)
    }

    fn gated_bytes(&self, gate: Gate) -> usize {
        let (primary, channel) = self.sinks_bytes();
        match gate {
            Gate::Calls => primary,
            Gate::All => primary + channel,
        }
    }

    /// Bytes queued on the primary stream, and on the event side (the channel, or the
    /// events waiting for it).
    fn sinks_bytes(&self) -> (usize, usize) {
        let state = self.state.lock();
        let events = match &state.events {
            EventTarget::Primary => 0,
            EventTarget::Waiting(_) => state.waiting_bytes,
            EventTarget::Channel(sink) => sink.queued_bytes(),
        };
        drop(state);
        (self.primary.queued_bytes(), events)
    }

    /// The guest's side of a stream is gone: nothing queued will be taken (the
    /// connection's end follows).
    fn transport_gone(&self) -> bool {
        let channel_gone = match &self.state.lock().events {
            EventTarget::Channel(sink) => sink.is_gone(),
            _ => false,
        };
        channel_gone || self.primary.is_gone()
    }

    /// Whether what `gate` measures is under the cap.
    pub fn has_room(&self, gate: Gate) -> bool {
        self.gated_bytes(gate) < self.room.cap()
    }

    /// Listeners for room: the sinks' drains (each to the level at which what `gate`
    /// measures would be back at `resume`) and the room's own changes.
    fn room_listeners(&self, gate: Gate, resume: usize) -> Vec<EventListener> {
        let mut listeners = vec![self.room.listen()];
        let channel = match (&self.state.lock().events, gate) {
            (EventTarget::Channel(sink), Gate::All) => Some(Arc::clone(sink)),
            _ => None,
        };
        let primary_bytes = self.primary.queued_bytes();
        let channel_bytes = channel.as_ref().map_or(0, |c| c.queued_bytes());
        let excess = (primary_bytes + channel_bytes).saturating_sub(resume);
        let primary_target = primary_bytes.saturating_sub(excess);
        listeners.extend(self.primary.listen_drained(primary_target));
        if let Some(channel) = channel {
            listeners.extend(channel.listen_drained(channel_bytes.saturating_sub(excess)));
        }
        listeners
    }

    /// Waits until what `gate` measures is back at half the cap, or the session closed.
    /// A fallback re-check every `fallback` guards against a lost notification.
    pub async fn wait_room(&self, gate: Gate, fallback: Duration, metrics: &Metrics) {
        let resume = self.room.resume_at();
        let done = || self.is_closed() || self.transport_gone() || self.gated_bytes(gate) <= resume;
        loop {
            let mut listeners = self.room_listeners(gate, resume);
            if done() {
                return;
            }
            let any = poll_fn(|cx| {
                for listener in listeners.iter_mut() {
                    if Pin::new(listener).poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            });
            if tokio::time::timeout(fallback, any).await.is_err() {
                bump(&metrics.outbound_fallback_fired);
                if done() {
                    bump(&metrics.outbound_fallback_found_work);
                }
            }
        }
    }
}
