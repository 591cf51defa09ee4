//! The key table: which keys have listeners, and the per-key notification slot.
//!
//! The table is sharded by key hash so that unrelated keys (two sessions' queues) do not
//! contend on one lock; each shard is a `parking_lot` mutex held only for a lookup, an
//! insert or a remove, never across a wait or a notify of `event-listener`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use event_listener::Event;
use parking_lot::Mutex;

use crate::listener::{Listener, WaitOptions, WakeReason};
use crate::stats::{Counters, FabricStats};

const SHARDS: usize = 32;

/// One key's notification state. Lives exactly as long as the key has listeners.
pub(crate) struct Slot {
    /// Bumped (SeqCst) by every notify, before the `event-listener` notification, so a
    /// listener that snapshotted an older value knows it missed nothing.
    pub(crate) epoch: AtomicU64,
    pub(crate) event: Event,
    /// Live [`Listener`]s of this key. Changed only under the shard lock.
    listeners: AtomicUsize,
}

/// One shard of the key table.
type Shard<K> = Mutex<HashMap<K, Arc<Slot>>>;

pub(crate) struct Inner<K> {
    shards: Box<[Shard<K>]>,
    hasher: RandomState,
    pub(crate) shutdown: AtomicBool,
    pub(crate) counters: Counters,
}

/// A table of keyed notifications. Cheap to clone (an `Arc`); all clones share the table.
///
/// `K` is any small copyable id the user chooses: an enum of "socket 7 readable",
/// "queue of session 3 non-empty", "listener inserted at 127.0.0.1:80"…
pub struct Fabric<K> {
    pub(crate) inner: Arc<Inner<K>>,
}

impl<K> Clone for Fabric<K> {
    fn clone(&self) -> Self {
        Fabric {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Eq + Hash + Clone> Default for Fabric<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone> Fabric<K> {
    /// An empty fabric.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Fabric {
            inner: Arc::new(Inner {
                shards,
                hasher: RandomState::new(),
                shutdown: AtomicBool::new(false),
                counters: Counters::default(),
            }),
        }
    }

    /// Starts listening on `key`: step 1 of the waiter protocol (see the crate docs).
    /// Check your state *after* this call, then wait on the returned listener.
    pub fn listen(&self, key: &K) -> Listener<K> {
        let slot = {
            let mut shard = self.inner.shard(key).lock();
            let slot = shard.entry(key.clone()).or_insert_with(|| {
                Arc::new(Slot {
                    epoch: AtomicU64::new(0),
                    event: Event::new(),
                    listeners: AtomicUsize::new(0),
                })
            });
            slot.listeners.fetch_add(1, Ordering::Relaxed);
            Arc::clone(slot)
        };
        Listener::new(self.clone(), key.clone(), slot)
    }

    /// Wakes every current listener of `key`. Returns whether the key had any listener.
    pub fn notify_all(&self, key: &K) -> bool {
        self.notify(key, |event| {
            event.notify(usize::MAX);
        })
    }

    /// Wakes one more listener of `key` (an *additional* notification in `event-listener`
    /// terms, so two notify-ones in a row reach two different waiters, never coalescing
    /// into one). Listeners that are between `listen` and their wait see the epoch move and
    /// return as well: waiters re-check their state, so that is a spurious wake, not an
    /// error. Returns whether the key had any listener.
    pub fn notify_one(&self, key: &K) -> bool {
        self.notify(key, |event| {
            event.notify_additional(1);
        })
    }

    fn notify(&self, key: &K, deliver: impl FnOnce(&Event)) -> bool {
        let slot = self.inner.shard(key).lock().get(key).cloned();
        match slot {
            Some(slot) => {
                slot.epoch.fetch_add(1, Ordering::SeqCst);
                deliver(&slot.event);
                Counters::bump(&self.inner.counters.notifies);
                true
            }
            None => {
                Counters::bump(&self.inner.counters.notifies_without_listener);
                false
            }
        }
    }

    /// Shuts the fabric down: every current and future wait returns
    /// [`WakeReason::Shutdown`]. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        for shard in self.inner.shards.iter() {
            for slot in shard.lock().values() {
                slot.epoch.fetch_add(1, Ordering::SeqCst);
                slot.event.notify(usize::MAX);
            }
        }
    }

    /// Whether [`Fabric::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutdown.load(Ordering::SeqCst)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FabricStats {
        let live_keys = self
            .inner
            .shards
            .iter()
            .map(|s| s.lock().len() as u64)
            .sum();
        self.inner.counters.snapshot(live_keys)
    }

    /// The whole waiter protocol as a blocking loop: listen, `check`, wait, until `check`
    /// returns `Some`, or the wait ends for another reason (deadline, shutdown, or a
    /// fallback re-check that found work, which is returned as `Ok` too).
    pub fn wait_until_blocking<T>(
        &self,
        key: &K,
        options: WaitOptions,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T, WakeReason> {
        loop {
            let listener = self.listen(key);
            if let Some(value) = check() {
                return Ok(value);
            }
            let mut found = None;
            let reason = listener.wait_blocking_with(options, || {
                found = check();
                found.is_some()
            });
            match reason {
                WakeReason::Notified => continue,
                WakeReason::Fallback => return found.ok_or(WakeReason::Fallback),
                other => return Err(other),
            }
        }
    }

    /// The async form of [`Fabric::wait_until_blocking`].
    pub async fn wait_until<T>(
        &self,
        key: &K,
        options: WaitOptions,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T, WakeReason> {
        loop {
            let listener = self.listen(key);
            if let Some(value) = check() {
                return Ok(value);
            }
            let mut found = None;
            let reason = listener
                .wait_with(options, || {
                    found = check();
                    found.is_some()
                })
                .await;
            match reason {
                WakeReason::Notified => continue,
                WakeReason::Fallback => return found.ok_or(WakeReason::Fallback),
                other => return Err(other),
            }
        }
    }

    /// Drops one listener's claim on `key`'s slot, freeing the slot with the last one.
    pub(crate) fn release(&self, key: &K, slot: &Arc<Slot>) {
        let mut shard = self.inner.shard(key).lock();
        if slot.listeners.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let Some(current) = shard.get(key) {
                if Arc::ptr_eq(current, slot) {
                    shard.remove(key);
                }
            }
        }
    }
}

impl<K: Hash> Inner<K> {
    fn shard(&self, key: &K) -> &Shard<K> {
        let hash = self.hasher.hash_one(key) as usize;
        &self.shards[hash % SHARDS]
    }
}

/// A deadline a given period from now, saturating instead of overflowing.
pub(crate) fn now_plus(period: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(period)
        .unwrap_or(now + std::time::Duration::from_secs(86_400 * 365))
}
