//! Host TCP sockets: a guest's connection to a native server outside its VM, through a
//! real kernel socket on the readiness thread.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use serde_json::json;
use support::*;

fn allowing_loopback() -> Harness {
    let config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_allow("127.0.0.1".parse().unwrap());
    Harness::with_config(config)
}

/// A native echo server on the host's loopback, serving one connection.
fn native_echo() -> (u16, thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => {
                    total += n;
                    stream.write_all(&buf[..n]).unwrap();
                }
            }
        }
    });
    (port, server)
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
