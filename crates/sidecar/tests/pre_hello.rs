//! Before hello: what a connection that has not attached may cost (the hello gate), and
//! the limits a hello meets (sessions per VM, the credit window). Each test does one
//! attack, scaled down, checks the bound held, and that another VM still attaches and
//! exchanges data.

mod support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};
use sidecar::{LimitOverrides, Limits, SidecarConfig};
use support::bystander::{echoes, first_error_code, frames_until_eof};
use support::*;

fn config(limits: Limits) -> SidecarConfig {
    let mut config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb");
    config.limits = limits;
    config
}

fn unix_guest(h: &Harness) -> RawGuest {
    RawGuest::new(Wire::Unix(UnixStream::connect(&h.socket).unwrap()))
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {stats}"))
}

/// 200 connections that never say hello, with the cap at 50 and a 300 ms deadline: each
/// is closed at the deadline (`ETIMEDOUT`) or, when a newer one needed its place, evicted
/// (`EAGAIN`); none stays open. Then VM b attaches and echoes.
#[test]
fn silent_connections_are_refused_beyond_the_cap_and_closed_at_the_deadline() {
    let h = Harness::with_config(config(Limits {
        unattached_connections: 50,
        hello_timeout: Duration::from_millis(300),
        ..Limits::default()
    }));
    let mut silent: Vec<RawGuest> = (0..200).map(|_| unix_guest(&h)).collect();
    let mut codes = std::collections::HashMap::<String, usize>::new();
    for guest in &mut silent {
        let frames = frames_until_eof(guest);
        let code = first_error_code(&frames).expect("an error frame before the close");
        *codes.entry(code).or_default() += 1;
    }
    let refused = codes.get("EAGAIN").copied().unwrap_or(0);
    let timed_out = codes.get("ETIMEDOUT").copied().unwrap_or(0);
    // Which ones found a place depends on how fast the loop accepted them; each got one
    // of the two answers, and was closed.
    assert_eq!(refused + timed_out, 200, "{codes:?}");
    let stats = settle(&h, "the gate counts", |s| {
        s["unattached_connections"] == 0 && s["hello_timeouts"].as_u64() >= Some(timed_out as u64)
    });
    assert_eq!(stat(&stats, "unattached_refused"), refused as u64);
    assert_eq!(stat(&stats, "unattached_connections_limit"), 50);
    echoes(&h, Transport::Unix, "b", 20);
    echoes(&h, Transport::InProcess, "b", 20);
}

/// While the cap is full of silent connections, a client that says hello still gets in:
/// it takes the place of the one that has waited longest, which is closed `EAGAIN`.
#[test]
fn a_full_cap_evicts_its_oldest_silent_connection_for_a_newcomer() {
    let h = Harness::with_config(config(Limits {
        unattached_connections: 5,
        hello_timeout: Duration::from_secs(600),
        ..Limits::default()
    }));
    let mut waiting: Vec<RawGuest> = Vec::new();
    for n in 1..=5 {
        waiting.push(unix_guest(&h));
        // One at a time, so which one is the oldest is known.
        settle(&h, "waiting", |s| s["unattached_connections"] == n);
    }
    // Each of VM b's sessions evicts one silent connection, oldest first.
    echoes(&h, Transport::Unix, "b", 5);
    let frames = frames_until_eof(&mut waiting[0]);
    assert_eq!(first_error_code(&frames).as_deref(), Some("EAGAIN"));
    let stats = settle(&h, "evictions counted", |s| {
        s["unattached_refused"].as_u64() >= Some(1)
    });
    assert!(stat(&stats, "unattached_connections") <= 5, "{stats}");
    drop(waiting);
    settle(&h, "the places are free", |s| {
        s["unattached_connections"] == 0
    });
}

/// Connections that announce a 16 MiB frame before hello (and send part of it) are
/// refused from the prefix (`EMSGSIZE`) and closed; nothing of the claim is kept.
#[test]
fn a_big_frame_before_hello_is_refused_from_its_prefix() {
    let h = Harness::with_config(config(Limits::default()));
    let mut guests = Vec::new();
    for _ in 0..20 {
        let mut stream = UnixStream::connect(&h.socket).unwrap();
        let mut bytes = (16u32 << 20).to_be_bytes().to_vec();
        bytes.extend(2u32.to_be_bytes());
        bytes.extend(vec![b'x'; 64 * 1024]);
        // The sidecar may close before it all went out: that is the point.
        let _ = stream.write_all(&bytes);
        guests.push(RawGuest::new(Wire::Unix(stream)));
    }
    for guest in &mut guests {
        let frames = frames_until_eof(guest);
        assert_eq!(first_error_code(&frames).as_deref(), Some("EMSGSIZE"));
    }
    let stats = settle(&h, "closed", |s| s["unattached_connections"] == 0);
    assert!(stat(&stats, "framing_errors") >= 20, "{stats}");
    // The in-process transport has the same limit.
    let mut piped = RawGuest::new(h.wire(Transport::InProcess));
    piped.send_raw(encode(&json!({"type": "call", "id": 1}), &vec![0; 20_000]));
    let frames = frames_until_eof(&mut piped);
    assert_eq!(first_error_code(&frames).as_deref(), Some("EMSGSIZE"));
    echoes(&h, Transport::Unix, "b", 5);
}

