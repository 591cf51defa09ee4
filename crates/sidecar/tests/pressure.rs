//! The `pressure` capability: a guest that writes with `noreply` learns that the socket's
//! buffer passed its high-water mark from a `pressure` event, once per crossing and
//! always before the `drain` that ends it, in-VM and on a host connection, in push and
//! poll mode. A guest that did not ask for it never gets one.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use serde_json::{json, Value};
use support::*;

const CHUNK: usize = 64 * 1024;

/// A guest of VM `a` in `setup`'s mode with every capability, `pressure` too if asked.
fn guest(h: &Harness, setup: Setup, pressure: bool) -> RawGuest {
    let mut caps: Vec<&str> = ALL_CAPS.to_vec();
    if pressure {
        caps.push("pressure");
    }
    let g = RawGuest::attach_caps(h.wire(setup), "a", "sa", setup.mode, &caps);
    let caps = &g.hello["capabilities"];
    assert_eq!(
        caps.as_array().unwrap().iter().any(|c| c == "pressure"),
        pressure,
        "{caps}"
    );
    g
}

/// Events of `socket` up to and including the next `drain`; other sockets' are dropped.
fn events_until_drain(g: &mut RawGuest, socket: u64) -> Vec<Value> {
    let (drain, _, mut seen) = g.event_of("drain");
    seen.push(drain);
    seen.retain(|e| e["socket"] == socket);
    seen
}

/// Eight 64 KiB `noreply` writes to an in-VM peer that grants nothing: past its window
/// (256 KiB) the rest is buffered, far past the high-water mark (64 KiB).
fn flood_in_vm(h: &Harness, setup: Setup, pressure: bool) -> Vec<Value> {
    let mut server = h.guest(setup);
    let listened = server.call("net.listen", json!({"port": 0}), b"").unwrap();
    let port = listened["local"]["port"].as_u64().unwrap();
    let mut client = guest(h, setup, pressure);
    let sock = client
        .call("net.connect", json!({"port": port}), b"")
        .unwrap()["socket"]
        .as_u64()
        .unwrap();
    let (accept, _, _) = server.event_of("accept");
    let server_sock = accept["socket"].as_u64().unwrap();
    client.event_of("connect");
    for _ in 0..8 {
        client.send_call("net.write", json!({"socket": sock}), &[5u8; CHUNK], true);
    }
    // A session's calls are served in order: once this is answered, all eight writes
    // were taken (and the last four buffered) before the reader grants anything. (The
    // loop may serve the reader between two of the writes otherwise: a session's turn
    // ends after 256 KiB, and a reader that grants in time leaves nothing to drain.)
    client.call("stats", json!({}), b"").unwrap();
    // The reader takes everything (granting credit as it goes): the buffer drains.
    assert_eq!(server.read_data(server_sock, 8 * CHUNK).len(), 8 * CHUNK);
    events_until_drain(&mut client, sock)
}

#[test]
fn one_pressure_event_per_crossing_before_its_drain_in_vm() {
    let h = Harness::new();
    for setup in TRANSPORTS {
        let seen = flood_in_vm(&h, setup, true);
        let pressure: Vec<&Value> = seen.iter().filter(|e| e["event"] == "pressure").collect();
        assert_eq!(pressure.len(), 1, "{setup:?}: {seen:?}");
        let buffered = pressure[0]["buffered"].as_u64().unwrap();
        let high_water = sidecar::Limits::default().write_high_water as u64;
        assert!(buffered >= high_water, "{setup:?}: {buffered}");
    }
}

#[test]
fn a_guest_that_did_not_ask_gets_no_pressure_event() {
    let h = Harness::new();
    for setup in TRANSPORTS {
        let seen = flood_in_vm(&h, setup, false);
        assert!(
            seen.iter().all(|e| e["event"] != "pressure"),
            "{setup:?}: {seen:?}"
        );
    }
}

#[test]
fn a_host_connection_pushes_pressure_before_its_drain() {
    let h = allowing(&["127.0.0.1"]);
    for setup in TRANSPORTS {
        // A native peer that reads nothing until told to.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (go, start) = mpsc::channel::<()>();
        let reader = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            start.recv().unwrap();
            let mut all = Vec::new();
            stream.read_to_end(&mut all).unwrap();
            all.len()
        });
        let mut g = guest(&h, setup, true);
        let sock = g
            .call(
                "net.connect",
                json!({"host": "127.0.0.1", "port": port}),
                b"",
            )
            .unwrap()["socket"]
            .as_u64()
            .unwrap();
        g.event_of("connect");
        // Write until the kernel's buffers are full and the sidecar's passes the mark.
        let mut written = 0;
        loop {
            let reply = g
                .call("net.write", json!({"socket": sock}), &[6u8; 4 * CHUNK])
                .unwrap();
            written += 4 * CHUNK;
            if reply["need_drain"] == true {
                break;
            }
            assert!(written < 256 << 20, "{setup:?}: never past the mark");
        }
        go.send(()).unwrap();
        let seen = events_until_drain(&mut g, sock);
        let kinds: Vec<&str> = seen.iter().filter_map(|e| e["event"].as_str()).collect();
        assert_eq!(kinds, ["pressure", "drain"], "{setup:?}: {seen:?}");
        g.call("net.shutdown", json!({"socket": sock}), b"")
            .unwrap();
        assert_eq!(reader.join().unwrap(), written, "{setup:?}");
    }
}
