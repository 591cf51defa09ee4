//! Every call is answered, and a call that fails changes nothing (PROTOCOL.md §3, §5).
//!
//! - An answer too big for the guest's `max_frame` (an `ENOSYS` naming a huge method) is
//!   sent with its message cut to fit, never its code; as a reply or, for a `noreply`
//!   call, as its `error` event.
//! - A Unix path too long once resolved against `cwd` for the frames that would report it
//!   is refused (`ENAMETOOLONG`) before anything is done: no listener is left behind.
//! - A guest frame whose header is a reply gets the `EPROTO` reply to its id; an event,
//!   an `error` event naming no request. A header over `max_header` with no id in reach
//!   gets an `error` event naming no request either (never a made-up id 0).
//! - A frame whose `total` is below 4 is refused from its first 4 bytes.
//! - The accept acknowledgement (`net.credit {bytes: 0}`) works without `credit`.
//! - Poll mode: a `noreply` connect's `connect` event is pushed (it tells the new id).
//! - A hello asking for a mode the sidecar does not have is `ENOTSUP`.
//! - A datagram too big for the receiver's `max_frame` is dropped and counted.
//!
//! And what the document says of a second hello, backlog 0, a socket that closes by
//! itself (`EPIPE`, then `EBADF`) and which loopback `localhost` tries first.

mod support;

use std::time::Instant;

use serde_json::{json, Value};
use support::*;

const SMALL_FRAME: u64 = 4096;
const TRUNCATED: &str = "\u{2026}";

fn small_frames(h: &Harness, transport: Transport, extra: Value) -> RawGuest {
    let mut params = json!({"max_frame": SMALL_FRAME});
    for (key, value) in extra.as_object().unwrap() {
        params[key] = value.clone();
    }
    attach_with(h, transport, "a", params)
}

/// The next frame, which must be an event.
fn next_event(g: &mut RawGuest) -> Value {
    match g.recv(Instant::now() + DEADLINE).expect("an event") {
        Incoming::Event { event, .. } => event,
        Incoming::Reply { id, outcome, .. } => panic!("reply {id} {outcome:?}, not an event"),
    }
}

#[test]
fn an_error_too_big_for_the_guests_frames_is_cut_to_fit() {
    let h = Harness::new();
    for transport in [Transport::InProcess, Transport::Unix] {
        let mut g = small_frames(&h, transport, json!({}));
        assert_eq!(g.hello["max_frame"], 16_777_216, "the sidecar's own limit");
        let method = "m".repeat(8000);
        let error = g.call(&method, json!({}), b"").unwrap_err();
        assert_eq!(error["code"], "ENOSYS", "{transport:?}");
        let message = error["message"].as_str().unwrap();
        assert!(message.ends_with(TRUNCATED), "{message}");
        assert!(message.len() < SMALL_FRAME as usize);
        assert!(message.contains("mmmm"), "as much kept as fits: {message}");

        // The same as a `noreply` call: its `error` event, with the request id.
        let id = g.send_call(&method, json!({}), b"", true);
        let event = next_event(&mut g);
        assert_eq!(event["event"], "error");
        assert_eq!(
            (&event["request"], &event["code"]),
            (&json!(id), &json!("ENOSYS"))
        );
        assert!(event["message"].as_str().unwrap().ends_with(TRUNCATED));

        // The session goes on, and nothing was lost on the way.
        let stats = g.stats();
        assert_eq!(stats["session"]["events_undeliverable"], 0, "{stats}");
    }
}

#[test]
fn a_unix_path_too_long_once_resolved_is_refused_and_leaves_nothing() {
    let h = Harness::new();
    let long_cwd = format!("/{}", "d".repeat(3100));
    for transport in [Transport::InProcess, Transport::Unix] {
        let mut g = small_frames(&h, transport, json!({"cwd": long_cwd}));
        let listened = g.call("net.listen", json!({"path": "s"}), b"");
        let error = listened.unwrap_err();
        assert_eq!(error["code"], "ENAMETOOLONG", "{error}");
        let connected = g.call("net.connect", json!({"path": "s"}), b"");
        assert_eq!(code(connected), "ENAMETOOLONG");
        let stats = g.stats();
        assert_eq!(stats["vm"]["listeners"], 0, "no listener left: {stats}");
        assert_eq!(stats["session"]["open_handles"], 0, "{stats}");
        assert_eq!(stats["session"]["events_undeliverable"], 0, "{stats}");
    }

    // Just within the bound, every frame that names the path fits the smallest frames:
    // the listen reply, the connect reply and event, the accept event.
    let cwd = format!("/{}", "d".repeat(2900));
    let mut server = small_frames(&h, Transport::Unix, json!({"cwd": cwd}));
    let mut client = small_frames(&h, Transport::InProcess, json!({"cwd": cwd}));
    let listened = server
        .call("net.listen", json!({"path": "s"}), b"")
        .unwrap();
    let path = format!("{cwd}/s");
    assert_eq!(listened["local"]["path"], path.as_str());
    let connected = client
        .call("net.connect", json!({"path": "s"}), b"")
        .unwrap();
    assert_eq!(connected["remote"]["path"], path.as_str());
    let (accept, _, _) = server.event_of("accept");
    assert_eq!(accept["local"]["path"], path.as_str());
    let (connect, _, _) = client.event_of("connect");
    assert_eq!(connect["remote"]["path"], path.as_str());
    // A missing path of that length is answered too.
    let missing = client.call("net.connect", json!({"path": "gone"}), b"");
    assert_eq!(code(missing), "ENOENT");
}