/// A hello and a large frame in one write: the large frame is measured against the
/// limit after attach (it is decoded, and answered as a call), not the hello's.
#[test]
fn a_large_frame_right_after_hello_meets_the_attached_limit() {
    let h = Harness::with_config(config(Limits::default()));
    for transport in [Transport::Unix, Transport::InProcess] {
        let mut g = RawGuest::new(h.wire(transport));
        let hello = json!({"type": "call", "id": 1, "method": "hello",
            "params": {"version": 1, "vm": "a", "secret": "sa", "capabilities": ALL_CAPS}});
        let stats = json!({"type": "call", "id": 2, "method": "stats", "params": {}});
        let mut both = encode(&hello, b"");
        both.extend(encode(&stats, &vec![7; 100_000]));
        g.send_raw(both);
        g.wait_reply(1).expect("hello");
        let error = g.wait_reply(2).expect_err("stats takes no payload");
        assert_eq!(error["code"], "EINVAL", "{error}");
        assert!(g.call("stats", json!({}), b"").is_ok());
    }
}

/// Secret guessing: a wrong secret is answered only after the delay (a timer: meanwhile
/// the loop serves everyone), counted, and its connection closed, so each connection
/// guesses once.
#[test]
fn a_refused_hello_waits_without_blocking_the_loop_then_closes() {
    let h = Harness::with_config(config(Limits {
        refused_hello_delay: Duration::from_secs(600),
        ..Limits::default()
    }));
    let mut guesser = unix_guest(&h);
    let params = json!({"version": 1, "vm": "a", "secret": "guess", "capabilities": ALL_CAPS});
    guesser.send_call("hello", params, b"", false);
    // The refusal is pending (its place among the unattached is still held)…
    settle(&h, "the guess is refused", |s| {
        s["refused_hellos"] == 1 && s["unattached_connections"] == 1
    });
    // …and the loop serves others meanwhile.
    echoes(&h, Transport::Unix, "b", 20);

    let h = Harness::with_config(config(Limits {
        refused_hello_delay: Duration::from_millis(50),
        ..Limits::default()
    }));
    for _ in 0..5 {
        let mut guesser = unix_guest(&h);
        let params = json!({"version": 1, "vm": "a", "secret": "guess"});
        let first = guesser.send_call("hello", params.clone(), b"", false);
        // A second guess on the same connection is never answered: the first closes it.
        guesser.send_call("hello", params, b"", false);
        let frames = frames_until_eof(&mut guesser);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(matches!(&frames[0], Incoming::Reply { id, .. } if *id == first));
        assert_eq!(first_error_code(&frames).as_deref(), Some("EACCES"));
    }
    let stats = settle(&h, "counted", |s| s["unattached_connections"] == 0);
    assert_eq!(stat(&stats, "refused_hellos"), 5);
    echoes(&h, Transport::Unix, "b", 5);
}

