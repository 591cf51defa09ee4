//! Counters of the fabric, kept as relaxed atomics: they are diagnostics, read by `stats`
//! calls and tests, never used to synchronise.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a fabric's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FabricStats {
    /// Notifications sent to a key that had at least one listener.
    pub notifies: u64,
    /// Notifications sent to a key nobody listened to (cheap: a lookup, nothing stored).
    pub notifies_without_listener: u64,
    /// Waits that ended because they were notified.
    pub woken_notified: u64,
    /// Waits that ended at their deadline.
    pub woken_deadline: u64,
    /// Fallback periods that elapsed with no notification (the waiter re-checked anyway).
    pub fallback_fired: u64,
    /// Fallback re-checks that found work although no notification arrived. Must stay 0:
    /// non-zero means a state change did not notify its key (a lost notification).
    pub fallback_found_work: u64,
    /// Keys currently holding memory (keys with at least one live listener).
    pub live_keys: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) notifies: AtomicU64,
    pub(crate) notifies_without_listener: AtomicU64,
    pub(crate) woken_notified: AtomicU64,
    pub(crate) woken_deadline: AtomicU64,
    pub(crate) fallback_fired: AtomicU64,
    pub(crate) fallback_found_work: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, live_keys: u64) -> FabricStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FabricStats {
            notifies: get(&self.notifies),
            notifies_without_listener: get(&self.notifies_without_listener),
            woken_notified: get(&self.woken_notified),
            woken_deadline: get(&self.woken_deadline),
            fallback_fired: get(&self.fallback_fired),
            fallback_found_work: get(&self.fallback_found_work),
            live_keys,
        }
    }
}