#[test]
fn a_reply_or_event_from_a_guest_is_answered_by_its_id_or_by_none() {
    let h = Harness::new();
    for transport in [Transport::InProcess, Transport::Unix] {
        let mut g = h.guest(transport);
        g.send_raw(encode(
            &json!({"type": "reply", "id": 77, "result": null}),
            b"",
        ));
        let error = g.wait_reply(77).unwrap_err();
        assert_eq!(error["code"], "EPROTO", "{error}");

        let event = json!({"type": "event", "event": "end", "socket": 1, "seq": 1});
        g.send_raw(encode(&event, b""));
        let got = next_event(&mut g);
        assert_eq!(
            (&got["event"], &got["code"]),
            (&json!("error"), &json!("EPROTO"))
        );
        for field in ["request", "socket", "server"] {
            assert!(got.get(field).is_none(), "no {field}: {got}");
        }
        g.stats(); // the session goes on

        // Before hello: the reply's id is answered, then the stream closes.
        let mut fresh = RawGuest::new(h.wire(transport));
        fresh.send_raw(encode(
            &json!({"type": "reply", "id": 9, "result": {}}),
            b"",
        ));
        assert_eq!(code(fresh.wait_reply(9)), "EPROTO");
        assert!(fresh.recv(Instant::now() + DEADLINE).is_none(), "closed");
    }
}

#[test]
fn a_header_over_max_header_without_an_id_in_reach_names_no_request() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    // The id comes after the first 4 KiB of a header over 64 KiB: it cannot be found.
    let pad = "x".repeat(70_000);
    let header = format!(r#"{{"type":"call","method":"stats","params":{{"pad":"{pad}"}},"id":5}}"#);
    let mut frame = Vec::new();
    sidecar_protocol::encode_raw_frame(header.as_bytes(), b"", usize::MAX, &mut frame).unwrap();
    g.send_raw(frame);
    let got = next_event(&mut g);
    assert_eq!(
        (&got["event"], &got["code"]),
        (&json!("error"), &json!("EMSGSIZE"))
    );
    assert!(got.get("request").is_none(), "no made-up request id: {got}");
    g.stats();
}

#[test]
fn a_total_below_four_is_refused_from_its_four_bytes() {
    let h = Harness::new();
    for transport in [Transport::InProcess, Transport::Unix] {
        // Nothing follows the 4 bytes: the refusal cannot wait for more.
        let mut g = h.guest(transport);
        g.send_raw(vec![0, 0, 0, 2]);
        let got = next_event(&mut g);
        assert_eq!(
            (&got["event"], &got["code"]),
            (&json!("error"), &json!("EPROTO"))
        );
        let message = got["message"].as_str().unwrap();
        assert!(message.contains("frame of 2 bytes"), "{message}");
        assert!(
            !message.contains("header 0"),
            "no length from beyond it: {message}"
        );
        assert!(g.recv(Instant::now() + DEADLINE).is_none(), "closed");

        // Before hello: an error reply (id 0), then close.
        let mut fresh = RawGuest::new(h.wire(transport));
        fresh.send_raw(vec![0, 0, 0, 3]);
        assert_eq!(code(fresh.wait_reply(0)), "EPROTO");
        assert!(fresh.recv(Instant::now() + DEADLINE).is_none(), "closed");
    }
}

