//! Published UDP ports, delivered by the readiness thread's handler along a route the RPC
//! loop keeps current: the route follows binds, connects and closes of the VM's sockets
//! and reloads of the configuration; a datagram with no receiver is counted; no `message`
//! follows a socket's `close` even under a flood.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use serde_json::json;
use sidecar::policy::Proto;
use support::*;

const PORT: u16 = 5353;

/// A loopback UDP address free right now.
fn free_udp_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config_publishing(host: SocketAddr, vm: &str) -> sidecar::SidecarConfig {
    sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_publish_proto(vm, host, PORT, Proto::Udp)
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

/// A UDP socket of `g` bound on the published port.
fn bound_socket(g: &mut RawGuest) -> u64 {
    let s = udp_socket(g, "udp4");
    g.call("dgram.bind", json!({"socket": s, "port": PORT}), b"")
        .unwrap();
    s
}

fn dropped_no_receiver(stats: &serde_json::Value, vm: &str) -> u64 {
    stats["vms"][vm]["udp_dropped_no_receiver"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_route_follows_binds_and_closes_and_counts_what_nobody_receives() {
    for setup in TRANSPORTS {
        let host = free_udp_addr();
        let h = Harness::with_config(config_publishing(host, "a"));
        let client = client();
        // Nobody bound on the port yet: dropped, counted for the VM.
        client.send_to(b"early", host).unwrap();
        settle(&h, "the early datagram counted", |s| {
            dropped_no_receiver(s, "a") == 1
        });

        // A socket bound after the publication: it receives.
        let mut g = h.guest(setup);
        let s = bound_socket(&mut g);
        client.send_to(b"one", host).unwrap();
        let (message, payload, _) = g.event_of("message");
        assert_eq!(
            (message["socket"].as_u64(), &payload[..]),
            (Some(s), &b"one"[..])
        );

        // Closed: the next datagram finds nobody.
        g.call("dgram.close", json!({"socket": s}), b"").unwrap();
        g.event_of("close");
        client.send_to(b"late", host).unwrap();
        settle(&h, "the late datagram counted", |s| {
            dropped_no_receiver(s, "a") == 2
        });

        // Another guest of the VM binds the port: it receives, and can reply.
        let mut other = h.guest(setup);
        let s2 = bound_socket(&mut other);
        client.send_to(b"two", host).unwrap();
        let (message, payload, _) = other.event_of("message");
        assert_eq!(
            (message["socket"].as_u64(), &payload[..]),
            (Some(s2), &b"two"[..]),
            "{setup:?}"
        );
        let from = client.local_addr().unwrap();
        other
            .call(
                "dgram.send",
                json!({"socket": s2, "host": "127.0.0.1", "port": from.port()}),
                b"answer",
            )
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, replier) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], replier), (&b"answer"[..], host), "{setup:?}");
    }
}

#[test]
fn a_connected_socket_on_the_published_port_hears_only_its_peer_until_disconnected() {
    for setup in TRANSPORTS {
        let host = free_udp_addr();
        let h = Harness::with_config(config_publishing(host, "a"));
        let mut g = h.guest(setup);
        let s = bound_socket(&mut g);
        let (peer, stranger) = (client(), client());
        let peer_port = peer.local_addr().unwrap().port();
        g.call(
            "dgram.connect",
            json!({"socket": s, "host": "127.0.0.1", "port": peer_port}),
            b"",
        )
        .unwrap();
        stranger.send_to(b"not for you", host).unwrap();
        settle(&h, "the stranger's datagram counted", |s| {
            dropped_no_receiver(s, "a") == 1
        });
        peer.send_to(b"hello", host).unwrap();
        let (message, payload, _) = g.event_of("message");
        assert_eq!(payload, b"hello", "{setup:?}");
        assert_eq!(message["remote"]["port"], peer_port);
        // Disconnected: the route delivers the stranger's datagrams again.
        g.call("dgram.disconnect", json!({"socket": s}), b"")
            .unwrap();
        stranger.send_to(b"now you hear me", host).unwrap();
        let (message, payload, _) = g.event_of("message");
        assert_eq!(payload, b"now you hear me", "{setup:?}");
        let stranger_port = stranger.local_addr().unwrap().port();
        assert_eq!(message["remote"]["port"], stranger_port);
    }
}

#[test]
fn a_reload_that_retargets_the_port_moves_the_route_to_the_other_vm() {
    let host = free_udp_addr();
    let h = Harness::with_config(config_publishing(host, "a"));
    let setup = TRANSPORTS[0];
    let mut in_a = h.guest_in(setup, "a");
    let mut in_b = h.guest_in(setup, "b");
    let (a, b) = (bound_socket(&mut in_a), bound_socket(&mut in_b));
    let client = client();
    client.send_to(b"to a", host).unwrap();
    let (message, payload, _) = in_a.event_of("message");
    assert_eq!(
        (message["socket"].as_u64(), &payload[..]),
        (Some(a), &b"to a"[..])
    );

    h.sidecar.reload(config_publishing(host, "b")).unwrap();
    client.send_to(b"to b", host).unwrap();
    let (message, payload, _) = in_b.event_of("message");
    assert_eq!(
        (message["socket"].as_u64(), &payload[..]),
        (Some(b), &b"to b"[..])
    );
    // Replies now leave from b's side only: a's socket is no longer the publication's.
    let from = client.local_addr().unwrap();
    in_b.call(
        "dgram.send",
        json!({"socket": b, "host": "127.0.0.1", "port": from.port()}),
        b"from b",
    )
    .unwrap();
    let mut buf = [0u8; 16];
    let (n, replier) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], replier), (&b"from b"[..], host));
}

#[test]
fn no_message_follows_a_close_while_datagrams_keep_coming() {
    for setup in TRANSPORTS
        .iter()
        .filter(|s| s.mode == sidecar_protocol::Mode::Push)
    {
        let host = free_udp_addr();
        let h = Harness::with_config(config_publishing(host, "a"));
        let mut g = h.guest(*setup);
        let first = bound_socket(&mut g);
        let stop = Arc::new(AtomicBool::new(false));
        let flooder = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = socket.send_to(&sent.to_be_bytes(), host);
                    sent += 1;
                    if sent % 64 == 0 {
                        thread::yield_now();
                    }
                }
            })
        };
        // Datagrams are flowing to the first socket; close it mid-flood.
        let (message, _, _) = g.event_of("message");
        assert_eq!(message["socket"].as_u64(), Some(first));
        let close_id = g.send_call("dgram.close", json!({"socket": first}), b"", false);
        g.wait_reply(close_id).unwrap();
        // A second socket takes the port; read until it has a datagram. After the first
        // socket's `close`, no event may name it.
        let second = bound_socket(&mut g);
        let mut closed = false;
        loop {
            let (event, _) = g.event();
            let socket = event["socket"].as_u64();
            if socket == Some(first) {
                assert!(!closed, "{event} after the close ({setup:?})");
                closed = event["event"] == "close";
            } else if socket == Some(second) && event["event"] == "message" {
                break;
            }
        }
        assert!(closed, "the first socket's close came ({setup:?})");
        stop.store(true, Ordering::Relaxed);
        flooder.join().unwrap();
    }
}
