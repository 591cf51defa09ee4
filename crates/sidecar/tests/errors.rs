//! Typed errors, and a sidecar that keeps serving everyone else: refused connects and
//! binds, bad ids, refused hellos, malformed / truncated / oversized frames.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{code, encode, Harness, Incoming, RawGuest, Transport, TRANSPORTS};

#[test]
fn refused_connects_and_binds_have_posix_codes() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut g = h.guest(transport);
        assert_eq!(
            code(g.call("net.connect", json!({"port": 9}), b"")),
            "ECONNREFUSED"
        );
        assert_eq!(
            code(g.call("net.connect", json!({"host": "10.1.2.3", "port": 80}), b"")),
            "EACCES"
        );
        assert_eq!(
            code(g.call("net.connect", json!({"path": "/nobody.sock"}), b"")),
            "ENOENT"
        );
        assert_eq!(
            code(g.call(
                "net.connect",
                json!({"host": "example.invalid", "port": 80}),
                b""
            )),
            "ENOTFOUND"
        );
        g.call("net.listen", json!({"host": "0.0.0.0", "port": 8080}), b"")
            .unwrap();
        assert_eq!(
            code(g.call(
                "net.listen",
                json!({"host": "127.0.0.1", "port": 8080}),
                b""
            )),
            "EADDRINUSE"
        );
        assert_eq!(
            code(g.call("net.listen", json!({"host": "::", "port": 8080}), b"")),
            "EADDRINUSE"
        );
        // A different loopback family does not overlap 0.0.0.0.
        g.call("net.listen", json!({"host": "::1", "port": 8080}), b"")
            .unwrap();
        assert_eq!(
            code(g.call("net.listen", json!({"host": "192.168.1.1", "port": 1}), b"")),
            "EADDRNOTAVAIL"
        );
        g.call("net.listen", json!({"path": "/x.sock"}), b"")
            .unwrap();
        assert_eq!(
            code(g.call("net.listen", json!({"path": "/tmp/../x.sock"}), b"")),
            "EADDRINUSE"
        );
        assert_eq!(
            code(g.call("net.write", json!({"socket": 999}), b"x")),
            "EBADF"
        );
        assert_eq!(
            code(g.call("net.destroy", json!({"socket": 999}), b"")),
            "EBADF"
        );
        assert_eq!(
            code(g.call("net.server_close", json!({"server": 999}), b"")),
            "EBADF"
        );
    }
}

#[test]
fn another_sessions_ids_are_ebadf() {
    let h = Harness::new();
    let mut a = h.guest(Transport::InProcess);
    let mut b = h.guest(Transport::InProcess);
    let listened = a.call("net.listen", json!({"port": 0}), b"").unwrap();
    let server = listened["server"].clone();
    assert_eq!(
        code(b.call("net.server_close", json!({"server": server}), b"")),
        "EBADF"
    );
    // A server id is not a socket id either.
    assert_eq!(
        code(a.call("net.write", json!({"socket": server}), b"x")),
        "EBADF"
    );
}

#[test]
fn noreply_failures_arrive_as_error_events_with_the_request_id() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    let id = g.send_call("net.write", json!({"socket": 42}), b"x", true);
    let (event, _) = g.event();
    assert_eq!(event["event"], "error");
    assert_eq!(event["request"], id);
    assert_eq!(event["socket"], 42);
    assert_eq!(event["code"], "EBADF");
}

#[test]
fn hellos_with_a_wrong_secret_unknown_vm_or_version_are_refused_then_closed() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        for params in [
            json!({"version": 1, "vm": "a", "secret": "wrong"}),
            json!({"version": 1, "vm": "nope", "secret": "sa"}),
            json!({"version": 1, "vm": "b", "secret": "sa"}),
            json!({"version": 99, "vm": "a", "secret": "sa"}),
        ] {
            let mut g = RawGuest::new(h.wire(transport));
            let err = g.call("hello", params.clone(), b"").unwrap_err();
            let expected = if params["version"] == 99 {
                "EPROTONOSUPPORT"
            } else {
                "EACCES"
            };
            assert_eq!(err["code"], expected, "{params}");
            assert!(
                g.recv(Instant::now() + Duration::from_secs(10)).is_none(),
                "stream not closed"
            );
        }
    }
}

#[test]
fn a_call_before_hello_is_eproto_then_closed() {
    let h = Harness::new();
    let mut g = RawGuest::new(h.wire(Transport::Unix));
    assert_eq!(
        code(g.call("net.listen", json!({"port": 0}), b"")),
        "EPROTO"
    );
    assert!(g.recv(Instant::now() + Duration::from_secs(10)).is_none());
}

