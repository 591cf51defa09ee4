//! In-VM UDP, in push and poll mode: echo with boundaries kept, connected and disconnected sockets,
//! unbound ports (dropped, counted, ECONNREFUSED on a connected sender), limits.

mod support;

use serde_json::json;
use support::{code, udp_socket, Harness, Transport, TRANSPORTS};

#[test]
fn udp_echo_keeps_datagram_boundaries_and_reports_the_sender() {
    let h = Harness::new();
    for setup in TRANSPORTS {
        let mut server = h.guest(setup);
        let mut client = h.guest(setup);
        let s = server
            .call("dgram.createSocket", json!({"type": "udp4"}), b"")
            .unwrap()["socket"]
            .clone();
        let bound = server
            .call("dgram.bind", json!({"socket": s, "port": 0}), b"")
            .unwrap();
        let port = bound["local"]["port"].as_u64().unwrap();
        assert_eq!(bound["local"]["address"], "0.0.0.0");
        let c = client
            .call("dgram.createSocket", json!({"type": "udp4"}), b"")
            .unwrap()["socket"]
            .clone();
        for size in [0usize, 1, 64, 65_507] {
            let datagram: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let sent = client
                .call("dgram.send", json!({"socket": c, "port": port}), &datagram)
                .unwrap();
            assert_eq!(sent["bytes"], size);
            let (message, payload, _) = server.event_of("message");
            assert_eq!(payload, datagram, "{setup:?} size {size}");
            assert_eq!(message["remote"]["address"], "127.0.0.1");
            // Echo back to the sender's (auto-bound) address.
            let sender_port = message["remote"]["port"].clone();
            server.send_call(
                "dgram.send",
                json!({"socket": s, "port": sender_port}),
                &payload,
                true,
            );
            let (_, echoed, _) = client.event_of("message");
            assert_eq!(echoed, datagram);
        }
        // Two datagrams stay two.
        client.send_call(
            "dgram.send",
            json!({"socket": c, "port": port}),
            b"one",
            true,
        );
        client.send_call(
            "dgram.send",
            json!({"socket": c, "port": port}),
            b"two",
            true,
        );
        assert_eq!(server.event_of("message").1, b"one");
        assert_eq!(server.event_of("message").1, b"two");
        server
            .call("dgram.close", json!({"socket": s}), b"")
            .unwrap();
        let (closed, _, _) = server.event_of("close");
        assert_eq!(closed["socket"], s);
    }
}

#[test]
fn connected_udp_sockets_hear_only_their_peer_and_learn_of_a_missing_one() {
    let h = Harness::new();
    for setup in TRANSPORTS {
        let mut g = h.guest(setup);
        let a = g
            .call("dgram.createSocket", json!({"type": "udp6"}), b"")
            .unwrap()["socket"]
            .clone();
        let bound = g
            .call(
                "dgram.bind",
                json!({"socket": a, "host": "::", "port": 0}),
                b"",
            )
            .unwrap();
        let a_port = bound["local"]["port"].clone();
        let b = g
            .call("dgram.createSocket", json!({"type": "udp4"}), b"")
            .unwrap()["socket"]
            .clone();
        let connected = g
            .call("dgram.connect", json!({"socket": b, "port": a_port}), b"")
            .unwrap();
        assert_eq!(connected["remote"]["address"], "127.0.0.1");
        assert_eq!(
            code(g.call("dgram.connect", json!({"socket": b, "port": a_port}), b"")),
            "EISCONN"
        );
        // Sending with no address goes to the connected peer; the dual-stack receiver
        // sees the IPv4 sender v4-mapped.
        g.call("dgram.send", json!({"socket": b}), b"hi").unwrap();
        let (message, payload, _) = g.event_of("message");
        assert_eq!(message["socket"], a);
        assert_eq!(payload, b"hi");
        assert_eq!(message["remote"]["address"], "::ffff:127.0.0.1");
        // A third socket's datagram to b is filtered out: b only hears its peer.
        let b_port = connected["local"]["port"].clone();
        let dropped = |g: &mut support::RawGuest| {
            g.stats()["vm"]["udp_dropped_no_receiver"].as_u64().unwrap()
        };
        let before = dropped(&mut g);
        let stranger = g
            .call("dgram.createSocket", json!({"type": "udp4"}), b"")
            .unwrap()["socket"]
            .clone();
        g.call(
            "dgram.send",
            json!({"socket": stranger, "port": b_port}),
            b"x",
        )
        .unwrap();
        assert_eq!(dropped(&mut g), before + 1, "b heard a stranger");
        // The peer goes away: the next send is fine (UDP), the one after reports it.
        g.call("dgram.close", json!({"socket": a}), b"").unwrap();
        g.call("dgram.send", json!({"socket": b}), b"lost").unwrap();
        assert_eq!(
            code(g.call("dgram.send", json!({"socket": b}), b"again")),
            "ECONNREFUSED"
        );
        assert_eq!(dropped(&mut g), before + 2);
    }
}

