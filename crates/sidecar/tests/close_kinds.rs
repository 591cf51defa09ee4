//! The ways a connection ends, as a kernel socket ends them:
//!
//! - a peer's plain close leaves this end half-closed: `end`, its writes still taken,
//!   `close` once it ends its side (in streams.rs and lifecycle.rs);
//! - `net.destroy {reset: true}` (Node's `resetAndDestroy()`) resets: an in-VM peer gets
//!   `error ECONNRESET` then `close`, a host peer reads a reset (RST, `SO_LINGER` 0);
//! - a server closed before its guest took a connection it accepted resets that
//!   connection (its client is not left connected to nobody), and leaves the taken ones.

mod support;

use std::io::{ErrorKind, Read};
use std::net::TcpListener;

use serde_json::json;
use support::*;

#[test]
fn a_reset_destroy_is_econnreset_at_the_in_vm_peer() {
    let h = Harness::new();
    for setup in TRANSPORTS {
        let mut c = connect_pair(&h, setup, json!({"port": 0}), json!({}));
        // Nothing unread on either side: a plain destroy would be a clean `end`.
        c.client
            .call(
                "net.destroy",
                json!({"socket": c.client_sock, "reset": true}),
                b"",
            )
            .unwrap();
        let (own_close, _, _) = c.client.event_of("close");
        assert_eq!(own_close["socket"], c.client_sock);
        let (error, _, skipped) = c.server.event_of("error");
        assert!(skipped.iter().all(|e| e["event"] != "end"), "{skipped:?}");
        assert_eq!(error["code"], "ECONNRESET", "{setup:?}");
        assert_eq!(error["socket"], c.server_sock);
        let (close, _, _) = c.server.event_of("close");
        assert_eq!(close["had_error"], true, "{setup:?}");
        assert_eq!(
            code(
                c.server
                    .call("net.write", json!({"socket": c.server_sock}), b"x")
            ),
            "EBADF"
        );
    }
}

#[test]
fn a_reset_destroy_sends_rst_to_a_host_peer_and_a_plain_one_fin() {
    let h = allowing(&["127.0.0.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for reset in [false, true] {
        let mut g = h.guest(Transport::InProcess);
        let (sock, _) = g.connect_ok("127.0.0.1", port);
        let (mut native, _) = listener.accept().unwrap();
        native.set_read_timeout(Some(DEADLINE)).unwrap();
        g.call("net.destroy", json!({"socket": sock, "reset": reset}), b"")
            .unwrap();
        let mut buf = [0u8; 16];
        match (reset, native.read(&mut buf)) {
            (false, Ok(0)) => {}
            (true, Err(e)) if e.kind() == ErrorKind::ConnectionReset => {}
            (reset, other) => panic!("reset {reset}: the native peer read {other:?}"),
        }
        let (close, _, _) = g.event_of("close");
        assert_eq!(close["socket"], sock);
    }
}

#[test]
fn closing_a_server_resets_the_connections_its_guest_has_not_taken() {
    let h = Harness::new();
    for setup in TRANSPORTS {
        let mut server = h.guest(setup);
        let listened = server.call("net.listen", json!({"port": 0}), b"").unwrap();
        let (server_id, port) = (
            listened["server"].clone(),
            listened["local"]["port"].clone(),
        );
        // One connection taken (acknowledged), one accepted but not taken.
        let mut kept = h.guest(setup);
        let kept_sock = kept
            .call("net.connect", json!({"port": port}), b"")
            .unwrap()["socket"]
            .clone();
        let (accept, _, _) = server.event_of("accept");
        let taken = accept["socket"].clone();
        server.send_call(
            "net.credit",
            json!({"socket": taken, "bytes": 0}),
            b"",
            true,
        );
        let mut dropped = h.guest(setup);
        let dropped_sock = dropped
            .call("net.connect", json!({"port": port}), b"")
            .unwrap()["socket"]
            .clone();
        // The guest closes the server before it takes the second connection (Node:
        // `server.close()` in the tick the connection arrives).
        server
            .call("net.server_close", json!({"server": server_id}), b"")
            .unwrap();
        let (error, _, _) = dropped.event_of("error");
        assert_eq!(error["socket"], dropped_sock);
        assert_eq!(error["code"], "ECONNRESET", "{setup:?}");
        let (close, _, _) = dropped.event_of("close");
        assert_eq!(close["had_error"], true);
        // The server's guest hears of the accepted id's close and the server's (pushed
        // in that order; poll mode keeps order per id only).
        let (accept, _, _) = server.event_of("accept");
        let untaken = accept["socket"].clone();
        let (first, _, _) = server.event_of("close");
        let (second, _, _) = server.event_of("close");
        let (socket_close, server_close) = match first.get("server") {
            Some(_) => (second, first),
            None => (first, second),
        };
        assert_eq!(socket_close["socket"], untaken, "{setup:?}");
        assert_eq!(server_close["server"], server_id, "{setup:?}");
        // The taken connection is untouched.
        kept.call("net.write", json!({"socket": kept_sock}), b"still here")
            .unwrap();
        assert_eq!(server.read_data(taken.as_u64().unwrap(), 10), b"still here");
        let stats = server.stats();
        assert_eq!(stats["vm"]["pending_connections"], 0, "{stats}");
    }
}
