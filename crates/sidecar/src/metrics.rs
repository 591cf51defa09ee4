//! Counters of the sidecar, readable through the `stats` call (a guest sees its own
//! session and VM) and the embedding API (the operator sees everything).
//!
//! Relaxed atomics: pushers on any thread bump them without a lock; they are diagnostics,
//! never used to synchronise.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};
use sidecar_protocol::{EventKind, Method};

/// One counter per event kind (indexed like `EventKind::ALL`).
pub struct EventCounts(Box<[AtomicU64]>);

/// One counter per method (indexed like `Method::ALL`).
pub struct CallCounts(Box<[AtomicU64]>);

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn kind_index(kind: EventKind) -> usize {
    EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

fn method_index(method: Method) -> usize {
    Method::ALL.iter().position(|m| *m == method).unwrap_or(0)
}

impl Default for EventCounts {
    fn default() -> Self {
        EventCounts(counters(EventKind::ALL.len()))
    }
}

impl Default for CallCounts {
    fn default() -> Self {
        CallCounts(counters(Method::ALL.len()))
    }
}

impl EventCounts {
    pub fn bump(&self, kind: EventKind) {
        self.0[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: EventKind) -> u64 {
        self.0[kind_index(kind)].load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for kind in EventKind::ALL {
            map.insert(kind.as_str().into(), self.get(*kind).into());
        }
        Value::Object(map)
    }
}

impl CallCounts {
    pub fn bump(&self, method: Method) {
        self.0[method_index(method)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for method in Method::ALL {
            let n = self.0[method_index(*method)].load(Ordering::Relaxed);
            if n > 0 {
                map.insert(method.as_str().into(), n.into());
            }
        }
        Value::Object(map)
    }
}

/// Sidecar-wide counters.
#[derive(Default)]
pub struct Metrics {
    pub events: EventCounts,
    pub calls: CallCounts,
    /// Calls parked right now, and ever.
    pub parked_now: AtomicU64,
    pub parked_total: AtomicU64,
    /// Wakes of a data-path thread caused by a timer rather than an event. Push mode has
    /// none; the poll lane's re-poll ticks are counted here by the guest side.
    pub timer_origin_wakes: AtomicU64,
    pub sessions_now: AtomicU64,
    pub sessions_total: AtomicU64,
    /// Frames refused: malformed header, unknown method, bad params.
    pub bad_frames: AtomicU64,
    /// Sessions closed because their stream broke framing (oversized, inconsistent).
    pub framing_errors: AtomicU64,
    /// Hellos refused (wrong VM/secret, version).
    pub refused_hellos: AtomicU64,
    /// Datagrams from or to host UDP sockets dropped for lack of room.
    pub udp_host_dropped: AtomicU64,
    /// Connections to a published port closed at once: no listener in the VM on the
    /// published port, or its backlog was full.
    pub published_refused: AtomicU64,
    /// Connections refused because a VM was at its pending connections limit: host
    /// connects (the guest also gets `EAGAIN`), published-port connections (closed; also
    /// in `published_refused`), and pairs (the connecting guest gets `ECONNREFUSED`).
    pub pending_refused: AtomicU64,
    /// Peer pairing: connections to our own published ports paired in memory, and those
    /// whose accept did not come in time (they stayed on the kernel path).
    pub pairs_made: AtomicU64,
    pub pairs_missed: AtomicU64,
    /// Sessions whose queued events were not all written within the shutdown's grace
    /// period (their guests were not reading); what was left was dropped.
    pub shutdown_unflushed_sessions: AtomicU64,
    // Before hello (the hello gate): connections not attached now; those refused because
    // `unattached_connections` were waiting; those closed at their `hello_timeout`.
    pub unattached_now: AtomicU64,
    pub unattached_refused: AtomicU64,
    pub hello_timeouts: AtomicU64,
    /// Frames whose JSON header was over `max_header` (refused unparsed, `EMSGSIZE`).
    pub headers_too_large: AtomicU64,
    // Memory held per session and the loop's fairness (`outbound::room`, `transport::turn`).
    /// Times a session's calls or in-VM stream data were held back because what was
    /// queued for its guest reached `session_outbound_bytes`.
    pub outbound_held_back: AtomicU64,
    /// Fallback re-checks of those waits, and the ones that found room (must stay 0).
    pub outbound_fallback_fired: AtomicU64,
    pub outbound_fallback_found_work: AtomicU64,
    /// Writes refused because their VM's stream buffers reached `buffered_bytes_per_vm`.
    pub vm_buffer_refused: AtomicU64,
    /// Bytes guests wrote to in-VM stream sockets whose peer had closed (accepted and
    /// discarded, as a kernel takes a write after the peer's close).
    pub stream_bytes_after_peer_close: AtomicU64,
    /// Times freed heap memory was handed back to the OS (`memory`).
    pub memory_trims: AtomicU64,
    // File descriptors (crate::fds).
    /// The fd accounting: limit, fds open, the spare.
    pub fds: crate::fds::FdGauge,
    /// Connections accepted and closed at once because the process was out of fds.
    pub accept_shed: AtomicU64,
    /// Waits of an acceptor after an accept failed (out of fds, or another error).
    pub accept_backoff: AtomicU64,
    /// Guest sockets refused (`EMFILE`, or a published connection closed) because the
    /// sidecar's fds were at its limit less `fd_reserve`.
    pub fd_budget_refused: AtomicU64,
    // Host name lookups (host/resolve.rs, host/dns_pool.rs): queries let through to the
    // resolver; lookups refused by the policy without a query, or whose answer it
    // allowed nothing of; refused EAGAIN (the VM at dns_lookups_per_vm); timed out
    // (ETIMEDOUT); and, now, resolver calls still running that nobody waits for.
    pub dns_lookups: AtomicU64,
    pub dns_refused_policy: AtomicU64,
    pub dns_busy: AtomicU64,
    pub dns_timeouts: AtomicU64,
    pub dns_abandoned_running: AtomicU64,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn drop_one(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    /// The sidecar-wide part of `stats` (fabric counters are added by the caller).
    pub fn to_json(&self) -> Value {
        json!({
            "events_pushed": self.events.to_json(),
            "calls": self.calls.to_json(),
            "parked_calls": get(&self.parked_now),
            "parked_calls_total": get(&self.parked_total),
            "timer_origin_wakes": get(&self.timer_origin_wakes),
            "sessions": get(&self.sessions_now),
            "sessions_total": get(&self.sessions_total),
            "bad_frames": get(&self.bad_frames),
            "framing_errors": get(&self.framing_errors),
            "refused_hellos": get(&self.refused_hellos),
            "udp_host_dropped": get(&self.udp_host_dropped),
            "published_refused": get(&self.published_refused),
            "pending_refused": get(&self.pending_refused),
            "pairs_made": get(&self.pairs_made),
            "pairs_missed": get(&self.pairs_missed),
            "shutdown_unflushed_sessions": get(&self.shutdown_unflushed_sessions),
            "unattached_connections": get(&self.unattached_now),
            "unattached_refused": get(&self.unattached_refused),
            "hello_timeouts": get(&self.hello_timeouts),
            "headers_too_large": get(&self.headers_too_large),
            "outbound_held_back": get(&self.outbound_held_back),
            "outbound_fallback_fired": get(&self.outbound_fallback_fired),
            "outbound_fallback_found_work": get(&self.outbound_fallback_found_work),
            "vm_buffer_refused": get(&self.vm_buffer_refused),
            "stream_bytes_after_peer_close": get(&self.stream_bytes_after_peer_close),
            "memory_trims": get(&self.memory_trims),
            "accept_shed": get(&self.accept_shed),
            "accept_backoff": get(&self.accept_backoff),
            "fd_budget_refused": get(&self.fd_budget_refused),
            "dns_lookups": get(&self.dns_lookups),
            "dns_refused_policy": get(&self.dns_refused_policy),
            "dns_busy": get(&self.dns_busy),
            "dns_timeouts": get(&self.dns_timeouts),
            "dns_abandoned_running": get(&self.dns_abandoned_running),
        })
    }
}
