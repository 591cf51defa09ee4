//! Sessions and VMs over time: isolation between VMs, a guest that disconnects
//! mid-stream, the backlog (parked connects), the event channel, dns, and the proof that
//! push mode has no timer on its data path.

mod support;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{connect_pair, Harness, Mode, RawGuest, Transport, Wire, ALL_CAPS, TRANSPORTS};

#[test]
fn two_vms_with_the_same_port_and_path_do_not_see_each_other() {
    let h = Harness::new();
    let mut a = h.guest_in(Transport::InProcess, "a");
    let mut b = h.guest_in(Transport::Unix, "b");
    // Same address and path in both VMs: no EADDRINUSE across VMs.
    a.call(
        "net.listen",
        json!({"host": "127.0.0.1", "port": 8080}),
        b"",
    )
    .unwrap();
    b.call(
        "net.listen",
        json!({"host": "127.0.0.1", "port": 8080}),
        b"",
    )
    .unwrap();
    a.call("net.listen", json!({"path": "/run/app.sock"}), b"")
        .unwrap();
    b.call("net.listen", json!({"path": "/run/app.sock"}), b"")
        .unwrap();
    // A client in VM b reaches b's listeners only.
    let mut b_client = h.guest_in(Transport::InProcess, "b");
    b_client
        .call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": 8080}),
            b"",
        )
        .unwrap();
    b_client
        .call("net.connect", json!({"path": "/run/app.sock"}), b"")
        .unwrap();
    let (accept1, _, _) = b.event_of("accept");
    let (accept2, _, _) = b.event_of("accept");
    assert_ne!(accept1["socket"], accept2["socket"]);
    // VM a heard nothing: its next event is the reply to this stats call's absence of events.
    assert_eq!(a.stats()["session"]["events_pushed"]["accept"], 0);
    // A VM with nobody listening refuses, even though the other VM has the port.
    let mut lonely = h.guest_in(Transport::InProcess, "a");
    a.call("net.server_close", json!({"server": 1}), b"")
        .unwrap();
    let err = lonely
        .call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": 8080}),
            b"",
        )
        .unwrap_err();
    assert_eq!(err["code"], "ECONNREFUSED");
}

#[test]
fn a_guest_that_disconnects_mid_stream_leaves_nothing_behind() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut c = connect_pair(&h, transport, json!({"port": 0}), json!({}));
        c.client.send_call(
            "net.write",
            json!({"socket": c.client_sock}),
            b"partial",
            true,
        );
        // Give the client more sockets and a server of its own, then let it vanish.
        c.client
            .call("net.listen", json!({"path": "/gone.sock"}), b"")
            .unwrap();
        let server_id = c.server_id;
        assert_eq!(c.server.read_data(c.server_sock, 7), b"partial");
        drop(c.client);
        let (end, _, _) = c.server.event_of("end");
        assert_eq!(end["socket"], c.server_sock);
        // As a kernel socket whose peer exited: half-closed until this side ends too
        // (Node's default on `end`), its last write taken.
        c.server
            .call("net.write", json!({"socket": c.server_sock}), b"bye")
            .expect("a write after the peer's close is taken, as a kernel takes it");
        c.server
            .call("net.shutdown", json!({"socket": c.server_sock}), b"")
            .unwrap();
        let (close, _, _) = c.server.event_of("close");
        assert_eq!(close["socket"], c.server_sock);
        // Only the surviving guest's server remains.
        let stats = c.server.stats();
        assert_eq!(stats["vm"]["sockets"], 1, "{stats}");
        assert_eq!(stats["vm"]["listeners"], 1);
        let err = c
            .server
            .call("net.connect", json!({"path": "/gone.sock"}), b"")
            .unwrap_err();
        assert_eq!(err["code"], "ENOENT", "the vanished guest's server is gone");
        c.server
            .call("net.server_close", json!({"server": server_id}), b"")
            .unwrap();
        drop(c.server);
        let operator = h.stats();
        assert_eq!(operator["streams"], 0, "{operator}");
        assert_eq!(operator["servers"], 0);
        assert_eq!(operator["vms"]["a"]["sockets"], 0);
        assert_eq!(operator["fabric_live_keys"], 0);
    }
}