#[test]
fn the_accept_acknowledgement_needs_no_credit_capability() {
    let h = Harness::new();
    let caps = ["push", "noreply", "tcp"];
    let wire = h.wire(Transport::InProcess);
    let mut server = RawGuest::attach_caps(wire, "a", "sa", Mode::Push, &caps);
    let listened = server.call("net.listen", json!({"port": 0, "backlog": 1}), b"");
    let port = listened.unwrap()["local"]["port"].as_u64().unwrap() as u16;
    let mut client = h.guest(Transport::InProcess);
    client.connect_ok("127.0.0.1", port);
    let (accept, _, _) = server.event_of("accept");
    let socket = accept["socket"].as_u64().unwrap();
    assert_eq!(server.stats()["vm"]["pending_connections"], 1);

    let acked = server.call("net.credit", json!({"socket": socket, "bytes": 0}), b"");
    assert_eq!(acked.unwrap(), json!({}));
    assert_eq!(
        server.stats()["vm"]["pending_connections"],
        0,
        "acknowledged"
    );
    // The backlog has room again: the next connect is not parked.
    client.connect_ok("127.0.0.1", port);
    // A real grant still needs the capability.
    let granted = server.call("net.credit", json!({"socket": socket, "bytes": 1}), b"");
    assert_eq!(code(granted), "ENOTSUP");
}

#[test]
fn poll_mode_a_noreply_connect_tells_its_socket_unasked() {
    let h = Harness::new();
    for transport in [Transport::InProcess, Transport::Unix] {
        let mut server = h.guest(transport);
        let listened = server.call("net.listen", json!({"port": 0}), b"").unwrap();
        let port = listened["local"]["port"].clone();
        let wire = h.wire(transport);
        let mut client = RawGuest::attach_mode(wire, "a", "sa", Mode::Poll);

        let id = client.send_call("net.connect", json!({"port": port}), b"", true);
        let connect = next_event(&mut client);
        assert_eq!(
            (&connect["event"], &connect["request"]),
            (&json!("connect"), &json!(id))
        );
        let socket = connect["socket"].as_u64().unwrap();

        // The socket's own events are polled.
        let (accept, _, _) = server.event_of("accept");
        let served = accept["socket"].as_u64().unwrap();
        server
            .call("net.write", json!({"socket": served}), b"hi")
            .unwrap();
        let polled = client.call("net.poll", json!({"socket": socket, "wait_ms": 50}), b"");
        let polled = polled.unwrap();
        assert_eq!(
            (&polled["event"], &polled["socket"]),
            (&json!("data"), &json!(socket))
        );
        assert_eq!(
            polled["seq"],
            connect["seq"].as_u64().unwrap() + 1,
            "seq stays contiguous"
        );

        // A failed one is told the same way.
        let refused = json!({"port": 1});
        let id = client.send_call("net.connect", refused, b"", true);
        let error = next_event(&mut client);
        assert_eq!(
            (&error["event"], &error["request"]),
            (&json!("error"), &json!(id))
        );
        assert_eq!(error["code"], "ECONNREFUSED");
    }
}

#[test]
fn a_hello_asking_for_an_unknown_mode_is_not_supported() {
    let h = Harness::new();
    for transport in [Transport::InProcess, Transport::Unix] {
        let params = json!({"version": 1, "vm": "a", "secret": "sa", "mode": "stream"});
        let (mut g, outcome) = hello_with(&h, transport, params);
        let error = outcome.unwrap_err();
        assert_eq!(error["code"], "ENOTSUP", "{error}");
        assert!(
            g.recv(Instant::now() + DEADLINE).is_none(),
            "a failed hello closes"
        );
        // A mode that is not a string is a malformed param.
        let params = json!({"version": 1, "vm": "a", "secret": "sa", "mode": 3});
        let (_, outcome) = hello_with(&h, transport, params);
        assert_eq!(code(outcome), "EINVAL");
    }
}

#[test]
fn a_second_hello_is_refused_and_the_session_goes_on() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    let again = json!({"version": 1, "vm": "a", "secret": "sa"});
    assert_eq!(code(g.call("hello", again, b"")), "EINVAL");
    assert_eq!(g.stats()["session"]["id"], g.hello["session"]);
}

/// The largest datagram a guest announcing `max_frame` 4096 receives (the `message`
/// event's header needs the rest; PROTOCOL.md, `dgram.send`).
const LARGEST_DATAGRAM: usize = 4096 - 256;

