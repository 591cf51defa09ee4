//! The cap on what a session holds queued for its guest (`session_outbound_bytes`), and
//! the wait for room under it.
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
use std::task::Poll;
use std::time::Duration;

use event_listener::{Event, EventListener};

use super::Outbound;
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

impl Outbound {
    /// Waits until what is queued for the guest is back at half the cap, or the session
    /// closed. A fallback re-check every `fallback` guards against a lost notification.
    pub async fn wait_room(&self, fallback: Duration, metrics: &Metrics) {
        let resume = self.room.resume_at();
        loop {
            let mut listeners = self.room_listeners(resume);
            if self.is_closed() || self.outbound_bytes() <= resume {
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
                if self.is_closed() || self.outbound_bytes() <= resume {
                    bump(&metrics.outbound_fallback_found_work);
                }
            }
        }
    }
}
