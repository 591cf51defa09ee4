//! Data a guest does not take is bounded wherever it comes from, and none of it is lost:
//! - a host connection's data for a push-mode guest that reads nothing stops at the
//!   session's `session_outbound_bytes` (the sidecar stops reading the socket; the
//!   remote's TCP window closes), whatever credit the guest granted;
//! - a poll-mode guest without the `credit` capability gets its `credit` as a window per
//!   socket, refilled by what its `net.poll` takes: a socket it never polls holds one
//!   window, the rest waits with the writer (in VM) or in the kernel (host).
//!
//! Each time the guest then takes everything: every byte, in order.

mod support;

use std::io::Write;
use std::net::TcpListener as NativeListener;
use std::thread;

use serde_json::{json, Value};
use support::bystander::echoes;
use support::*;

const CAP: usize = 64 * 1024;
const TOTAL: usize = 2 * 1024 * 1024;

fn config(edit: impl FnOnce(&mut sidecar::Limits)) -> sidecar::SidecarConfig {
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_allow("127.0.0.1".parse().unwrap());
    edit(&mut config.limits);
    config
}

/// The largest `session_outbound_bytes` among the sidecar's sessions.
fn most_held(stats: &Value) -> u64 {
    let held = stats["session_outbound_bytes"].as_object().unwrap();
    held.values().filter_map(Value::as_u64).max().unwrap_or(0)
}

/// A host server on loopback that sends `TOTAL` bytes of the pattern to its first
/// client, then closes: its port, and the thread (joined once the guest read it all).
fn host_sender() -> (u16, thread::JoinHandle<()>) {
    let native = NativeListener::bind("127.0.0.1:0").unwrap();
    let port = native.local_addr().unwrap().port();
    let sender = thread::spawn(move || {
        let (mut stream, _) = native.accept().unwrap();
        stream.write_all(&pattern_at(0, TOTAL)).unwrap();
    });
    (port, sender)
}

/// Takes `data` events for `socket` until `len` bytes came (skipping a `connect`),
/// granting nothing (the caller's guest has no `credit`, or granted enough up front).
fn take_data(g: &mut RawGuest, socket: u64, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        let (event, payload) = g.event();
        // A host connect also says so with an event.
        if event["event"] == "connect" {
            continue;
        }
        assert_eq!(event["event"], "data", "expected data, got {event}");
        assert_eq!(event["socket"], socket);
        got.extend(payload);
    }
    got
}

#[test]
fn a_host_connection_for_a_push_guest_that_reads_nothing_stops_at_its_outbound_cap() {
    for transport in [Transport::InProcess, Transport::Unix] {
        let h = Harness::with_config(config(|l| l.session_outbound_bytes = CAP));
        // A window far past the cap: only the cap holds the data back.
        let mut g = attach_with(&h, transport, "a", json!({"credit": 16 << 20}));
        let (port, sender) = host_sender();
        let params = json!({"host": "127.0.0.1", "port": port});
        let socket = g.call("net.connect", params, b"").unwrap()["socket"]
            .as_u64()
            .unwrap();
        let stats = settle(&h, "the host data is never held back", |s| {
            s["outbound_held_back"].as_u64().unwrap() > 0
        });
        // One read past the cap at most (64 KiB and its frame).
        let bound = (CAP + 64 * 1024 + 1024) as u64;
        assert!(most_held(&stats) <= bound, "{transport:?}: {stats}");
        echoes(&h, Transport::InProcess, "b", 10);
        let again = h.stats();
        assert!(most_held(&again) <= bound, "{transport:?}: {again}");
        // The guest reads: every byte, in order, then the end.
        let got = take_data(&mut g, socket, TOTAL);
        assert!(
            got == pattern_at(0, TOTAL),
            "{transport:?}: the data differs"
        );
        let (end, _, skipped) = g.event_of("end");
        assert_eq!(end["socket"], socket);
        assert!(skipped.is_empty(), "{skipped:?}");
        sender.join().unwrap();
        let stats = h.stats();
        assert_eq!(stats["outbound_fallback_found_work"], 0, "{stats}");
    }
}

/// Payload bytes waiting for this poll-mode guest's polls.
fn poll_queued(g: &mut RawGuest) -> u64 {
    g.stats()["session"]["poll_queued_bytes"].as_u64().unwrap()
}

/// Waits (with the suite's deadline) until `want` bytes wait for the guest's polls.
fn wait_for_poll_queue(g: &mut RawGuest, want: u64) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while poll_queued(g) < want {
        assert!(
            std::time::Instant::now() < deadline,
            "the host data never came"
        );
        std::thread::yield_now();
    }
}

/// Every capability but `credit`.
fn without_credit() -> Vec<&'static str> {
    ALL_CAPS
        .iter()
        .copied()
        .filter(|c| *c != "credit")
        .collect()
}

#[test]
fn a_poll_guest_without_credit_holds_one_window_per_unpolled_socket() {
    const WINDOW: usize = 64 * 1024;
    const CHUNK: usize = 32 * 1024;
    let h = Harness::with_config(config(|_| {}));
    let caps = without_credit();
    let hello = |h: &Harness| {
        let params = json!({"version": 1, "vm": "a", "secret": "sa", "mode": "poll",
                            "capabilities": caps, "credit": WINDOW});
        let (g, outcome) = hello_with(h, Transport::Unix, params);
        let hello = outcome.expect("hello refused");
        assert!(!hello["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "credit"));
        g
    };
    let mut reader = hello(&h);
    reader.set_poll_mode();
    let port = reader.call("net.listen", json!({"port": 0}), b"").unwrap()["local"]["port"]
        .as_u64()
        .unwrap();
    let mut writer = h.guest(Transport::InProcess);
    let sock = writer
        .call("net.connect", json!({"port": port}), b"")
        .unwrap()["socket"]
        .as_u64()
        .unwrap();
    let (accept, _, _) = reader.event_of("accept");
    let reader_sock = accept["socket"].as_u64().unwrap();
    // The writer writes 2 MiB that the reader never polls: all but one window of it
    // stays in the writer's VM buffers (counted against them), none in the poll queue.
    for offset in (0..TOTAL).step_by(CHUNK) {
        let params = json!({"socket": sock});
        writer
            .call("net.write", params, &pattern_at(offset, CHUNK))
            .unwrap();
    }
    let stats = h.stats();
    let buffered = stats["vms"]["a"]["buffered_bytes"].as_u64().unwrap();
    assert!(buffered >= (TOTAL - WINDOW) as u64, "{stats}");
    assert_eq!(poll_queued(&mut reader), WINDOW as u64);
    // Polling refills the window: every byte, in order.
    let got = take_data(&mut reader, reader_sock, TOTAL);
    assert!(got == pattern_at(0, TOTAL), "the in-VM data differs");
    assert_eq!(h.stats()["vms"]["a"]["buffered_bytes"], 0);

    // A host connection: the same window; what it does not take stays in the kernel.
    let (port, sender) = host_sender();
    let params = json!({"host": "127.0.0.1", "port": port});
    let socket = reader.call("net.connect", params, b"").unwrap()["socket"]
        .as_u64()
        .unwrap();
    wait_for_poll_queue(&mut reader, WINDOW as u64);
    // Time for the sender to send more (the loop serves a bystander): nothing more is read.
    echoes(&h, Transport::InProcess, "b", 10);
    assert_eq!(poll_queued(&mut reader), WINDOW as u64);
    let got = take_data(&mut reader, socket, TOTAL);
    assert!(got == pattern_at(0, TOTAL), "the host data differs");
    sender.join().unwrap();
}
