//! `pending_connections_per_vm` (PROTOCOL.md `net.listen`, "Pending connections per VM"):
//! connections accepted for a VM's listeners that its guests have not taken yet, plus its
//! host connects in progress. At the limit nothing is silently dropped: an in-VM connect
//! waits as for a full backlog, a host connect fails `EAGAIN`, a published-port
//! connection is closed and counted, a guest of another VM connecting to the published
//! port (paired) gets `ECONNREFUSED`; the VM recovers once its guests take what is
//! pending, and another VM is not affected meanwhile. Also: a published-port accept counts
//! against its listener's backlog until the guest takes it, as an in-VM one does.
//!
//! Synchronisation is on replies, events and the operator's stats (each a round trip
//! through the sidecar's loop), never on sleeps.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};

use serde_json::{json, Value};
use sidecar::{LimitOverrides, SidecarConfig};
use support::*;

/// The next `accept` a guest gets: its socket id.
fn accepted(server: &mut RawGuest) -> u64 {
    server.event_of("accept").0["socket"].as_u64().unwrap()
}

/// The guest takes an accepted connection (as the guest client does: a zero credit).
fn take(server: &mut RawGuest, socket: u64) {
    server
        .call("net.credit", json!({"socket": socket, "bytes": 0}), b"")
        .unwrap();
}

fn pending(stats: &Value, vm: &str) -> u64 {
    stats["vms"][vm]["pending_connections"].as_u64().unwrap()
}

/// A host client's connection to a published port that the sidecar closed: it reads no
/// byte (end of stream or a reset).
fn assert_closed_by_the_sidecar(mut client: TcpStream) {
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("a refused connection carried data"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "not closed: {e}"
        ),
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn pending_connections_past_the_vm_limit_wait_fail_or_are_counted_and_room_comes_back() {
    let native = TcpListener::bind("127.0.0.1:0").unwrap();
    let native_port = native.local_addr().unwrap().port();
    let published = free_addr();
    let own = LimitOverrides {
        pending_connections_per_vm: Some(2),
        ..LimitOverrides::default()
    };
    let config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_vm_limits("a", own)
        .with_allow(format!("127.0.0.1:{native_port}").parse().unwrap())
        .with_publish("a", published, 8080);
    let h = Harness::with_config(config);
    let mut server = h.guest(Transport::Unix);
    let mut client = h.guest(Transport::InProcess);
    server
        .call("net.listen", json!({"port": 8080}), b"")
        .unwrap();
    server
        .call("net.listen", json!({"path": "/p"}), b"")
        .unwrap();

    // Two pending: an in-VM connection and a published-port one, neither taken yet.
    client.connect_ok("localhost", 8080);
    let in_vm = accepted(&mut server);
    let _host_client = TcpStream::connect(published).unwrap();
    let from_host = accepted(&mut server);
    assert_eq!(pending(&h.stats(), "a"), 2);

    // A host connect: EAGAIN at once, counted; nothing reached the host.
    let refused = client
        .call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": native_port}),
            b"",
        )
        .expect_err("a host connect past the pending limit");
    assert_eq!(refused["code"], "EAGAIN", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("limit 2"),
        "{refused}"
    );
    // A published-port connection: closed by the sidecar, counted.
    let turned_away = TcpStream::connect(published).unwrap();
    let stats = settle(&h, "the published connection refused", |s| {
        s["published_refused"] == 1
    });
    assert_eq!(stats["pending_refused"], 2, "{stats}");
    assert_closed_by_the_sidecar(turned_away);
    // An in-VM connect waits (parked), as for a full backlog.
    let mut waiter = h.guest(Transport::InProcess);
    let waiting = waiter.send_call("net.connect", json!({"path": "/p"}), b"", false);
    settle(&h, "the in-VM connect parked", |s| s["parked_calls"] == 1);

    // Another VM is not affected: its own connections go through.
    let (mut b_server, mut b_client) = (
        h.guest_in(Transport::Unix, "b"),
        h.guest_in(Transport::InProcess, "b"),
    );
    let listened = b_server
        .call("net.listen", json!({"port": 0}), b"")
        .unwrap();
    b_client.connect_ok(
        "localhost",
        listened["local"]["port"].as_u64().unwrap() as u16,
    );
    accepted(&mut b_server);

    // The guest takes the in-VM connection: the waiting connect goes through at once.
    take(&mut server, in_vm);
    let connected = waiter.wait_reply(waiting).expect("the parked connect");
    assert!(connected["socket"].as_u64().is_some(), "{connected}");
    let from_waiter = accepted(&mut server);
    assert_eq!(pending(&h.stats(), "a"), 2);
    // It takes the rest: room for host connects and published connections again.
    take(&mut server, from_host);
    take(&mut server, from_waiter);
    assert_eq!(pending(&h.stats(), "a"), 0);
    client.connect_ok("127.0.0.1", native_port);
    native.accept().expect("the host connect reached the host");
    let _again = TcpStream::connect(published).unwrap();
    let again = accepted(&mut server);
    take(&mut server, again);
    let stats = settle(&h, "nothing pending", |s| pending(s, "a") == 0);
    assert_eq!(stats["pending_refused"], 2, "{stats}");
    assert_eq!(stats["published_refused"], 1, "{stats}");
    assert_eq!(
        stats["fallback_found_work"], 0,
        "the parked connect was woken by a notification: {stats}"
    );
}

