//! Host TCP sockets: a guest's connection to a native server outside its VM, through a
//! real kernel socket on the readiness thread.
//!
//! What the guest must see is what a kernel socket reports, in the protocol's shape:
//! bytes both ways (echo), a peer's reset as `error ECONNRESET` then `close` with
//! `had_error`, socket options accepted on a live host socket (they are set on the kernel
//! socket) and `EBADF` once it is gone, and `net.destroy` closing the kernel socket (the
//! native peer sees the end) with nothing about the id after its `close`. Each test runs
//! in every transport and mode, since host sockets push from the readiness thread rather
//! than the RPC loop.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use serde_json::json;
use support::*;

fn allowing_loopback() -> Harness {
    allowing(&["127.0.0.1"])
}

#[test]
fn echo_through_a_native_server_in_every_transport_and_mode() {
    let h = allowing_loopback();
    for setup in TRANSPORTS {
        let (port, server) = native_echo();
        let mut g = h.guest(setup);
        let connected = g
            .call(
                "net.connect",
                json!({"host": "127.0.0.1", "port": port}),
                b"",
            )
            .expect("connect to the host's loopback, allowed by policy");
        let sock = connected["socket"].as_u64().unwrap();
        assert_eq!(connected["remote"]["port"], port, "{setup:?}");
        let (connect, _, _) = g.event_of("connect");
        assert_eq!(connect["socket"], sock);
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let written = g
            .call("net.write", json!({"socket": sock}), &message)
            .unwrap();
        assert!(written["buffered"].as_u64().unwrap() <= message.len() as u64);
        let echoed = g.read_data(sock, message.len());
        assert!(echoed == message, "{setup:?}: echo differs");
        g.call("net.shutdown", json!({"socket": sock}), b"")
            .unwrap();
        let (end, _, _) = g.event_of("end");
        assert_eq!(end["socket"], sock);
        let (close, _, _) = g.event_of("close");
        assert_eq!(
            (close["socket"].as_u64(), close["had_error"].as_bool()),
            (Some(sock), Some(false))
        );
        assert_eq!(server.join().unwrap(), message.len(), "{setup:?}");
    }
}

#[test]
fn a_peer_reset_is_econnreset_then_close_with_error() {
    let h = allowing_loopback();
    for setup in TRANSPORTS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The native side resets only after the guest's first byte arrives, so the reset
        // can only hit an established connection (never the connect itself).
        let native = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).unwrap();
            stream.write_all(b"bye").unwrap();
            let linger = socket2::SockRef::from(&stream);
            linger.set_linger(Some(Duration::ZERO)).unwrap();
            drop(stream); // SO_LINGER 0: close sends RST, not FIN.
        });
        let mut g = h.guest(setup);
        let (sock, _) = g.connect_ok("127.0.0.1", port);
        g.call("net.write", json!({"socket": sock}), b"x").unwrap();
        native.join().unwrap();
        // The kernel hands out the bytes queued ahead of the RST first: data, then error.
        let mut bytes = Vec::new();
        let error = loop {
            let (event, payload) = g.event();
            assert_eq!(event["socket"], sock, "{setup:?}: {event}");
            match event["event"].as_str() {
                Some("data") => bytes.extend(payload),
                Some("error") => break event,
                _ => panic!("{setup:?}: expected data or error, got {event}"),
            }
        };
        assert_eq!(bytes, b"bye", "{setup:?}");
        assert_eq!(error["code"], "ECONNRESET", "{setup:?}: {error}");
        let (close, _) = g.event();
        assert_eq!(close["event"], "close", "{setup:?}: {close}");
        assert_eq!(close["socket"], sock);
        assert_eq!(close["had_error"], true, "{setup:?}");
        // The id is released with its close.
        let write = g.call("net.write", json!({"socket": sock}), b"late");
        assert_eq!(code(write), "EBADF", "{setup:?}");
    }
}

#[test]
fn options_apply_to_a_host_socket_and_destroy_closes_it() {
    let h = allowing_loopback();
    for setup in TRANSPORTS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Reads to the end; reports what arrived and how the stream ended.
        let native = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return (got, None),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return (got, Some(e.kind())),
                }
            }
        });
        let mut g = h.guest(setup);
        let (sock, _) = g.connect_ok("127.0.0.1", port);
        for (method, params) in [
            ("net.socket_set_no_delay", json!({"socket": sock})),
            (
                "net.socket_set_no_delay",
                json!({"socket": sock, "enable": false}),
            ),
            (
                "net.socket_set_keep_alive",
                json!({"socket": sock, "enable": true, "initial_delay_ms": 1000}),
            ),
            ("net.socket_set_keep_alive", json!({"socket": sock})),
        ] {
            let set = g.call(method, params.clone(), b"");
            assert_eq!(set, Ok(json!({})), "{setup:?}: {method} {params}");
        }
        g.call("net.write", json!({"socket": sock}), b"abc")
            .unwrap();
        assert_eq!(
            g.call("net.destroy", json!({"socket": sock}), b""),
            Ok(json!({}))
        );
        // The reply, then `close` (no error), and nothing about the id after it.
        let (close, _) = g.event();
        assert_eq!(close["event"], "close", "{setup:?}: {close}");
        assert_eq!(
            (close["socket"].as_u64(), close["had_error"].as_bool()),
            (Some(sock), Some(false))
        );
        let (got, ended) = native.join().unwrap();
        assert_eq!(got, b"abc", "{setup:?}");
        assert!(
            matches!(ended, None | Some(ErrorKind::ConnectionReset)),
            "{setup:?}: the native peer saw {ended:?}, not EOF or a reset"
        );
        for method in [
            "net.socket_set_no_delay",
            "net.socket_set_keep_alive",
            "net.write",
            "net.shutdown",
        ] {
            let late = g.call(method, json!({"socket": sock}), b"");
            assert_eq!(code(late), "EBADF", "{setup:?}: {method} after destroy");
        }
        // Nothing about the id after its close: not pushed, and not left to poll.
        g.stats();
        assert_eq!(g.queued_events(), 0, "{setup:?}: an event after close");
        if setup.mode == Mode::Poll {
            let poll = g.call("net.poll", json!({"socket": sock}), b"");
            assert_eq!(code(poll), "EBADF", "{setup:?}");
        }
    }
}
