//! Host TCP connects that do not connect: the kernel's refusal (`ECONNREFUSED`) and a
//! connect that gets no answer at all (`ETIMEDOUT` at its `timeout_ms`).
//!
//! The second is the design's first internal wait (DESIGN.md, "Internal waits"): a host
//! connect is awaited as writable readiness of a non-blocking socket, parked, while the
//! RPC loop keeps serving every other call (the system this replaces blocked the loop in
//! `connect_timeout`). To get a connect the kernel neither completes nor refuses, the
//! native listener's accept queue is filled and never drained: Linux then drops further
//! SYNs.

mod support;

use serde_json::json;
use support::*;

#[test]
fn a_kernel_refusal_is_econnrefused() {
    let h = allowing(&["127.0.0.1"]);
    for setup in TRANSPORTS {
        let port = dead_port();
        let mut g = h.guest(setup);
        let refused = g.call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": port}),
            b"",
        );
        let error = refused.expect_err("nothing listens there");
        assert_eq!(error["code"], "ECONNREFUSED", "{setup:?}: {error}");
        // The session goes on; the failed connect left no socket behind.
        let stats = g.stats();
        assert_eq!(stats["session"]["open_handles"], 0, "{setup:?}: {stats}");
        assert_eq!(stats["session"]["parked_calls"], 0, "{setup:?}: {stats}");
    }
}

#[test]
fn a_connect_nobody_answers_times_out_while_the_loop_serves_others() {
    let h = allowing(&["127.0.0.1"]);
    let (_listener, _fill, addr) = full_backlog();
    let port = addr.port();
    let mut a = h.guest(Transport::InProcess);
    // Parked for a minute: still parked whatever happens below (the queue stays full).
    let long = a.send_call(
        "net.connect",
        json!({"host": "127.0.0.1", "port": port, "timeout_ms": 60_000}),
        b"",
        false,
    );
    // Calls of a session run in arrival order, so this one starts after `long` parked.
    let short = a.send_call(
        "net.connect",
        json!({"host": "127.0.0.1", "port": port, "timeout_ms": 300}),
        b"",
        false,
    );

    // Meanwhile another session, in another VM, is served: a call, and a whole in-VM
    // connection (listen, connect, accept).
    let mut b = h.guest_in(Transport::Unix, "b");
    assert_eq!(b.stats()["session"]["vm"], "b");
    let listened = b.call("net.listen", json!({"port": 0}), b"").unwrap();
    let b_port = listened["local"]["port"].as_u64().unwrap() as u16;
    let connected = b
        .call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": b_port}),
            b"",
        )
        .expect("an in-VM connect");
    let (connect, _, skipped) = b.event_of("connect");
    assert_eq!(connect["socket"], connected["socket"]);
    let accept = match skipped.first() {
        Some(accept) => accept.clone(),
        None => b.event_of("accept").0,
    };
    assert_eq!(accept["event"], "accept", "{accept}");
    assert_eq!(accept["server"], listened["server"]);

    // The first answer `a` gets is `short`'s timeout (`long` cannot have answered: a reply
    // to it here fails `wait_reply`).
    let timed_out = a.wait_reply(short).expect_err("nobody answers the SYN");
    assert_eq!(timed_out["code"], "ETIMEDOUT", "{timed_out}");
    assert!(
        timed_out["message"]
            .as_str()
            .unwrap()
            .contains(&port.to_string()),
        "{timed_out}"
    );
    // `long` is still parked, and the timed-out connect left no socket.
    let stats = a.stats();
    assert_eq!(stats["session"]["parked_calls"], 1, "{stats}");
    assert_eq!(stats["session"]["open_handles"], 0, "{stats}");
    let _ = long; // dropped with the session: a parked call ends with it.
}
