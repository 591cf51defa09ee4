//! Cached readiness of one direction (read or write) of one source, and its waiters.
//!
//! The state is one atomic word: `sequence << 1 | ready`. The readiness thread bumps the
//! sequence and sets `ready` on every kernel event; a consumer clears `ready` after an
//! operation returned `WouldBlock`, but only if the word did not change since before that
//! operation. Otherwise an event that arrived between the operation and the clear would
//! be erased, and in edge mode it would never come again (a lost wake-up).

use std::sync::atomic::{AtomicU64, Ordering};

use event_listener::{Event, EventListener};

pub(crate) struct Direction {
    state: AtomicU64,
    event: Event,
}

/// The state word seen before an operation; see [`Direction::clear_if_unchanged`].
#[derive(Clone, Copy)]
pub(crate) struct Snapshot(u64);

impl Direction {
    pub(crate) fn new() -> Self {
        Direction {
            state: AtomicU64::new(0),
            event: Event::new(),
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.state.load(Ordering::SeqCst) & 1 == 1
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.state.load(Ordering::SeqCst))
    }

    /// Records a kernel event (readiness thread) and wakes this direction's waiters.
    pub(crate) fn set_ready(&self) {
        // One atomic step: a new sequence number with the ready bit set.
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some((s | 1) + 2));
        self.event.notify(usize::MAX);
    }

    /// Forgets readiness after `WouldBlock`, unless an event arrived since `before`.
    pub(crate) fn clear_if_unchanged(&self, before: Snapshot) {
        let _ = self.state.compare_exchange(
            before.0,
            before.0 & !1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    pub(crate) fn listen(&self) -> EventListener {
        self.event.listen()
    }

    /// Wakes every waiter without recording readiness (shutdown).
    pub(crate) fn wake_all(&self) {
        self.event.notify(usize::MAX);
    }
}