#[test]
fn a_full_backlog_parks_the_connect_until_an_accept_is_taken() {
    let h = Harness::new();
    let mut server = h.guest(Transport::InProcess);
    let listened = server
        .call("net.listen", json!({"port": 0, "backlog": 1}), b"")
        .unwrap();
    let port = listened["local"]["port"].clone();
    let mut first = h.guest(Transport::InProcess);
    first
        .call("net.connect", json!({"port": port}), b"")
        .unwrap();
    let (accept, _, _) = server.event_of("accept");
    // The backlog (1) is now full until the server takes that connection.
    let mut second = h.guest(Transport::Unix);
    let parked = second.send_call("net.connect", json!({"port": port}), b"", false);
    // While it is parked, the sidecar serves everyone, this guest included: calls run in
    // order, so when this stats call is answered the connect has been parked.
    let stats = second.stats();
    assert_eq!(stats["session"]["parked_calls"], 1, "{stats}");
    assert_eq!(h.stats()["parked_calls"], 1);
    server.send_call(
        "net.credit",
        json!({"socket": accept["socket"], "bytes": 0}),
        b"",
        true,
    );
    let connected = second
        .wait_reply(parked)
        .expect("connect after room was made");
    assert!(connected["socket"].as_u64().is_some());
    server.event_of("accept");
    let stats = h.stats();
    assert_eq!(stats["parked_calls"], 0);
    assert_eq!(stats["parked_calls_total"], 1);
    // Woken by the notification, not by the fallback.
    assert_eq!(stats["fallback_found_work"], 0);
}

#[test]
fn a_connect_parked_past_its_timeout_is_etimedout_and_a_closed_server_refuses() {
    let h = Harness::new();
    let mut server = h.guest(Transport::InProcess);
    let listened = server
        .call(
            "net.listen",
            json!({"path": "/full.sock", "backlog": 1}),
            b"",
        )
        .unwrap();
    let mut client = h.guest(Transport::InProcess);
    client
        .call("net.connect", json!({"path": "/full.sock"}), b"")
        .unwrap();
    let started = Instant::now();
    let err = client
        .call(
            "net.connect",
            json!({"path": "/full.sock", "timeout_ms": 100}),
            b"",
        )
        .unwrap_err();
    assert_eq!(err["code"], "ETIMEDOUT");
    assert!(started.elapsed() >= Duration::from_millis(100));
    // A connect parked when the server closes is refused at once (the path is gone).
    let parked = client.send_call("net.connect", json!({"path": "/full.sock"}), b"", false);
    assert_eq!(client.stats()["session"]["parked_calls"], 1);
    server
        .call(
            "net.server_close",
            json!({"server": listened["server"]}),
            b"",
        )
        .unwrap();
    let err = client.wait_reply(parked).unwrap_err();
    assert_eq!(err["code"], "ENOENT");
    // A guest that ends with a parked call drops it.
    server
        .call(
            "net.listen",
            json!({"path": "/full.sock", "backlog": 1}),
            b"",
        )
        .unwrap();
    let mut doomed = h.guest(Transport::Unix);
    doomed
        .call("net.connect", json!({"path": "/full.sock"}), b"")
        .unwrap();
    doomed.send_call("net.connect", json!({"path": "/full.sock"}), b"", false);
    assert_eq!(doomed.stats()["session"]["parked_calls"], 1);
    drop(doomed);
    // The session's end reaches the loop on its own stream: ask until it has (each ask is
    // a round trip through the loop, not a spin), within a deadline.
    let until = Instant::now() + Duration::from_secs(10);
    while h.stats()["parked_calls"] != 0 {
        assert!(
            Instant::now() < until,
            "parked call not dropped with its session"
        );
    }
}