#[test]
fn a_disconnected_udp_socket_hears_anyone_and_needs_a_destination_again() {
    for setup in TRANSPORTS {
        let h = Harness::new();
        let mut g = h.guest(setup);
        let (a, peer, stranger) = (
            udp_socket(&mut g, "udp4"),
            udp_socket(&mut g, "udp4"),
            udp_socket(&mut g, "udp4"),
        );
        assert_eq!(
            code(g.call("dgram.disconnect", json!({"socket": a}), b"")),
            "ENOTCONN"
        );
        let peer_port = g
            .call("dgram.bind", json!({"socket": peer, "port": 0}), b"")
            .unwrap()["local"]["port"]
            .clone();
        let a_port = g
            .call(
                "dgram.connect",
                json!({"socket": a, "port": peer_port}),
                b"",
            )
            .unwrap()["local"]["port"]
            .clone();
        // Connected: the stranger is not heard.
        let to_a = json!({"socket": stranger, "port": a_port});
        g.call("dgram.send", to_a.clone(), b"early").unwrap();
        assert_eq!(g.stats()["vm"]["udp_dropped_no_receiver"], 1, "{setup:?}");
        g.call("dgram.disconnect", json!({"socket": a}), b"")
            .unwrap();
        // Disconnected: the stranger is heard, from its own address; the local port stays.
        g.call("dgram.send", to_a, b"late").unwrap();
        let (message, payload, _) = g.event_of("message");
        assert_eq!(
            (message["socket"].as_u64(), &payload[..]),
            (Some(a), &b"late"[..])
        );
        // No connected peer any more: a send needs a destination, and may go elsewhere.
        assert_eq!(
            code(g.call("dgram.send", json!({"socket": a}), b"where")),
            "EDESTADDRREQ"
        );
        let stranger_port = g.call("dgram.bind", json!({"socket": stranger, "port": 0}), b"");
        assert_eq!(
            code(stranger_port),
            "EINVAL",
            "auto-bound by its first send"
        );
        assert_eq!(
            code(g.call("dgram.disconnect", json!({"socket": a}), b"")),
            "ENOTCONN"
        );
    }
}

#[test]
fn udp_errors_are_typed() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    let s = g
        .call("dgram.createSocket", json!({"type": "udp4"}), b"")
        .unwrap()["socket"]
        .clone();
    let big = vec![0u8; 65_508];
    assert_eq!(
        code(g.call("dgram.send", json!({"socket": s, "port": 9}), &big)),
        "EMSGSIZE"
    );
    // A group send is fine (nobody in the VM joined: dropped, counted); a broadcast needs
    // SO_BROADCAST first, as the kernel says (see udp_group.rs).
    let m = udp_socket(&mut g, "udp4");
    g.call(
        "dgram.send",
        json!({"socket": m, "host": "224.0.0.1", "port": 9}),
        b"",
    )
    .expect("a send to a multicast group");
    g.call("dgram.close", json!({"socket": m}), b"").unwrap();
    assert_eq!(
        code(g.call(
            "dgram.send",
            json!({"socket": s, "host": "255.255.255.255", "port": 9}),
            b""
        )),
        "EACCES"
    );
    assert_eq!(
        code(g.call(
            "dgram.send",
            json!({"socket": s, "host": "10.0.0.1", "port": 9}),
            b""
        )),
        "EACCES"
    );
    assert_eq!(
        code(g.call("dgram.send", json!({"socket": s}), b"x")),
        "EDESTADDRREQ"
    );
    assert_eq!(
        code(g.call(
            "dgram.send",
            json!({"socket": s, "host": "localhost"}),
            b"x"
        )),
        "EINVAL"
    );
    g.call("dgram.bind", json!({"socket": s, "port": 5353}), b"")
        .unwrap();
    assert_eq!(
        code(g.call("dgram.bind", json!({"socket": s, "port": 5354}), b"")),
        "EINVAL"
    );
    let t = g
        .call("dgram.createSocket", json!({"type": "udp6"}), b"")
        .unwrap()["socket"]
        .clone();
    assert_eq!(
        code(g.call(
            "dgram.bind",
            json!({"socket": t, "host": "::", "port": 5353}),
            b""
        )),
        "EADDRINUSE"
    );
    let u = g
        .call("dgram.createSocket", json!({"type": "udp4"}), b"")
        .unwrap()["socket"]
        .clone();
    assert_eq!(
        code(g.call(
            "dgram.bind",
            json!({"socket": u, "host": "::1", "port": 1}),
            b""
        )),
        "EAFNOSUPPORT"
    );
    // A datagram to a port nobody bound is dropped and counted, not an error (the group
    // send above, which no member heard, was the first).
    g.call("dgram.send", json!({"socket": u, "port": 4444}), b"void")
        .unwrap();
    assert_eq!(g.stats()["vm"]["udp_dropped_no_receiver"], 2);
    // The UDP port space is not TCP's.
    g.call("net.listen", json!({"port": 5353}), b"").unwrap();
}

#[test]
fn a_poll_mode_receiver_that_never_polls_drops_and_counts_past_its_room() {
    let mut config = sidecar::SidecarConfig::default().with_vm("a", "sa");
    config.limits.udp_receive_buffer = 1000;
    let h = Harness::with_config(config);
    let setup = support::Setup {
        transport: Transport::InProcess,
        mode: support::Mode::Poll,
    };
    let mut receiver = h.guest(setup);
    let r = receiver
        .call("dgram.createSocket", json!({"type": "udp4"}), b"")
        .unwrap()["socket"]
        .clone();
    let port = receiver
        .call("dgram.bind", json!({"socket": r, "port": 0}), b"")
        .unwrap()["local"]["port"]
        .clone();
    let mut sender = h.guest(Transport::InProcess);
    let s = sender
        .call("dgram.createSocket", json!({"type": "udp4"}), b"")
        .unwrap()["socket"]
        .clone();
    for _ in 0..5 {
        sender
            .call(
                "dgram.send",
                json!({"socket": s, "port": port}),
                &[1u8; 300],
            )
            .unwrap();
    }
    let stats = sender.stats();
    assert_eq!(
        stats["vm"]["udp_dropped_no_room"], 2,
        "1000 bytes hold three 300-byte datagrams"
    );
    for _ in 0..3 {
        assert_eq!(receiver.event_of("message").1.len(), 300);
    }
}