/// VM a at its `sessions_per_vm`: one more hello fails `EMFILE` naming the limit; VM b
/// still attaches; a's ended session frees a place.
#[test]
fn a_vm_at_its_session_limit_refuses_one_more_and_others_attach() {
    let own = LimitOverrides {
        sessions_per_vm: Some(5),
        ..LimitOverrides::default()
    };
    let config = config(Limits {
        refused_hello_delay: Duration::ZERO,
        ..Limits::default()
    })
    .with_vm_limits("a", own);
    let h = Harness::with_config(config);
    let mut held: Vec<RawGuest> = (0..5).map(|_| h.guest_in(Transport::Unix, "a")).collect();
    let params = json!({"version": 1, "vm": "a", "secret": "sa", "capabilities": ALL_CAPS});
    let (_, outcome) = hello_with(&h, Transport::InProcess, params.clone());
    let error = outcome.expect_err("a sixth session of a");
    assert_eq!(error["code"], "EMFILE", "{error}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("sessions_per_vm"));
    let stats = held[0].stats();
    assert_eq!(stats["vm"]["sessions"], 5);
    assert_eq!(stats["vm"]["sessions_per_vm"], 5);
    echoes(&h, Transport::Unix, "b", 10);
    drop(held.pop());
    settle(&h, "a's session ended", |s| s["vms"]["a"]["sessions"] == 4);
    let (_, outcome) = hello_with(&h, Transport::Unix, params);
    assert!(outcome.is_ok(), "{outcome:?}");
}

/// Reads `g`'s frames until the reply to `id`: the data bytes of `socket` before it.
fn data_before_reply(g: &mut RawGuest, socket: u64, id: u64) -> usize {
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut bytes = 0;
    loop {
        match g.recv(deadline).expect("the reply before the deadline") {
            Incoming::Reply { id: got, .. } if got == id => return bytes,
            Incoming::Event { event, payload } if event["event"] == "data" => {
                assert_eq!(event["socket"], socket);
                bytes += payload.len();
            }
            _ => {}
        }
    }
}

/// A guest that asks for a credit window of 2^63 in hello (or grants 2^63 later) gets
/// at most `max_credit` bytes pushed that it has not granted back, whatever its peer
/// writes.
#[test]
fn a_huge_credit_window_is_clamped() {
    let max_credit = 64 * 1024;
    let h = Harness::with_config(config(Limits {
        max_credit,
        ..Limits::default()
    }));
    let mut server = attach_with(&h, Transport::Unix, "a", json!({"credit": 1u64 << 63}));
    let mut client = h.guest(Transport::Unix);
    let listened = server
        .call("net.listen", json!({"host": "127.0.0.1", "port": 0}), b"")
        .unwrap();
    let port = listened["local"]["port"].clone();
    let connected = client
        .call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": port}),
            b"",
        )
        .unwrap();
    let client_sock = connected["socket"].as_u64().unwrap();
    let (accept, _, _) = server.event_of("accept");
    let sock = accept["socket"].as_u64().unwrap();
    server.send_call("net.credit", json!({"socket": sock, "bytes": 0}), b"", true);
    // The peer writes 4 windows' worth; every write is in the sidecar once replied.
    for _ in 0..4 {
        let chunk = vec![1u8; max_credit as usize];
        let _ = client.call("net.write", json!({"socket": client_sock}), &chunk);
    }
    let id = server.send_call("stats", json!({}), b"", false);
    assert_eq!(
        data_before_reply(&mut server, sock, id),
        max_credit as usize
    );
    // A grant of 2^63 opens the window by max_credit only.
    server.send_call(
        "net.credit",
        json!({"socket": sock, "bytes": 1u64 << 63}),
        b"",
        true,
    );
    let id = server.send_call("stats", json!({}), b"", false);
    assert_eq!(
        data_before_reply(&mut server, sock, id),
        max_credit as usize
    );
    echoes(&h, Transport::Unix, "b", 5);
}

/// Streams the operator handed over (in process, or fds such as those `sidecar run` gives
/// its child) wait for their hello as long as their program takes to start: they take no
/// place among the unattached, so a flood of silent connections cannot evict them, and
/// the deadline that closes those does not close them.
#[test]
fn handed_streams_wait_for_their_hello_without_a_deadline_or_eviction() {
    // Evictions: the cap is 2 and three silent connections arrive one by one.
    let h = Harness::with_config(config(Limits {
        unattached_connections: 2,
        hello_timeout: Duration::from_secs(600),
        ..Limits::default()
    }));
    let mut handed = handed_streams(&h);
    let mut silent = Vec::new();
    for n in 1..=3 {
        silent.push(unix_guest(&h));
        settle(&h, "waiting", |s| s["unattached_connections"] == n.min(2));
    }
    let frames = frames_until_eof(&mut silent[0]);
    assert_eq!(first_error_code(&frames).as_deref(), Some("EAGAIN"));
    say_hello(&mut handed);
    let stats = h.stats();
    assert_eq!(stat(&stats, "unattached_refused"), 1, "{stats}");

    // The deadline: a silent connection is closed at it, the handed streams are not.
    let h = Harness::with_config(config(Limits {
        hello_timeout: Duration::from_millis(100),
        ..Limits::default()
    }));
    let mut handed = handed_streams(&h);
    let frames = frames_until_eof(&mut unix_guest(&h));
    assert_eq!(first_error_code(&frames).as_deref(), Some("ETIMEDOUT"));
    say_hello(&mut handed);
    assert_eq!(stat(&h.stats(), "hello_timeouts"), 1);
}

/// One in-process stream and one socketpair served as fds, neither attached yet.
fn handed_streams(h: &Harness) -> Vec<RawGuest> {
    let (ours, theirs) = UnixStream::pair().unwrap();
    h.sidecar.serve_fds(ours.into(), None).unwrap();
    vec![
        RawGuest::new(h.wire(Transport::InProcess)),
        RawGuest::new(Wire::Unix(theirs)),
    ]
}

/// Each stream says hello as VM b and makes a call; panics if either is refused.
fn say_hello(streams: &mut [RawGuest]) {
    for (n, guest) in streams.iter_mut().enumerate() {
        let params = json!({"version": 1, "vm": "b", "secret": "sb", "capabilities": ALL_CAPS});
        let outcome = guest.call("hello", params, b"");
        assert!(outcome.is_ok(), "handed stream {n}: {outcome:?}");
        assert!(guest.call("stats", json!({}), b"").is_ok());
    }
}
