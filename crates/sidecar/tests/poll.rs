//! What only poll mode has: the poll calls themselves (null or one event, the pushed
//! shape), parked polls, ids released once their `close` is polled, the backlog as
//! unpolled accepts, and the rejection of poll calls in push mode.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Harness, Mode, Setup, Transport};

const POLL: Setup = Setup {
    transport: Transport::InProcess,
    mode: Mode::Poll,
};

#[test]
fn poll_calls_answer_null_or_one_event_in_the_pushed_shape() {
    let h = Harness::new();
    let mut server = h.guest(POLL);
    let listened = server.call("net.listen", json!({"port": 0}), b"").unwrap();
    let sid = listened["server"].clone();
    assert!(server
        .call("net.server_poll", json!({"server": sid, "wait_ms": 0}), b"")
        .unwrap()
        .is_null());
    let mut client = h.guest(Transport::InProcess);
    let conn = client
        .call(
            "net.connect",
            json!({"port": listened["local"]["port"]}),
            b"",
        )
        .unwrap();
    let accept = server
        .call("net.server_poll", json!({"server": sid}), b"")
        .unwrap();
    assert_eq!(accept["event"], "accept");
    assert_eq!(accept["server"], sid);
    let sock = accept["socket"].clone();
    client.send_call("net.write", json!({"socket": conn["socket"]}), b"abc", true);
    client.send_call("net.write", json!({"socket": conn["socket"]}), b"def", true);
    client
        .call("net.destroy", json!({"socket": conn["socket"]}), b"")
        .unwrap();
    // Events come one per poll, in order, numbered contiguously on delivery.
    let mut kinds = Vec::new();
    let mut seqs = vec![accept["seq"].as_u64().unwrap()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while kinds.last().map(String::as_str) != Some("close") {
        assert!(Instant::now() < deadline);
        let event = server
            .call("net.poll", json!({"socket": sock, "wait_ms": 50}), b"")
            .unwrap();
        if event.is_null() {
            continue;
        }
        kinds.push(event["event"].as_str().unwrap().to_owned());
        seqs.push(event["seq"].as_u64().unwrap());
        if event["event"] == "end" {
            // Half-closed, as a kernel socket whose peer closed: ending this side closes it.
            server
                .call("net.shutdown", json!({"socket": sock}), b"")
                .unwrap();
        }
    }
    assert_eq!(kinds, ["data", "data", "end", "close"]);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq not contiguous: {seqs:?}"
    );
    // Once its close was polled the id is gone.
    let err = server
        .call("net.poll", json!({"socket": sock}), b"")
        .unwrap_err();
    assert_eq!(err["code"], "EBADF");
}

#[test]
fn a_poll_that_waits_in_vain_ends_at_its_clamped_deadline_as_a_timer_wake() {
    let h = Harness::new();
    let mut g = h.guest(POLL);
    let listened = g.call("net.listen", json!({"port": 0}), b"").unwrap();
    let before = h.stats()["timer_origin_wakes"].as_u64().unwrap();
    let started = Instant::now();
    // 10 s is clamped to 50 ms.
    let result = g
        .call(
            "net.server_poll",
            json!({"server": listened["server"], "wait_ms": 10_000}),
            b"",
        )
        .unwrap();
    let waited = started.elapsed();
    assert!(result.is_null());
    assert!(
        waited >= Duration::from_millis(50),
        "ended early: {waited:?}"
    );
    assert_eq!(
        h.stats()["timer_origin_wakes"].as_u64().unwrap(),
        before + 1
    );
}

#[test]
fn a_parked_poll_is_answered_by_the_event_it_waits_for() {
    let h = Harness::new();
    let mut g = h.guest(POLL);
    let listened = g.call("net.listen", json!({"path": "/p"}), b"").unwrap();
    let mut client = h.guest(Transport::InProcess);
    // The poll parks (the operator sees it), then a connect arrives while it waits. If the
    // machine is so slow that 50 ms pass first, the poll answers null; try again.
    for attempt in 0.. {
        assert!(attempt < 20, "the parked poll never received the event");
        let call = g.send_call(
            "net.server_poll",
            json!({"server": listened["server"], "wait_ms": 50}),
            b"",
            false,
        );
        client
            .call("net.connect", json!({"path": "/p"}), b"")
            .unwrap();
        let got = g.wait_reply(call).unwrap();
        if got["event"] == "accept" {
            break;
        }
        // Take the accept that came late, so the next round starts clean.
        let late = g
            .call(
                "net.server_poll",
                json!({"server": listened["server"], "wait_ms": 50}),
                b"",
            )
            .unwrap();
        assert_eq!(late["event"], "accept");
    }
}

#[test]
fn poll_calls_in_push_mode_are_einval() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    let listened = g.call("net.listen", json!({"port": 0}), b"").unwrap();
    let err = g
        .call(
            "net.server_poll",
            json!({"server": listened["server"]}),
            b"",
        )
        .unwrap_err();
    assert_eq!(err["code"], "EINVAL");
    let mut p = h.guest(POLL);
    let err = p.call("net.poll", json!({"socket": 77}), b"").unwrap_err();
    assert_eq!(err["code"], "EBADF");
}

#[test]
fn in_poll_mode_the_backlog_is_the_accepts_not_yet_polled() {
    let h = Harness::new();
    let mut server = h.guest(POLL);
    let listened = server
        .call("net.listen", json!({"path": "/b", "backlog": 1}), b"")
        .unwrap();
    let mut client = h.guest(Transport::InProcess);
    client
        .call("net.connect", json!({"path": "/b"}), b"")
        .unwrap();
    let parked = client.send_call("net.connect", json!({"path": "/b"}), b"", false);
    assert_eq!(client.stats()["session"]["parked_calls"], 1);
    let accept = server
        .call(
            "net.server_poll",
            json!({"server": listened["server"]}),
            b"",
        )
        .unwrap();
    assert_eq!(accept["event"], "accept");
    client
        .wait_reply(parked)
        .expect("room made by polling the accept");
}