#[test]
fn events_flow_on_the_event_channel_and_replies_on_the_primary() {
    let h = Harness::new();
    let mut primary = RawGuest::new(Wire::Unix(UnixStream::connect(&h.socket).unwrap()));
    let mut caps = ALL_CAPS.to_vec();
    caps.push("event_channel");
    let hello = primary
        .call(
            "hello",
            json!({"version": 1, "vm": "a", "secret": "sa", "capabilities": caps}),
            b"",
        )
        .unwrap();
    let token = hello["event_channel_token"].as_str().unwrap().to_owned();
    // Events that happen before the channel attaches wait for it.
    let listened = primary.call("net.listen", json!({"port": 0}), b"").unwrap();
    let mut client = h.guest(Transport::InProcess);
    client
        .call(
            "net.connect",
            json!({"port": listened["local"]["port"]}),
            b"",
        )
        .unwrap();
    let mut events = RawGuest::new(Wire::Unix(UnixStream::connect(&h.socket).unwrap()));
    let attached = events
        .call(
            "hello",
            json!({"version": 1, "vm": "a", "secret": "sa", "event_channel_token": token}),
            b"",
        )
        .unwrap();
    assert_eq!(attached["session"], hello["session"]);
    // The queued events follow the channel's hello reply, never precede it.
    assert_eq!(
        events.queued_events(),
        0,
        "an event came before the event channel's hello reply"
    );
    let (accept, _, _) = events.event_of("accept");
    assert_eq!(accept["server"], listened["server"]);
    // Replies stay on the primary; the event channel takes no calls.
    primary.call("stats", json!({}), b"").unwrap();
    assert_eq!(
        events.call("stats", json!({}), b"").unwrap_err()["code"],
        "EINVAL"
    );
    // The token was one-time.
    let mut thief = RawGuest::new(Wire::Unix(UnixStream::connect(&h.socket).unwrap()));
    let err = thief
        .call(
            "hello",
            json!({"version": 1, "vm": "a", "secret": "sa", "event_channel_token": token}),
            b"",
        )
        .unwrap_err();
    assert_eq!(err["code"], "EACCES");
}

#[test]
fn dns_lookup_resolves_inside_the_vm() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    let both = g
        .call("dns.lookup", json!({"host": "localhost"}), b"")
        .unwrap();
    assert_eq!(
        both["addresses"],
        json!([{"address": "127.0.0.1", "family": 4}, {"address": "::1", "family": 6}])
    );
    let v6 = g
        .call("dns.lookup", json!({"host": "localhost", "family": 6}), b"")
        .unwrap();
    assert_eq!(v6["addresses"], json!([{"address": "::1", "family": 6}]));
    let literal = g
        .call("dns.lookup", json!({"host": "127.0.0.9"}), b"")
        .unwrap();
    assert_eq!(literal["addresses"][0]["address"], "127.0.0.9");
    let err = g
        .call("dns.lookup", json!({"host": "db.internal"}), b"")
        .unwrap_err();
    assert_eq!(err["code"], "ENOTFOUND");
}

#[test]
fn push_mode_has_no_timer_origin_wakes_and_no_fallback_wakes() {
    let h = Harness::new();
    for transport in TRANSPORTS.into_iter().filter(|s| s.mode == Mode::Push) {
        let mut c = connect_pair(&h, transport, json!({"port": 0}), json!({}));
        for _ in 0..100 {
            c.client
                .send_call("net.write", json!({"socket": c.client_sock}), b"ping", true);
            c.server.read_data(c.server_sock, 4);
        }
        let stats = c.client.stats();
        assert_eq!(stats["health"]["timer_origin_wakes"], 0);
        assert_eq!(stats["health"]["fallback_fired"], 0);
        assert_eq!(stats["health"]["fallback_found_work"], 0);
        assert_eq!(stats["session"]["mode"], "push");
    }
}
