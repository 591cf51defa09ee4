//! UDP multicast and broadcast inside a VM: a VM socket's datagram to a group reaches the
//! VM's sockets that joined it (never another VM's), a broadcast the VM's sockets bound
//! on the port; the options (membership, broadcast, TTLs, loopback, interface, address
//! reuse) are checked as the kernel checks them.

mod support;

use serde_json::{json, Value};
use support::*;

const GROUP: &str = "239.1.2.3";

/// A udp4 socket bound to `0.0.0.0:port` with `reuse_addr`, that joined `groups`.
fn member(g: &mut RawGuest, port: u16, groups: &[&str]) -> u64 {
    let sock = udp_socket(g, "udp4");
    g.call(
        "dgram.bind",
        json!({"socket": sock, "host": "0.0.0.0", "port": port, "reuse_addr": true}),
        b"",
    )
    .expect("bind with reuse_addr");
    for group in groups {
        g.call(
            "dgram.add_membership",
            json!({"socket": sock, "group": group}),
            b"",
        )
        .expect("add_membership");
    }
    sock
}

/// Every `message` the guest has been sent, once the sidecar served all it was sent.
fn messages(g: &mut RawGuest) -> Vec<(Value, Vec<u8>)> {
    g.stats();
    let mut got = Vec::new();
    while g.queued_events() > 0 {
        let (event, payload) = g.event();
        if event["event"] == "message" {
            got.push((event, payload));
        }
    }
    got
}

fn dropped_no_receiver(g: &mut RawGuest) -> u64 {
    g.stats()["vm"]["udp_dropped_no_receiver"].as_u64().unwrap()
}

#[test]
fn a_group_datagram_reaches_the_vms_members_only() {
    let h = Harness::new();
    for setup in TRANSPORTS {
        let port = 41234;
        let mut a = h.guest(setup);
        let r1 = member(&mut a, port, &[GROUP]);
        let r2 = member(&mut a, port, &[GROUP, "239.9.9.9"]);
        let other_group = member(&mut a, port, &["239.9.9.9"]);
        let other_port = member(&mut a, port + 1, &[GROUP]);
        // VM b joined the same group on the same port: it hears nothing of VM a's.
        let mut b = h.guest_in(setup, "b");
        let b_member = member(&mut b, port, &[GROUP]);
        let mut sender = h.guest(setup);
        let s = udp_socket(&mut sender, "udp4");
        let sent = sender
            .call(
                "dgram.send",
                json!({"socket": s, "host": GROUP, "port": port}),
                b"to the group",
            )
            .expect("a send to a group");
        assert_eq!(sent["bytes"], 12);
        let mut got: Vec<(u64, Vec<u8>, Value)> = Vec::new();
        for _ in 0..2 {
            let (event, payload, _) = a.event_of("message");
            got.push((
                event["socket"].as_u64().unwrap(),
                payload,
                event["remote"].clone(),
            ));
        }
        let mut sockets: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
        sockets.sort();
        assert_eq!(sockets, [r1, r2], "{setup:?}");
        for (_, payload, remote) in &got {
            assert_eq!(payload, b"to the group");
            assert_eq!(remote["address"], "127.0.0.1", "{remote}");
        }
        let extra = messages(&mut a);
        assert!(
            extra.is_empty(),
            "{setup:?}: {extra:?} ({other_group}, {other_port})"
        );
        assert!(
            messages(&mut b).is_empty(),
            "another VM heard a group datagram"
        );
        // A group with no member in the VM: dropped and counted.
        let before = dropped_no_receiver(&mut sender);
        sender
            .call(
                "dgram.send",
                json!({"socket": s, "host": "239.7.7.7", "port": port}),
                b"nobody",
            )
            .unwrap();
        assert_eq!(dropped_no_receiver(&mut sender), before + 1);
        let _ = b_member;
    }
}

