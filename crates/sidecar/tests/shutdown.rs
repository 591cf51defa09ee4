//! Stopping a sidecar: every guest is told `close` for each id it holds (a connection is
//! reset first), what was queued for it is flushed before its transport closes, and a
//! guest that does not read cannot hold the stop up beyond the grace period (what it left
//! is counted, not lost silently).

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use serde_json::json;
use support::{connect_pair, Harness, Incoming, Transport, DEADLINE};

/// Bytes the client writes before the stop; less than the default credit window, so the
/// sidecar pushes all of it to the (not yet reading) server guest.
const QUEUED: usize = 12 * CHUNK;
const CHUNK: usize = 16 * 1024;

#[test]
fn a_stop_pushes_close_for_every_id_after_what_was_queued() {
    let h = Harness::new();
    let mut conn = connect_pair(&h, Transport::Unix, json!({"port": 80}), json!({}));
    // A UDP socket of the server guest's own, to close too (made first: from here on the
    // server guest only reads, so every event is seen below).
    let udp = support::udp_socket(&mut conn.server, "udp4");
    assert_eq!(conn.server.queued_events(), 0);
    let chunk = vec![5u8; CHUNK];
    for _ in 0..QUEUED / CHUNK {
        conn.client.send_call(
            "net.write",
            json!({"socket": conn.client_sock}),
            &chunk,
            true,
        );
    }
    // Every write has been served once a later call is answered.
    conn.client.stats();

    let Harness { sidecar, .. } = h;
    let stopper = thread::spawn(move || sidecar.shutdown());

    let mut data = 0;
    let mut closed = HashSet::new();
    let mut reset = HashSet::new();
    let deadline = Instant::now() + DEADLINE;
    while let Some(incoming) = conn.server.recv(deadline) {
        let Incoming::Event { event, payload } = incoming else {
            panic!("a reply nobody asked for");
        };
        let id = event["socket"].as_u64().or(event["server"].as_u64());
        match event["event"].as_str().unwrap() {
            "data" => {
                assert!(closed.is_empty(), "data after a close: {event}");
                data += payload.len();
            }
            "error" => {
                assert_eq!(event["code"], "ECONNRESET", "{event}");
                assert!(reset.insert(id.unwrap()), "two errors for one id: {event}");
            }
            "close" => {
                let id = id.unwrap();
                assert_eq!(event["had_error"], reset.contains(&id), "{event}");
                assert!(closed.insert(id), "two closes for one id: {event}");
            }
            other => panic!("unexpected {other} event: {event}"),
        }
    }
    assert!(Instant::now() < deadline, "the stream did not end");
    assert_eq!(data, QUEUED, "every queued byte reached the guest");
    let expected: HashSet<u64> = [conn.server_id, conn.server_sock, udp].into();
    assert_eq!(closed, expected);
    // The connection was cut (reset, then closed with an error); the server and the UDP
    // socket just closed.
    assert_eq!(reset, [conn.server_sock].into());
    stopper.join().unwrap();
}

#[test]
fn a_guest_that_does_not_read_cannot_hold_the_stop_up() {
    let h = Harness::new();
    let metrics = std::sync::Arc::clone(h.sidecar.metrics());
    // Four connections' worth of credit window: more than the kernel buffers of one
    // Unix connection hold, so most of it waits in the sidecar for a guest that never
    // reads.
    let mut conn = connect_pair(&h, Transport::Unix, json!({"port": 80}), json!({}));
    let chunk = vec![5u8; 64 * 1024];
    let mut clients = vec![conn.client_sock];
    for _ in 0..3 {
        let connected = conn
            .client
            .call("net.connect", json!({"port": 80}), b"")
            .unwrap();
        clients.push(connected["socket"].as_u64().unwrap());
    }
    for _ in 0..3 {
        let (accept, _, _) = conn.server.event_of("accept");
        let socket = accept["socket"].as_u64().unwrap();
        conn.server.send_call(
            "net.credit",
            json!({"socket": socket, "bytes": 0}),
            b"",
            true,
        );
    }
    for &socket in &clients {
        for _ in 0..4 {
            conn.client
                .send_call("net.write", json!({"socket": socket}), &chunk, true);
        }
    }
    conn.client.stats();

    let Harness { sidecar, .. } = h;
    sidecar.shutdown(); // returns: the grace period bounds the flush
    assert_eq!(
        metrics.shutdown_unflushed_sessions.load(Ordering::Relaxed),
        1,
        "the server guest's session is counted as not flushed"
    );
    drop(conn);
}
