//! Host UDP sockets: a guest's datagrams to a native UDP server on the host's loopback.
//!
//! A datagram with no receiver in the VM leaves through the guest socket's own kernel
//! socket (opened on first use) when the policy allows the destination, and the answer
//! comes back as a `message` whose `remote` is the real sender, read by an inline handler
//! on the readiness thread. Checked in push and poll mode over both transports, for
//! `dgram.send` with a destination and for a connected socket (`dgram.connect`, then
//! `dgram.send` without one); datagram boundaries are kept both ways. And, since the
//! handler pushes from another thread than the RPC loop that closes the socket, nothing
//! may follow a socket's `close` even while a native sender floods it.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde_json::{json, Value};
use support::*;

const STOP: &[u8] = b"stop";

/// A native UDP echo server on 127.0.0.1; returns, once sent [`STOP`], every datagram
/// it echoed, in order.
fn native_udp_echo() -> (SocketAddr, JoinHandle<Vec<Vec<u8>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            if &buf[..n] == STOP {
                return seen;
            }
            socket.send_to(&buf[..n], from).unwrap();
            seen.push(buf[..n].to_vec());
        }
    });
    (addr, server)
}

fn stop(server: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(STOP, server).unwrap();
}

fn inet(addr: SocketAddr) -> Value {
    json!({"address": addr.ip().to_string(), "port": addr.port(), "family": "IPv4"})
}

/// The next `message` for `socket`: its payload, after checking its sender.
fn message_from(g: &mut RawGuest, socket: u64, from: SocketAddr) -> Vec<u8> {
    let (message, payload, skipped) = g.event_of("message");
    assert!(skipped.is_empty(), "before the message: {skipped:?}");
    assert_eq!(message["socket"], socket, "{message}");
    assert_eq!(message["remote"], inet(from), "{message}");
    payload
}

#[test]
fn echo_through_a_native_udp_server_in_every_transport_and_mode() {
    let h = allowing(&["127.0.0.1"]);
    for setup in TRANSPORTS {
        let (server, echo) = native_udp_echo();
        let mut g = h.guest(setup);
        let mut sent = Vec::new();

        // Unconnected: the destination with each datagram.
        let created = g.call("dgram.createSocket", json!({"type": "udp4"}), b"");
        let sock = created.unwrap()["socket"].as_u64().unwrap();
        let to_server = json!({"socket": sock, "host": "127.0.0.1", "port": server.port()});
        let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        for payload in [b"ping".to_vec(), big, Vec::new()] {
            let reply = g.call("dgram.send", to_server.clone(), &payload).unwrap();
            assert_eq!(reply["bytes"], payload.len(), "{setup:?}");
            let echoed = message_from(&mut g, sock, server);
            assert!(
                echoed == payload,
                "{setup:?}: {} bytes differ",
                payload.len()
            );
            sent.push(payload);
        }

        // Connected: no destination on `dgram.send`.
        let created = g.call("dgram.createSocket", json!({"type": "udp4"}), b"");
        let conn = created.unwrap()["socket"].as_u64().unwrap();
        let connected = g
            .call(
                "dgram.connect",
                json!({"socket": conn, "host": "127.0.0.1", "port": server.port()}),
                b"",
            )
            .unwrap();
        assert_eq!(connected["remote"], inet(server), "{setup:?}");
        let reply = g.call("dgram.send", json!({"socket": conn}), b"pong");
        assert_eq!(reply.unwrap()["bytes"], 4);
        assert_eq!(message_from(&mut g, conn, server), b"pong", "{setup:?}");
        sent.push(b"pong".to_vec());

        for socket in [sock, conn] {
            let closed = g.call("dgram.close", json!({"socket": socket}), b"");
            assert_eq!(closed, Ok(json!({})));
            let (close, _, _) = g.event_of("close");
            assert_eq!(close["socket"], socket, "{setup:?}");
        }
        stop(server);
        assert_eq!(echo.join().unwrap(), sent, "{setup:?}: what the server got");
    }
}

/// A native sender that floods whoever sends it a datagram, until dropped.
struct Flood {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl Flood {
    fn start() -> Flood {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (_, guest) = socket.recv_from(&mut buf).unwrap();
            let mut sent = 0usize;
            while !stopped.load(Ordering::Relaxed) {
                // Errors (ICMP from a closed port) do not end the flood; `stop` does.
                if socket.send_to(&sent.to_le_bytes(), guest).is_ok() {
                    sent += 1;
                }
            }
            sent
        });
        Flood {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the flood; returns how many datagrams it sent.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn nothing_follows_the_close_of_a_socket_under_a_flood() {
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_allow("127.0.0.1".parse().unwrap());
    // Poll mode: room for a few datagrams only, so the flood queued ahead of `close` is
    // quick to poll through (the rest is dropped and counted, as UDP does).
    config.limits.udp_receive_buffer = 64;
    let h = Harness::with_config(config);
    for setup in TRANSPORTS {
        // A race (the handler pushing while the RPC loop closes): tried a few times.
        for _ in 0..6 {
            let flood = Flood::start();
            let mut g = h.guest(setup);
            let created = g.call("dgram.createSocket", json!({"type": "udp4"}), b"");
            let sock = created.unwrap()["socket"].as_u64().unwrap();
            let to = json!({"socket": sock, "host": "127.0.0.1", "port": flood.addr.port()});
            g.call("dgram.send", to, b"go").unwrap();
            message_from(&mut g, sock, flood.addr);
            // Close while datagrams keep arriving.
            let closed = g.call("dgram.close", json!({"socket": sock}), b"");
            assert_eq!(closed, Ok(json!({})));
            let (close, _, skipped) = g.event_of("close");
            assert_eq!(close["socket"], sock, "{setup:?}");
            assert!(skipped.iter().all(|e| e["event"] == "message"), "{setup:?}");
            // Anything pushed after `close` is in by the time a later call is answered.
            g.stats();
            assert_eq!(g.queued_events(), 0, "{setup:?}: an event after close");
            if setup.mode == Mode::Poll {
                let poll = g.call("dgram.poll", json!({"socket": sock}), b"");
                assert_eq!(code(poll), "EBADF", "{setup:?}: a queue after close");
            }
            assert!(flood.stop() > 0);
        }
    }
}

#[test]
fn a_udp6_socket_sees_an_ipv4_sender_as_v4_mapped() {
    let (server, echo) = native_udp_echo();
    let h = allowing(&[&server.to_string()]);
    let mut g = h.guest(Transport::InProcess);
    let s = g
        .call("dgram.createSocket", json!({"type": "udp6"}), b"")
        .unwrap()["socket"]
        .clone();
    g.call(
        "dgram.send",
        json!({"socket": s, "host": "127.0.0.1", "port": server.port()}),
        b"six",
    )
    .unwrap();
    let (message, payload, _) = g.event_of("message");
    assert_eq!(payload, b"six");
    // As Linux reports an IPv4 peer to an AF_INET6 socket, and as in-VM UDP does.
    assert_eq!(
        message["remote"]["address"], "::ffff:127.0.0.1",
        "{message}"
    );
    assert_eq!(message["remote"]["port"], server.port());
    stop(server);
    assert_eq!(echo.join().unwrap(), vec![b"six".to_vec()]);
}