#[test]
fn membership_and_options_are_checked_as_the_kernel_checks_them() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    let sock = udp_socket(&mut g, "udp4");
    let call = |g: &mut RawGuest, method: &str, params: Value| {
        let mut params = params;
        params["socket"] = sock.into();
        g.call(method, params, b"")
    };
    // Joining binds an unbound socket (as libuv does), and twice is EADDRINUSE.
    call(&mut g, "dgram.add_membership", json!({"group": GROUP})).unwrap();
    assert_eq!(
        code(call(
            &mut g,
            "dgram.add_membership",
            json!({"group": GROUP})
        )),
        "EADDRINUSE"
    );
    for bad in ["10.0.0.1", "ff02::1", "not an address"] {
        let tried = call(&mut g, "dgram.add_membership", json!({"group": bad}));
        assert_eq!(code(tried), "EINVAL", "{bad}");
    }
    let elsewhere = json!({"group": "239.1.1.1", "interface": "10.0.0.1"});
    assert_eq!(
        code(call(&mut g, "dgram.add_membership", elsewhere)),
        "EADDRNOTAVAIL"
    );
    let on_loopback = json!({"group": "239.1.1.1", "interface": "127.0.0.1"});
    call(&mut g, "dgram.add_membership", on_loopback.clone()).unwrap();
    call(&mut g, "dgram.drop_membership", on_loopback.clone()).unwrap();
    assert_eq!(
        code(call(&mut g, "dgram.drop_membership", on_loopback)),
        "EADDRNOTAVAIL"
    );
    // At most 20 groups per socket (Linux's default), then ENOBUFS.
    for i in 0..19 {
        let group = json!({"group": format!("239.2.0.{i}")});
        call(&mut g, "dgram.add_membership", group).unwrap();
    }
    let one_more = json!({"group": "239.3.0.1"});
    assert_eq!(
        code(call(&mut g, "dgram.add_membership", one_more)),
        "ENOBUFS"
    );
    // TTLs: 1..=255 unicast, 0..=255 multicast.
    assert_eq!(
        code(call(&mut g, "dgram.set_ttl", json!({"ttl": 0}))),
        "EINVAL"
    );
    assert_eq!(
        code(call(&mut g, "dgram.set_ttl", json!({"ttl": 256}))),
        "EINVAL"
    );
    call(&mut g, "dgram.set_ttl", json!({"ttl": 64})).unwrap();
    call(&mut g, "dgram.set_multicast_ttl", json!({"ttl": 0})).unwrap();
    let too_many = json!({"ttl": 256});
    assert_eq!(
        code(call(&mut g, "dgram.set_multicast_ttl", too_many)),
        "EINVAL"
    );
    let iface = |text: &str| json!({"interface": text});
    call(&mut g, "dgram.set_multicast_interface", iface("0.0.0.0")).unwrap();
    let outside = call(&mut g, "dgram.set_multicast_interface", iface("10.1.1.1"));
    assert_eq!(code(outside), "EADDRNOTAVAIL");
    let v6 = call(&mut g, "dgram.set_multicast_interface", iface("::1"));
    assert_eq!(code(v6), "EINVAL");
    // Address reuse: only between sockets that all ask for it.
    let port = 41300;
    let plain = udp_socket(&mut g, "udp4");
    g.call("dgram.bind", json!({"socket": plain, "port": port}), b"")
        .unwrap();
    let second = udp_socket(&mut g, "udp4");
    let tried = g.call(
        "dgram.bind",
        json!({"socket": second, "port": port, "reuse_addr": true}),
        b"",
    );
    assert_eq!(code(tried), "EADDRINUSE");
    let (x, y) = (member(&mut g, port + 1, &[]), member(&mut g, port + 1, &[]));
    assert_ne!(x, y);
    // A bad id is EBADF, as for any UDP call.
    let tried = g.call("dgram.set_broadcast", json!({"socket": 9999}), b"");
    assert_eq!(code(tried), "EBADF");
}

#[test]
fn multicast_loopback_off_reaches_no_socket_of_the_vm() {
    let h = Harness::new();
    let port = 41400;
    let mut g = h.guest(Transport::InProcess);
    let receiver = member(&mut g, port, &[GROUP]);
    let sender = member(&mut g, port, &[GROUP]);
    g.call(
        "dgram.set_multicast_loopback",
        json!({"socket": sender, "enable": false}),
        b"",
    )
    .unwrap();
    let before = dropped_no_receiver(&mut g);
    g.call(
        "dgram.send",
        json!({"socket": sender, "host": GROUP, "port": port}),
        b"quiet",
    )
    .unwrap();
    assert!(messages(&mut g).is_empty());
    assert_eq!(dropped_no_receiver(&mut g), before + 1);
    // Loopback on (the default): both members hear it, the sender itself included.
    g.call(
        "dgram.set_multicast_loopback",
        json!({"socket": sender, "enable": true}),
        b"",
    )
    .unwrap();
    g.call(
        "dgram.send",
        json!({"socket": sender, "host": GROUP, "port": port}),
        b"loud",
    )
    .unwrap();
    let mut heard: Vec<u64> = messages(&mut g)
        .iter()
        .map(|(e, _)| e["socket"].as_u64().unwrap())
        .collect();
    heard.sort();
    assert_eq!(heard, [receiver, sender]);
}

#[test]
fn broadcast_needs_set_broadcast_and_stays_in_the_vm() {
    let h = Harness::new();
    let port = 41500;
    let mut a = h.guest(Transport::InProcess);
    let listeners = [member(&mut a, port, &[]), member(&mut a, port, &[])];
    let mut b = h.guest_in(Transport::InProcess, "b");
    member(&mut b, port, &[]);
    let s = udp_socket(&mut a, "udp4");
    let to_all = json!({"socket": s, "host": "255.255.255.255", "port": port});
    assert_eq!(code(a.call("dgram.send", to_all.clone(), b"hi")), "EACCES");
    a.call("dgram.set_broadcast", json!({"socket": s}), b"")
        .unwrap();
    a.call("dgram.send", to_all, b"hi all").unwrap();
    let mut heard: Vec<u64> = messages(&mut a)
        .iter()
        .map(|(e, p)| {
            assert_eq!(p, b"hi all");
            e["socket"].as_u64().unwrap()
        })
        .collect();
    heard.sort();
    assert_eq!(heard, listeners);
    assert!(messages(&mut b).is_empty(), "a broadcast left its VM");
    // Off again: refused again.
    a.call(
        "dgram.set_broadcast",
        json!({"socket": s, "enable": false}),
        b"",
    )
    .unwrap();
    let to_all = json!({"socket": s, "host": "255.255.255.255", "port": port});
    assert_eq!(code(a.call("dgram.send", to_all, b"hi")), "EACCES");
}
