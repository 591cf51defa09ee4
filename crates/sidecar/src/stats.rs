//! The `stats` schema. A guest sees its own session, its own VM and the sidecar's
//! data-path health counters; it never sees other VMs (their names, sockets or traffic).
//! The operator's view ([`sidecar_stats`], through the embedding API) has every VM.
//!
//! ```text
//! {
//!   "session": {"id", "vm", "mode", "last_seq", "events_pushed": {kind: n},
//!               "events_undeliverable", "udp_dropped_too_large", "calls": {method: n},
//!               "open_handles", "parked_calls", "queued_bytes", "outbound_bytes",
//!               "outbound_cap", "poll_queued_bytes"},
//!   "vm":      {"name", "sockets", "sockets_limit", "listeners", "pending_connections",
//!               "udp_dropped_no_receiver", "udp_dropped_no_room", "sessions",
//!               "sessions_per_vm", "buffered_bytes", "buffered_bytes_limit",
//!               "dns_lookups_in_flight", "dns_lookups_per_vm"},
//!   "health":  {"fallback_fired", "fallback_found_work", "timer_origin_wakes"}
//! }
//! ```
//!
//! `fallback_found_work` must stay 0 (non-zero means a lost notification); push mode
//! has no timer-origin wakes.

use serde_json::{json, Value};

use crate::core::{Core, SessionId};
use crate::metrics::get;

fn health(core: &Core) -> Value {
    let fabric = core.fabric.stats();
    json!({
        "fallback_fired": fabric.fallback_fired,
        "fallback_found_work": fabric.fallback_found_work,
        "timer_origin_wakes": get(&core.metrics.timer_origin_wakes),
    })
}

fn vm_json(core: &Core, name: &str) -> Value {
    match core.vms.get(name) {
        Some(vm) => json!({
            "name": name,
            "sockets": vm.open,
            "sockets_limit": vm.limits.sockets_per_vm,
            "listeners": vm.listener_count(),
            "pending_connections": vm.pending_connections(),
            "udp_dropped_no_receiver": get(&vm.udp_drops.no_receiver),
            "udp_dropped_no_room": get(&vm.udp_drops.no_room),
            "sessions": vm.sessions,
            "sessions_per_vm": vm.limits.sessions_per_vm,
            "buffered_bytes": vm.buffered,
            "buffered_bytes_limit": vm.limits.buffered_bytes_per_vm,
            "dns_lookups_in_flight": core.host.dns.in_flight(name),
            "dns_lookups_per_vm": vm.limits.dns_lookups_per_vm,
        }),
        None => json!({"name": name}),
    }
}

/// What `stats` returns to a guest.
pub fn session_stats(core: &Core, sid: SessionId) -> Value {
    let Some(session) = core.session(sid) else {
        return Value::Null;
    };
    json!({
        "session": {
            "id": sid,
            "vm": session.vm,
            "mode": session.mode,
            "last_seq": session.out.last_seq(),
            "events_pushed": session.out.session_events.to_json(),
            "events_undeliverable": session.out.events_undeliverable.load(std::sync::atomic::Ordering::Relaxed),
            "udp_dropped_too_large": session.out.datagrams_too_large.load(std::sync::atomic::Ordering::Relaxed),
            "calls": session.calls.to_json(),
            "open_handles": session.open_handles(),
            "parked_calls": session.parked_count(),
            "queued_bytes": session.out.queued_bytes(),
            "outbound_bytes": session.out.outbound_bytes(),
            "outbound_cap": session.out.room.cap(),
            "poll_queued_bytes": session.out.poll_queued_bytes(),
        },
        "vm": vm_json(core, &session.vm),
        "health": health(core),
    })
}

/// The operator's view: sidecar-wide counters and every VM.
pub fn sidecar_stats(core: &Core) -> Value {
    let vms: serde_json::Map<String, Value> = core
        .vms
        .keys()
        .map(|name| (name.clone(), vm_json(core, name)))
        .collect();
    let fabric = core.fabric.stats();
    let mut all = core.metrics.to_json();
    all["vms"] = Value::Object(vms);
    all["fallback_fired"] = fabric.fallback_fired.into();
    all["fallback_found_work"] = fabric.fallback_found_work.into();
    all["fabric_live_keys"] = fabric.live_keys.into();
    all["streams"] = core.streams.len().into();
    all["host_connections"] = core.hosts.len().into();
    all["servers"] = core.servers.len().into();
    // `unattached_connections` (now) is among the metrics; its cap:
    all["unattached_connections_limit"] = core.config.limits.unattached_connections.into();
    // What each session holds queued for its guest, by session id (the largest first).
    let mut outbound: Vec<(u64, usize)> = core
        .sessions
        .iter()
        .map(|(sid, s)| (*sid, s.out.outbound_bytes()))
        .collect();
    outbound.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    all["session_outbound_bytes"] = outbound
        .iter()
        .take(16)
        .map(|(sid, bytes)| (sid.to_string(), Value::from(*bytes)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    // File descriptors: the process's, so the operator's only (a guest sees its VM's
    // sockets against its clamped limit, `vm.sockets_limit`).
    all["fds"] = json!({
        "open": core.fds_open(),
        "limit": core.metrics.fds.limit(),
        "reserve": core.config.limits.fd_reserve,
    });
    let dns = core.host.dns.stats();
    all["dns_pool"] = json!({"threads": dns.threads, "max_threads": dns.max_threads,
                             "busy": dns.busy, "queued": dns.queued});
    all
}
