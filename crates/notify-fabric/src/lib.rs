//! Keyed notifications for everything in the sidecar that waits.
//!
//! # Why
//!
//! The sidecar never sleeps to re-check state: a parked call, a connect waiting for a
//! listener's backlog to free up, a writer waiting for credit all wait on a *key* of this
//! fabric, and whoever changes the state notifies that key. One mechanism, so one place to
//! get the lost-wake-up reasoning right.
//!
//! # The protocol every waiter follows
//!
//! 1. [`Fabric::listen`] on the key. This registers a listener *and* snapshots the key's
//!    **epoch** (a counter bumped by every notify).
//! 2. Check the state (is the queue non-empty? is there credit?). If it is ready, done.
//! 3. Wait on the [`Listener`] with a deadline.
//!
//! Because the listener exists before the check, a notification that lands between step 2
//! and step 3 is never lost: either the epoch already moved (the wait returns at once) or
//! the underlying `event-listener` listener is notified. Several notifications may coalesce
//! into one wake, and a waiter may be woken when the state it waits for is not ready
//! (another waiter took it): waiters always re-check. [`Fabric::wait_until_blocking`] and
//! [`Fabric::wait_until`] run that loop for you.
//!
//! # Deadlines, fallback and counters
//!
//! Every wait has a deadline and returns a [`WakeReason`]. A wait may also carry a
//! **bounded-timeout fallback** period: when it elapses with no notification the waiter
//! re-checks the state through a closure anyway. Each such timer wake is counted in
//! `fallback_fired`; a re-check that finds work although no notification arrived is counted
//! in `fallback_found_work`, which must stay 0 in a correct system (non-zero means some
//! state change forgot to notify). See [`FabricStats`].
//!
//! # Memory
//!
//! A key occupies memory only while at least one listener exists for it. Notifying a key
//! nobody listens to is a hash lookup and nothing else, so millions of short-lived sockets
//! leave nothing behind ([`FabricStats::live_keys`]).
//!
//! # Async waits
//!
//! The async forms use `tokio::time` for their deadlines, so they must run inside a tokio
//! runtime with the time driver enabled (a current-thread runtime is fine).

mod fabric;
mod listener;
mod stats;

pub use fabric::Fabric;
pub use listener::{Listener, WaitOptions, WakeReason};
pub use stats::FabricStats;