#[test]
fn malformed_frames_get_typed_errors_and_the_session_goes_on() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut g = h.guest(transport);
        // Broken JSON with a recoverable id.
        let mut bad = Vec::new();
        let header = br#"{"type":"call","id":77,"method":"net.listen","params":{"port":"#;
        bad.extend(((4 + header.len()) as u32).to_be_bytes());
        bad.extend((header.len() as u32).to_be_bytes());
        bad.extend(header);
        g.send_raw(bad);
        assert_eq!(code(g.wait_reply(77)), "EPROTO");
        // Unknown method; bad params; payload on a call that takes none; second hello.
        assert_eq!(code(g.call("net.teleport", json!({}), b"")), "ENOSYS");
        assert_eq!(
            code(g.call("net.listen", json!({"port": "eighty"}), b"")),
            "EINVAL"
        );
        assert_eq!(
            code(g.call("net.listen", json!({"port": 0}), b"payload")),
            "EINVAL"
        );
        assert_eq!(
            code(g.call(
                "hello",
                json!({"version": 1, "vm": "a", "secret": "sa"}),
                b""
            )),
            "EINVAL"
        );
        // Still serving this session.
        g.call("net.listen", json!({"port": 0}), b"").unwrap();
        assert_eq!(
            g.stats()["session"]["calls"]["net.listen"],
            2,
            "well-formed listens counted"
        );
    }
}

#[test]
fn oversized_and_truncated_frames_close_only_their_session() {
    let mut config = sidecar::SidecarConfig::default().with_vm("a", "sa");
    config.limits.max_frame = 64 * 1024;
    let h = Harness::with_config(config);
    let mut bystander = h.guest(Transport::Unix);
    bystander
        .call("net.listen", json!({"port": 7000}), b"")
        .unwrap();

    // Oversized: the prefix alone announces 1 GiB; the sidecar must refuse before reading.
    for transport in TRANSPORTS {
        let mut g = h.guest(transport);
        let mut prefix = Vec::new();
        prefix.extend((1u32 << 30).to_be_bytes());
        prefix.extend(16u32.to_be_bytes());
        g.send_raw(prefix);
        let deadline = Instant::now() + Duration::from_secs(10);
        match g.recv(deadline) {
            Some(Incoming::Event { event, .. }) => {
                assert_eq!(event["event"], "error");
                assert_eq!(event["code"], "EMSGSIZE");
            }
            other => panic!("expected an EMSGSIZE error event, got {other:?}"),
        }
        assert!(g.recv(deadline).is_none(), "the session should be closed");
    }

    // Truncated: half a frame, then the guest goes away.
    let mut g = RawGuest::attach(h.wire(Transport::Unix), "a", "sa");
    let frame = encode(&json!({"type": "call", "id": 5, "method": "stats"}), b"");
    g.send_raw(frame[..frame.len() / 2].to_vec());
    drop(g);

    // Garbage before hello.
    let mut g = RawGuest::new(h.wire(Transport::Unix));
    g.send_raw(vec![0, 0, 0, 1, 0, 0, 0, 9]);
    match g.recv(Instant::now() + Duration::from_secs(10)) {
        Some(Incoming::Reply { outcome, .. }) => assert_eq!(outcome.unwrap_err()["code"], "EPROTO"),
        other => panic!("expected an EPROTO reply, got {other:?}"),
    }

    // The bystander never noticed.
    let stats = bystander.stats();
    assert_eq!(stats["vm"]["listeners"], 1);
    let operator = h.stats();
    assert!(
        operator["framing_errors"].as_u64().unwrap() >= 3,
        "{operator}"
    );
    assert_eq!(operator["sessions"], 1);
}

#[test]
fn capabilities_not_negotiated_are_enotsup() {
    let h = Harness::new();
    let mut g = RawGuest::new(h.wire(Transport::InProcess));
    let hello = g
        .call(
            "hello",
            json!({"version": 1, "vm": "a", "secret": "sa", "capabilities": ["push", "tcp"]}),
            b"",
        )
        .unwrap();
    assert_eq!(hello["capabilities"], json!(["push", "tcp"]));
    assert_eq!(
        code(g.call("net.listen", json!({"path": "/u.sock"}), b"")),
        "ENOTSUP"
    );
    assert_eq!(
        code(g.call("dns.lookup", json!({"host": "localhost"}), b"")),
        "ENOTSUP"
    );
    g.call("net.listen", json!({"port": 0}), b"").unwrap();
}

#[test]
fn calls_racing_a_close_never_name_the_closed_socket_again() {
    let h = Harness::new();
    let mut c = support::connect_pair(&h, Transport::InProcess, json!({"port": 0}), json!({}));
    // A reset closes the peer at once (a plain close would leave it half-open).
    c.client
        .call(
            "net.destroy",
            json!({"socket": c.client_sock, "reset": true}),
            b"",
        )
        .unwrap();
    c.server.event_of("close");
    // The server, not yet aware, destroys and writes the already-closed socket.
    c.server
        .call("net.destroy", json!({"socket": c.server_sock}), b"")
        .unwrap();
    let id = c
        .server
        .send_call("net.write", json!({"socket": c.server_sock}), b"late", true);
    let (event, _) = c.server.event();
    assert_eq!(event["event"], "error");
    assert_eq!(event["request"], id);
    assert_eq!(event["code"], "EBADF");
    assert!(
        event.get("socket").is_none(),
        "named a socket after its close: {event}"
    );
    // An id that was never issued is still EBADF with the socket named.
    assert_eq!(
        code(c.server.call("net.destroy", json!({"socket": 9999}), b"")),
        "EBADF"
    );
}