#[test]
fn a_datagram_too_big_for_the_receivers_frames_is_dropped_and_counted() {
    let h = Harness::new();
    for mode in ["push", "poll"] {
        let mut receiver = small_frames(&h, Transport::InProcess, json!({"mode": mode}));
        let socket = udp_socket(&mut receiver, "udp4");
        let bound = receiver.call("dgram.bind", json!({"socket": socket, "port": 0}), b"");
        let port = bound.unwrap()["local"]["port"].clone();
        let mut sender = h.guest(Transport::InProcess);
        let out = udp_socket(&mut sender, "udp4");
        let to = json!({"socket": out, "host": "127.0.0.1", "port": port});
        for len in [LARGEST_DATAGRAM + 1, LARGEST_DATAGRAM] {
            let sent = sender.call("dgram.send", to.clone(), &vec![7; len]);
            assert_eq!(sent.unwrap()["bytes"], len);
        }
        let (message, payload) = if mode == "poll" {
            let poll = json!({"socket": socket, "wait_ms": 50});
            let id = receiver.send_call("dgram.poll", poll, b"", false);
            match receiver
                .recv(Instant::now() + DEADLINE)
                .expect("the poll reply")
            {
                Incoming::Reply {
                    id: got,
                    outcome,
                    payload,
                } if got == id => (outcome.unwrap(), payload),
                other => panic!("not the poll reply: {other:?}"),
            }
        } else {
            receiver.event()
        };
        assert_eq!(message["event"], "message", "{mode}: {message}");
        assert_eq!(payload.len(), LARGEST_DATAGRAM, "{mode}");
        let stats = receiver.stats();
        assert_eq!(
            stats["session"]["udp_dropped_too_large"], 1,
            "{mode}: {stats}"
        );
        assert_eq!(
            stats["session"]["events_undeliverable"], 0,
            "{mode}: {stats}"
        );
        if mode == "poll" {
            let empty = receiver.call("dgram.poll", json!({"socket": socket}), b"");
            assert_eq!(empty.unwrap(), Value::Null, "nothing else was queued");
        }
    }
}

// What PROTOCOL.md says of backlog 0, a socket that closes by itself, and `localhost`.

#[test]
fn a_backlog_of_zero_admits_one_unacknowledged_connection() {
    let h = Harness::new();
    let mut server = h.guest(Transport::InProcess);
    let listened = server.call("net.listen", json!({"port": 0, "backlog": 0}), b"");
    let port = listened.unwrap()["local"]["port"].clone();
    let mut client = h.guest(Transport::InProcess);
    let first = client.call("net.connect", json!({"port": port}), b"");
    assert!(first.is_ok(), "{first:?}");
    let second = client.call("net.connect", json!({"port": port, "timeout_ms": 100}), b"");
    assert_eq!(code(second), "ETIMEDOUT", "the backlog of one is full");
}

/// After the peer's plain destroy a socket is half-closed, as a kernel socket is: `end`,
/// its writes still taken; once it ends its own side it closes by itself and its id is
/// released.
#[test]
fn after_the_peers_destroy_a_socket_closes_and_its_id_is_released() {
    let h = Harness::new();
    let mut c = connect_pair(
        &h,
        Transport::InProcess,
        json!({"port": 0}),
        json!({"host": "127.0.0.1"}),
    );
    c.server
        .call("net.destroy", json!({"socket": c.server_sock}), b"")
        .unwrap();
    let (end, _, _) = c.client.event_of("end");
    assert_eq!(end["socket"], c.client_sock);
    let socket = json!({"socket": c.client_sock});
    let write = c.client.call("net.write", socket.clone(), b"x");
    assert!(write.is_ok(), "half-closed: the write is taken: {write:?}");
    c.client.call("net.shutdown", socket.clone(), b"").unwrap();
    let (close, _, _) = c.client.event_of("close");
    assert_eq!(close["socket"], c.client_sock);
    let write = c.client.call("net.write", socket, b"x");
    assert_eq!(code(write), "EBADF", "closed by itself: the id is released");

    // After its own shutdown a socket still open refuses writes with EPIPE.
    let mut c = connect_pair(
        &h,
        Transport::InProcess,
        json!({"port": 0}),
        json!({"host": "127.0.0.1"}),
    );
    let socket = json!({"socket": c.client_sock});
    c.client.call("net.shutdown", socket.clone(), b"").unwrap();
    assert_eq!(code(c.client.call("net.write", socket, b"x")), "EPIPE");
}

#[test]
fn localhost_tries_ipv4_loopback_first_then_ipv6() {
    let h = Harness::new();
    let mut v6 = h.guest(Transport::InProcess);
    let listened = v6.call("net.listen", json!({"host": "::1", "port": 0}), b"");
    let port = listened.unwrap()["local"]["port"].clone();
    let mut client = h.guest(Transport::InProcess);
    let reached = client.call(
        "net.connect",
        json!({"host": "localhost", "port": port}),
        b"",
    );
    assert_eq!(
        reached.unwrap()["remote"]["address"],
        "::1",
        "only ::1 listens"
    );

    let mut v4 = h.guest(Transport::InProcess);
    let listened = v4.call(
        "net.listen",
        json!({"host": "127.0.0.1", "port": port}),
        b"",
    );
    assert!(listened.is_ok(), "{listened:?}");
    let reached = client.call(
        "net.connect",
        json!({"host": "localhost", "port": port}),
        b"",
    );
    assert_eq!(
        reached.unwrap()["remote"]["address"],
        "127.0.0.1",
        "127.0.0.1 first"
    );
    let (accept, _, _) = v4.event_of("accept");
    assert_eq!(accept["local"]["address"], "127.0.0.1");
}
