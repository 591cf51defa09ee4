//! A listener on one key, and the waits (blocking and async) it offers.
//!
//! The wait loop is the same in both forms: return at once if the epoch moved since the
//! snapshot or the fabric shut down; otherwise park on the `event-listener` listener until
//! the next *stop*: the deadline or, with a fallback, the end of the fallback period. A
//! fallback stop counts `fallback_fired`, re-listens *before* re-checking (so nothing can
//! slip between), and runs the caller's re-check.

use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::{EventListener, Listener as _};

use crate::fabric::{now_plus, Fabric, Slot};
use crate::stats::Counters;

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    /// The key was notified (or its epoch moved) since the listener was created.
    Notified,
    /// The deadline passed with no notification.
    Deadline,
    /// A fallback re-check found work although no notification arrived (counted in
    /// `fallback_found_work`: a lost notification somewhere).
    Fallback,
    /// The fabric was shut down.
    Shutdown,
}

/// How long a wait may last, and whether it re-checks on a bounded period meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// When the wait gives up with [`WakeReason::Deadline`].
    pub deadline: Instant,
    /// If set, the waiter re-checks the state every such period even without a
    /// notification. Only for bounded internal waits; idle sockets have none.
    pub fallback: Option<Duration>,
}

impl WaitOptions {
    /// Wait until `deadline`, with no fallback.
    pub fn until(deadline: Instant) -> Self {
        WaitOptions {
            deadline,
            fallback: None,
        }
    }

    /// Wait at most `timeout` from now, with no fallback.
    pub fn timeout(timeout: Duration) -> Self {
        Self::until(now_plus(timeout))
    }

    /// Adds a bounded-timeout fallback period.
    pub fn with_fallback(mut self, period: Duration) -> Self {
        self.fallback = Some(period);
        self
    }
}

/// A registered interest in one key, with the epoch it saw when it was created.
///
/// Dropping it releases the key (the last listener of a key frees its memory).
pub struct Listener<K: Eq + Hash + Clone> {
    fabric: Fabric<K>,
    key: K,
    slot: Arc<Slot>,
    snapshot: u64,
    listener: Option<EventListener>,
}

impl<K: Eq + Hash + Clone> Listener<K> {
    pub(crate) fn new(fabric: Fabric<K>, key: K, slot: Arc<Slot>) -> Self {
        let listener = slot.event.listen();
        let snapshot = slot.epoch.load(Ordering::SeqCst);
        Listener {
            fabric,
            key,
            slot,
            snapshot,
            listener: Some(listener),
        }
    }

    /// The key this listener waits on.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Whether a notification reached this key since the listener was created (no wait).
    pub fn is_notified(&self) -> bool {
        self.slot.epoch.load(Ordering::SeqCst) != self.snapshot
    }

    /// Blocks the current thread until notified or `deadline`.
    pub fn wait_blocking(self, deadline: Instant) -> WakeReason {
        self.wait_blocking_with(WaitOptions::until(deadline), || false)
    }

    /// Blocks until notified, the deadline, or a fallback re-check (`recheck` returning
    /// true) finds work.
    pub fn wait_blocking_with(
        mut self,
        options: WaitOptions,
        mut recheck: impl FnMut() -> bool,
    ) -> WakeReason {
        loop {
            if let Some(reason) = self.already_over() {
                return reason;
            }
            let stop = self.next_stop(options);
            let listener = self.take_listener();
            if listener.wait_deadline(stop).is_some() {
                return self.woken();
            }
            if let Some(reason) = self.after_stop(options, &mut recheck) {
                return reason;
            }
        }
    }

    /// Waits (async) until notified or `deadline`. Needs a tokio runtime with time enabled.
    pub async fn wait(self, deadline: Instant) -> WakeReason {
        self.wait_with(WaitOptions::until(deadline), || false).await
    }

    /// The async form of [`Listener::wait_blocking_with`].
    pub async fn wait_with(
        mut self,
        options: WaitOptions,
        mut recheck: impl FnMut() -> bool,
    ) -> WakeReason {
        loop {
            if let Some(reason) = self.already_over() {
                return reason;
            }
            let stop = self.next_stop(options);
            let mut listener = self.take_listener();
            let woken = tokio::time::timeout_at(stop.into(), &mut listener).await;
            if woken.is_ok() {
                return self.woken();
            }
            // Keep the same registration: it is still listening.
            self.listener = Some(listener);
            if let Some(reason) = self.after_stop(options, &mut recheck) {
                return reason;
            }
        }
    }

    fn take_listener(&mut self) -> EventListener {
        self.listener
            .take()
            .unwrap_or_else(|| self.slot.event.listen())
    }

    /// Shutdown or a moved epoch end the wait before any parking.
    fn already_over(&self) -> Option<WakeReason> {
        if self.fabric.is_shut_down() {
            return Some(WakeReason::Shutdown);
        }
        if self.is_notified() {
            return Some(self.woken());
        }
        None
    }

    fn woken(&self) -> WakeReason {
        if self.fabric.is_shut_down() {
            return WakeReason::Shutdown;
        }
        Counters::bump(&self.fabric.inner.counters.woken_notified);
        WakeReason::Notified
    }

    fn next_stop(&self, options: WaitOptions) -> Instant {
        match options.fallback {
            Some(period) => now_plus(period).min(options.deadline),
            None => options.deadline,
        }
    }

    /// Called when a stop (deadline or fallback period) elapsed without a notification.
    fn after_stop(
        &mut self,
        options: WaitOptions,
        recheck: &mut impl FnMut() -> bool,
    ) -> Option<WakeReason> {
        // Re-listen before looking at anything, so a notification from here on is caught.
        if self.listener.is_none() {
            self.listener = Some(self.slot.event.listen());
        }
        if let Some(reason) = self.already_over() {
            return Some(reason);
        }
        if Instant::now() >= options.deadline {
            Counters::bump(&self.fabric.inner.counters.woken_deadline);
            return Some(WakeReason::Deadline);
        }
        let counters = &self.fabric.inner.counters;
        Counters::bump(&counters.fallback_fired);
        if recheck() {
            // A notification racing with the re-check is not a lost one.
            if self.is_notified() {
                return Some(self.woken());
            }
            Counters::bump(&counters.fallback_found_work);
            return Some(WakeReason::Fallback);
        }
        None
    }
}

impl<K: Eq + Hash + Clone> Drop for Listener<K> {
    fn drop(&mut self) {
        // Drop the event-listener registration first (it passes an unconsumed
        // notify-one on to another listener), then release the key.
        self.listener = None;
        self.fabric.release(&self.key, &self.slot);
    }
}
