//! Peer pairing: a guest of VM b connects to VM a's published port on the same sidecar.
//! Paired, the bytes flow in memory (no host connection on either side); with pairing
//! off, or when the accept is late, the connection runs over the kernel — slower, never
//! wrong. The pairing wait is woken by its notification: `fallback_found_work` stays 0.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// VM a publishes `host` to its port 8080; VM b may reach `host`.
fn harness(host: SocketAddr, pairing_wait: Duration) -> Harness {
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_publish("a", host, 8080)
        .with_allow(format!("{host}").parse().unwrap());
    config.limits.pairing_wait = pairing_wait;
    Harness::with_config(config)
}

/// b connects to a's published port; both sides exchange data; returns the operator stats
/// taken while the connection is open.
fn exchange(h: &Harness, host: SocketAddr, setup: Setup) -> Value {
    let mut a = h.guest_in(setup, "a");
    a.call("net.listen", json!({"port": 8080}), b"").unwrap();
    let mut b = h.guest_in(setup, "b");
    let connected = b
        .call(
            "net.connect",
            json!({"host": host.ip().to_string(), "port": host.port()}),
            b"",
        )
        .expect("b reaches a's published port");
    let b_sock = connected["socket"].as_u64().unwrap();
    assert_eq!(connected["remote"]["port"], host.port());
    let (accept, _, _) = a.event_of("accept");
    let a_sock = accept["socket"].as_u64().unwrap();
    let upload: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    b.call("net.write", json!({"socket": b_sock}), &upload)
        .unwrap();
    assert!(
        a.read_data(a_sock, upload.len()) == upload,
        "{setup:?}: upload differs"
    );
    a.call("net.write", json!({"socket": a_sock}), b"reply")
        .unwrap();
    let (connect_event, _, _) = b.event_of("connect");
    assert_eq!(connect_event["socket"], b_sock);
    assert_eq!(b.read_data(b_sock, 5), b"reply");
    let stats = h.stats();
    b.call("net.shutdown", json!({"socket": b_sock}), b"")
        .unwrap();
    let (end, _, _) = a.event_of("end");
    assert_eq!(end["socket"], a_sock);
    stats
}

#[test]
fn a_connect_to_our_own_published_port_is_paired_in_memory() {
    for setup in TRANSPORTS {
        let host: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let h = harness(host, Duration::from_secs(10));
        let stats = exchange(&h, host, setup);
        assert_eq!(stats["pairs_made"], 1, "{setup:?}: {stats}");
        assert_eq!(stats["pairs_missed"], 0);
        assert_eq!(stats["host_connections"], 0, "no kernel socket carries it");
        assert_eq!(stats["streams"], 2, "an in-memory pair");
        assert_eq!(
            stats["vms"]["a"]["sockets"], 2,
            "a's listener and accepted end"
        );
        assert_eq!(stats["vms"]["b"]["sockets"], 1);
        assert_eq!(stats["fallback_found_work"], 0);
    }
}

#[test]
fn a_port_published_on_every_address_pairs_a_connect_to_loopback() {
    let port = free_port();
    let published: SocketAddr = ([0, 0, 0, 0], port).into();
    let dest: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_publish("a", published, 8080)
        .with_allow(format!("{dest}").parse().unwrap());
    config.limits.pairing_wait = Duration::from_secs(10);
    let h = Harness::with_config(config);
    let stats = exchange(&h, dest, Setup::from(Transport::InProcess));
    assert_eq!(stats["pairs_made"], 1, "{stats}");
    assert_eq!(stats["host_connections"], 0, "{stats}");
}

#[test]
fn with_pairing_off_the_connection_runs_over_the_kernel() {
    let host: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let h = harness(host, Duration::ZERO);
    let stats = exchange(&h, host, Setup::from(Transport::InProcess));
    assert_eq!(stats["pairs_made"], 0, "{stats}");
    assert_eq!(
        stats["host_connections"], 2,
        "b's connect and a's accepted end"
    );
    assert_eq!(stats["streams"], 0);
}

#[test]
fn a_late_accept_leaves_the_connection_on_the_kernel_path_and_nothing_is_wrong() {
    // A wait of 1 µs: the accept sometimes answers first (paired), mostly it is late
    // (kernel path). Either way the bytes are right and exactly one outcome is counted.
    for _ in 0..5 {
        let host: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let h = harness(host, Duration::from_micros(1));
        let stats = exchange(&h, host, Setup::from(Transport::InProcess));
        let (made, missed) = (
            stats["pairs_made"].as_u64().unwrap(),
            stats["pairs_missed"].as_u64().unwrap(),
        );
        assert_eq!(made + missed, 1, "{stats}");
        let kernel = stats["host_connections"].as_u64().unwrap();
        assert_eq!(
            kernel,
            2 * missed,
            "paired: none; kernel path: one per side"
        );
    }
}

#[test]
fn a_published_port_with_no_listener_refuses_the_paired_connect() {
    let host: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let h = harness(host, Duration::from_secs(10));
    let mut b = h.guest_in(Transport::InProcess, "b");
    let refused = b.call(
        "net.connect",
        json!({"host": "127.0.0.1", "port": host.port()}),
        b"",
    );
    assert_eq!(code(refused), "ECONNREFUSED");
    assert_eq!(h.stats()["host_connections"], 0);
}