#[test]
fn a_vm_whose_guest_ends_with_connections_pending_has_room_again() {
    let mut config = SidecarConfig::default().with_vm("a", "sa");
    config.limits.pending_connections_per_vm = 1;
    let h = Harness::with_config(config);
    let mut server = h.guest(Transport::InProcess);
    let mut client = h.guest(Transport::Unix);
    server
        .call("net.listen", json!({"path": "/s"}), b"")
        .unwrap();
    client
        .call("net.connect", json!({"path": "/s"}), b"")
        .unwrap();
    accepted(&mut server);
    assert_eq!(pending(&h.stats(), "a"), 1);
    // The server's guest ends without taking it: its accepted end closes, the count drops.
    drop(server);
    settle(&h, "the pending connection released", |s| {
        pending(s, "a") == 0
    });
    let mut server = h.guest(Transport::InProcess);
    server
        .call("net.listen", json!({"path": "/s"}), b"")
        .unwrap();
    client
        .call("net.connect", json!({"path": "/s"}), b"")
        .unwrap();
    accepted(&mut server);
}

#[test]
fn a_published_accept_counts_against_the_backlog_until_taken() {
    for setup in TRANSPORTS {
        let published = free_addr();
        let config = SidecarConfig::default()
            .with_vm("a", "sa")
            .with_publish("a", published, 8080);
        let h = Harness::with_config(config);
        let mut server = h.guest(setup);
        let listen = json!({"port": 8080, "backlog": 1});
        server.call("net.listen", listen, b"").unwrap();
        let _first = TcpStream::connect(published).unwrap();
        settle(&h, "the first accepted", |s| s["host_connections"] == 1);
        // Backlog 1, not taken yet: the next one is refused and counted.
        let second = TcpStream::connect(published).unwrap();
        let stats = settle(&h, "the second refused", |s| s["published_refused"] == 1);
        assert_eq!(stats["pending_refused"], 0, "{setup:?}: {stats}");
        assert_closed_by_the_sidecar(second);
        // Taken (push: a call naming it; poll: polling its accept): room again.
        let first = accepted(&mut server);
        if setup.mode == Mode::Push {
            take(&mut server, first);
        }
        let _third = TcpStream::connect(published).unwrap();
        let third = accepted(&mut server);
        assert_ne!(third, first, "{setup:?}");
        assert_eq!(h.stats()["published_refused"], 1, "{setup:?}");
    }
}

#[test]
fn a_paired_connect_to_a_vm_at_its_pending_limit_is_refused_then_pairs_once_taken() {
    let published = free_addr();
    let own = LimitOverrides {
        pending_connections_per_vm: Some(1),
        ..LimitOverrides::default()
    };
    let mut config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_vm_limits("a", own)
        .with_publish("a", published, 8080)
        .with_allow(published.to_string().parse().unwrap());
    config.limits.pairing_wait = DEADLINE;
    let h = Harness::with_config(config);
    let mut server = h.guest(Transport::InProcess);
    server
        .call("net.listen", json!({"port": 8080}), b"")
        .unwrap();
    let mut a_client = h.guest(Transport::Unix);
    a_client.connect_ok("localhost", 8080);
    let pending_one = accepted(&mut server);
    // VM a is full; a guest of VM b connecting to its published port is told so.
    let mut b = h.guest_in(Transport::InProcess, "b");
    let to = json!({"host": published.ip().to_string(), "port": published.port()});
    let refused = b.call("net.connect", to.clone(), b"");
    assert_eq!(code(refused), "ECONNREFUSED");
    // The connect task ends after its answer: then b has nothing pending.
    let stats = settle(&h, "b's connect over", |s| pending(s, "b") == 0);
    assert_eq!(stats["pending_refused"], 1, "{stats}");
    // Taken: the next one pairs.
    take(&mut server, pending_one);
    b.connect_ok(&published.ip().to_string(), published.port());
    accepted(&mut server);
    assert_eq!(h.stats()["pairs_made"], 1);
}
