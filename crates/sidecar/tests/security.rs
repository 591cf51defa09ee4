//! Isolation between VMs and sessions, as an attacker inside one guest would probe it
//! (DESIGN.md, "Isolation and policy"; PROTOCOL.md §6, §7.1, §7.3).
//!
//! - VM A cannot reach VM B's loopback listeners (127.0.0.1, `::`, 0.0.0.0; by IPv4,
//!   IPv6, v4-mapped, `localhost` or a host name), its Unix paths or its UDP ports, even
//!   when the policy lets A reach the host's own loopback: B sees nothing, A's datagrams
//!   are dropped and counted in A's VM.
//! - A session cannot name another session's socket/server ids (`EBADF`), and nothing
//!   happens to the owner's sockets.
//! - Attach needs the VM's own secret: refused hellos are indistinguishable, the stream is
//!   closed, nothing is created; an event-channel token does not cross VMs.
//! - Unix paths are names in the VM's table: `..` cannot climb out, and listening never
//!   creates (or reaches) a host file, the sidecar's own socket included.
//! - Policy is per VM: a rule of VM A does not let VM B out, for names and mapped forms
//!   too, and B's denial does not reveal A's rules.
//!
//! Not repeated here: host_policy.rs (the order in-VM / policy / refusal, one VM),
//! errors.rs (the basic refused hellos), cli.rs (the 0600 mode of `serve --listen`).

mod support;

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde_json::{json, Value};
use support::*;

fn listen(g: &mut RawGuest, params: Value) -> Value {
    g.call("net.listen", params.clone(), b"")
        .unwrap_or_else(|e| panic!("listen {params}: {e}"))
}

#[test]
fn vm_a_cannot_reach_vm_b_loopback_listeners_or_unix_paths() {
    let names = loopback_host_names();
    // Without a rule, and with the host's whole loopback allowed: either way VM B's
    // listeners are not on the host, so A finds nobody. (Without a rule A's host names
    // do not even resolve: a lookup is egress.)
    for (h, rules) in [
        (Harness::new(), false),
        (allowing(&["127.0.0.0/8", "::1"]), true),
    ] {
        let mut b = h.guest_in(Transport::Unix, "b");
        let ports = [dead_port(), dead_port(), dead_port()];
        for (host, port) in ["127.0.0.1", "::", "0.0.0.0"].iter().zip(ports) {
            listen(&mut b, json!({"host": host, "port": port}));
        }
        listen(&mut b, json!({"path": "/run/b.sock"}));
        for transport in [Transport::InProcess, Transport::Unix] {
            let mut a = h.guest_in(transport, "a");
            let mut hosts: Vec<&str> = vec!["127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1"];
            hosts.extend(["127.0.0.2", "0.0.0.0", "::ffff:127.0.0.9"]);
            hosts.extend(names.iter().map(String::as_str));
            for host in hosts {
                for port in ports {
                    let tried = a.call("net.connect", json!({"host": host, "port": port}), b"");
                    let resolved = rules || !names.iter().any(|name| name == host);
                    let want = if resolved {
                        "ECONNREFUSED"
                    } else {
                        "ENOTFOUND"
                    };
                    assert_eq!(code(tried), want, "{transport:?} {host}:{port}");
                }
            }
            for path in ["/run/b.sock", "/run/../run/b.sock", "run/b.sock"] {
                let tried = a.call("net.connect", json!({"path": path}), b"");
                assert_eq!(code(tried), "ENOENT", "{path}");
            }
            assert_eq!(a.stats()["session"]["open_handles"], 0);
        }
        // B heard nothing, and A's failures left nothing in either VM.
        let stats = b.stats();
        assert_eq!(stats["session"]["events_pushed"]["accept"], 0, "{stats}");
        assert_eq!(b.queued_events(), 0);
        let operator = h.stats();
        assert_eq!(operator["vms"]["a"]["sockets"], 0, "{operator}");
        assert_eq!(operator["vms"]["b"]["sockets"], 4, "{operator}");
        assert_eq!(operator["host_connections"], 0);
        // The listeners were live all along: VM B's own guest reaches each of them.
        let mut b2 = h.guest_in(Transport::InProcess, "b");
        for (host, port) in ["127.0.0.1", "::1", "127.0.0.3"].iter().zip(ports) {
            b2.connect_ok(host, port);
            assert_eq!(b.event_of("accept").0["local"]["port"], port);
        }
        b2.call("net.connect", json!({"path": "/run/b.sock"}), b"")
            .unwrap();
        assert_eq!(b.event_of("accept").0["local"]["path"], "/run/b.sock");
    }
}

#[test]
fn datagrams_to_another_vms_port_are_dropped_and_counted_in_the_senders_vm() {
    let h = Harness::new();
    let mut b = h.guest_in(Transport::InProcess, "b");
    let (b4, b6) = (udp_socket(&mut b, "udp4"), udp_socket(&mut b, "udp6"));
    // Fixed ports: each VM has its own ephemeral allocator, so A's own sockets would get
    // B's port numbers (and a datagram to it would rightly go to A's own socket).
    let bind = |g: &mut RawGuest, sock: u64, host: &str, port: u16| {
        let reply = g.call(
            "dgram.bind",
            json!({"socket": sock, "host": host, "port": port}),
            b"",
        );
        assert_eq!(reply.unwrap()["local"]["port"], port);
    };
    let (p4, p6) = (20001, 20002);
    bind(&mut b, b4, "127.0.0.1", p4);
    bind(&mut b, b6, "::", p6);

    let mut a = h.guest_in(Transport::Unix, "a");
    let (a4, a6) = (udp_socket(&mut a, "udp4"), udp_socket(&mut a, "udp6"));
    bind(&mut a, a4, "0.0.0.0", 20003);
    bind(&mut a, a6, "::", 20004);
    let mut sent = 0;
    for (sock, host, port) in [
        (a4, "127.0.0.1", p4),
        (a4, "localhost", p4),
        (a6, "::1", p6),
        (a6, "::ffff:127.0.0.1", p6),
        (a4, "127.0.0.1", p6),
    ] {
        let to = json!({"socket": sock, "host": host, "port": port});
        let reply = a.call("dgram.send", to, b"probe").unwrap();
        assert_eq!(reply["bytes"], 5, "sent, as UDP does, then dropped");
        sent += 1;
        assert_eq!(a.stats()["vm"]["udp_dropped_no_receiver"], sent);
    }
    // A connected socket learns its peer is missing, as on Linux: from A's VM.
    let to = json!({"socket": a4, "host": "127.0.0.1", "port": p4});
    a.call("dgram.connect", to, b"").unwrap();
    a.call("dgram.send", json!({"socket": a4}), b"again")
        .unwrap();
    let next = a.call("dgram.send", json!({"socket": a4}), b"x");
    assert_eq!(code(next), "ECONNREFUSED");

    // B got nothing, and its VM counted nothing.
    let stats = b.stats();
    assert_eq!(stats["session"]["events_pushed"]["message"], 0, "{stats}");
    assert_eq!(stats["vm"]["udp_dropped_no_receiver"], 0, "{stats}");
    assert_eq!(b.queued_events(), 0);
    let operator = h.stats();
    assert_eq!(operator["vms"]["a"]["udp_dropped_no_receiver"], sent + 1);
    // B's sockets were listening: a datagram from inside VM B arrives.
    let b_sender = udp_socket(&mut b, "udp4");
    let to = json!({"socket": b_sender, "host": "127.0.0.1", "port": p4});
    b.call("dgram.send", to, b"inside").unwrap();
    let (message, payload, _) = b.event_of("message");
    assert_eq!(
        (message["socket"].as_u64(), payload),
        (Some(b4), b"inside".to_vec())
    );
}

#[test]
fn a_session_cannot_name_another_sessions_ids() {
    let h = Harness::new();
    // X holds a server (1), a UDP socket (2), and a connection to P.
    let mut c = connect_pair(&h, Transport::InProcess, json!({"port": 0}), json!({}));
    let (x, x_sock, server) = (&mut c.server, c.server_sock, c.server_id);
    let x_udp = udp_socket(x, "udp4");
    let udp_port = x
        .call("dgram.bind", json!({"socket": x_udp, "port": 0}), b"")
        .unwrap()["local"]["port"]
        .clone();
    let before = x.stats()["session"].clone();

    let intruders = [
        h.guest_in(Transport::Unix, "a"),
        h.guest_in(Transport::InProcess, "b"),
        h.guest_in(
            Setup {
                transport: Transport::InProcess,
                mode: Mode::Poll,
            },
            "a",
        ),
    ];
    for (i, mut y) in intruders.into_iter().enumerate() {
        let poll = i == 2;
        let on = |id: u64| json!({"socket": id});
        let (write, udp_to) = (on(x_sock), json!({"socket": x_udp, "port": 9}));
        let mut attempts = vec![
            ("net.write", write.clone()),
            ("net.shutdown", write.clone()),
            ("net.credit", json!({"socket": x_sock, "bytes": 1 << 20})),
            ("net.socket_set_no_delay", write.clone()),
            ("net.socket_set_keep_alive", write.clone()),
            ("net.server_close", json!({"server": server})),
            ("dgram.send", udp_to.clone()),
            ("dgram.bind", on(x_udp)),
            ("dgram.connect", udp_to),
            ("dgram.close", on(x_udp)),
            ("net.destroy", write),
        ];
        if poll {
            attempts.push(("net.poll", on(x_sock)));
            attempts.push(("net.server_poll", json!({"server": server})));
            attempts.push(("dgram.poll", on(x_udp)));
        }
        for (method, params) in &attempts {
            let payload: &[u8] = match *method {
                "net.write" | "dgram.send" => b"stolen",
                _ => b"",
            };
            let tried = y.call(method, params.clone(), payload);
            assert_eq!(code(tried), "EBADF", "intruder {i}: {method} {params}");
        }
        if !poll {
            // The same as `noreply`: an error event, EBADF.
            let id = y.send_call("net.destroy", on(x_sock), b"", true);
            let (event, _) = y.event();
            assert_eq!(
                (event["request"].as_u64(), event["code"].as_str()),
                (Some(id), Some("EBADF"))
            );
        }
    }
    // Nothing happened to X: no event, no call counted, every id still works.
    let after = x.stats()["session"].clone();
    assert_eq!(x.queued_events(), 0, "X got events");
    assert_eq!(after["events_pushed"], before["events_pushed"]);
    assert_eq!(after["open_handles"], 3);
    assert_eq!(after["calls"]["net.credit"], before["calls"]["net.credit"]);
    x.call("net.write", json!({"socket": x_sock}), b"still mine")
        .unwrap();
    assert_eq!(c.client.read_data(c.client_sock, 10), b"still mine");
    let y_sock = c.client_sock;
    c.client
        .call("net.write", json!({"socket": y_sock}), b"back")
        .unwrap();
    assert_eq!(c.server.read_data(x_sock, 4), b"back");
    let s = udp_socket(&mut c.client, "udp4");
    let to = json!({"socket": s, "port": udp_port});
    c.client.call("dgram.send", to, b"dgram").unwrap();
    assert_eq!(c.server.event_of("message").1, b"dgram");
    let port = c.server.stats()["vm"]["listeners"].clone();
    assert_eq!(port, 1, "X's server is still listening");
}

#[test]
fn attach_needs_the_vms_own_secret_and_refusals_say_nothing_more() {
    let h = Harness::new();
    let refused_before = h.stats()["refused_hellos"].as_u64().unwrap();
    let mut messages = Vec::new();
    // VM:secret pairs, none right: wrong, empty, prefix, padded, case, doubled, another
    // VM's, an unknown VM, nothing at all, a VM name's case.
    let attempts = "a:wrong,a:,a:s,a:sa ,a:SA,a:sasa,b:sa,nope:sa,:,A:sa".split(',');
    let attempts: Vec<_> = attempts.map(|p| p.split_once(':').unwrap()).collect();
    for &(vm, secret) in &attempts {
        for transport in [Transport::InProcess, Transport::Unix] {
            let params =
                json!({"version": 1, "vm": vm, "secret": secret, "capabilities": ALL_CAPS});
            let (mut g, outcome) = hello_with(&h, transport, params);
            let error = outcome.expect_err("attached without the VM's secret");
            assert_eq!(error["code"], "EACCES", "{vm}/{secret:?}");
            messages.push(error["message"].clone());
            // The stream is closed: a call after the refusal gets nothing, then EOF.
            g.send_call("net.listen", json!({"port": 0}), b"", false);
            let deadline = Instant::now() + DEADLINE;
            assert!(
                g.recv(deadline).is_none(),
                "{vm}/{secret:?}: stream left open"
            );
        }
    }
    // Unknown VM and wrong secret read the same: nothing to learn about which VMs exist.
    messages.dedup();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let operator = h.stats();
    assert_eq!(operator["sessions"], 0, "{operator}");
    let refused = operator["refused_hellos"].as_u64().unwrap() - refused_before;
    assert_eq!(refused as usize, attempts.len() * 2);
    assert_eq!(operator["vms"]["a"]["sockets"], 0);

    // An event-channel token of VM a's session is no key to VM b.
    let mut caps = ALL_CAPS.to_vec();
    caps.push("event_channel");
    let params = json!({"version": 1, "vm": "a", "secret": "sa", "capabilities": caps});
    let (mut primary, outcome) = hello_with(&h, Transport::Unix, params);
    let token = outcome.unwrap()["event_channel_token"].clone();
    assert!(token.is_string());
    let params = json!({"version": 1, "vm": "b", "secret": "sb", "event_channel_token": token});
    let (mut thief, outcome) = hello_with(&h, Transport::Unix, params);
    assert_eq!(code(outcome), "EACCES");
    assert!(
        thief.read_unix_to_end().is_empty(),
        "the thief's stream stays open"
    );
    primary.call("net.listen", json!({"port": 0}), b"").unwrap();
    assert_eq!(h.stats()["vms"]["b"]["sockets"], 0);
}

#[test]
fn unix_paths_are_virtual_and_never_touch_the_host_filesystem() {
    let h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).unwrap();
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let host_paths = [
        format!("/tmp/pushnet-security-{nonce}.sock"),
        dir.path().join("inside.sock").display().to_string(),
        dir.path().join("sub/../escape.sock").display().to_string(),
    ];
    let mut a = h.guest(Transport::Unix);
    for path in &host_paths {
        listen(&mut a, json!({"path": path}));
        a.call("net.connect", json!({"path": path}), b"").unwrap();
        a.event_of("accept");
    }
    // `..` folds at the root: these all name the VM's `/x`.
    let listened = listen(&mut a, json!({"path": "/a/../../x"}));
    assert_eq!(listened["local"]["path"], "/x");
    for alias in ["/x", "//x", "/./x", "/../../../x", "/tmp/../x"] {
        let again = a.call("net.listen", json!({"path": alias}), b"");
        assert_eq!(code(again), "EADDRINUSE", "{alias}");
        let connected = a.call("net.connect", json!({"path": alias}), b"");
        assert!(connected.unwrap()["socket"].is_u64(), "{alias}");
        assert_eq!(a.event_of("accept").0["server"], listened["server"]);
    }
    // Relative paths resolve against hello's cwd, and cannot climb out either.
    let mut rel = attach_with(&h, Transport::InProcess, "a", json!({"cwd": "/srv/app"}));
    let listened = listen(&mut rel, json!({"path": "../../../../etc/passwd.sock"}));
    assert_eq!(listened["local"]["path"], "/etc/passwd.sock");
    assert_eq!(
        listen(&mut rel, json!({"path": "s.sock"}))["local"]["path"],
        "/srv/app/s.sock"
    );
    // The sidecar's own listening socket is a host file: to a guest it is just a name.
    let own = h.socket.display().to_string();
    let tried = a.call("net.connect", json!({"path": own}), b"");
    assert_eq!(code(tried), "ENOENT");
    listen(&mut a, json!({"path": own}));

    // No host file appeared, and the sidecar's socket is intact and still serving.
    let named = ["/x", "/etc/passwd.sock", "/srv/app/s.sock"].map(String::from);
    for path in host_paths.iter().chain(&named) {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} on the host"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let fresh = UnixStream::connect(&h.socket).expect("the sidecar's socket was disturbed");
    RawGuest::attach(Wire::Unix(fresh), "b", "sb");
    // VM b sees none of VM a's names.
    let mut b = h.guest_in(Transport::InProcess, "b");
    for path in host_paths.iter().chain(&named) {
        let tried = b.call("net.connect", json!({"path": path}), b"");
        assert_eq!(code(tried), "ENOENT", "{path}");
    }
}

#[test]
fn a_rule_of_one_vm_does_not_let_another_out() {
    let native = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = native.local_addr().unwrap().port();
    let native_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    native_udp.set_read_timeout(Some(DEADLINE)).unwrap();
    let udp_port = native_udp.local_addr().unwrap().port();
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb");
    let own = &mut config.vms.get_mut("a").unwrap().allow;
    own.push(format!("127.0.0.1:{port}").parse().unwrap());
    own.push(format!("udp:127.0.0.1:{udp_port}").parse().unwrap());
    own.push("198.51.100.0/24:443".parse().unwrap());
    let h = Harness::with_config(config);

    // VM a reaches the native peer, by IPv4, v4-mapped and host names.
    let mut a = h.guest(Transport::InProcess);
    let mut names = vec!["127.0.0.1".to_owned(), "::ffff:127.0.0.1".to_owned()];
    names.extend(loopback_host_names());
    for host in &names {
        a.connect_ok(host, port);
        native.accept().expect("VM a's connection reached the host");
    }
    let a_udp = udp_socket(&mut a, "udp4");
    let to = json!({"socket": a_udp, "host": "127.0.0.1", "port": udp_port});
    a.call("dgram.send", to, b"from a").unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = native_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from a");

    // VM b, the same destinations: refused as an empty loopback answers; nothing arrives.
    native.set_nonblocking(true).unwrap();
    native_udp.set_nonblocking(true).unwrap();
    let mut b = h.guest_in(Transport::Unix, "b");
    names.push("localhost".into());
    for host in &names {
        let tried = b.call("net.connect", json!({"host": host, "port": port}), b"");
        // VM b has no rule: its host names do not resolve at all (a lookup is egress).
        let name = host.parse::<std::net::IpAddr>().is_err() && host != "localhost";
        let want = if name { "ENOTFOUND" } else { "ECONNREFUSED" };
        assert_eq!(code(tried), want, "{host}");
    }
    let out = json!({"host": "198.51.100.7", "port": 443});
    let denied = b
        .call("net.connect", out, b"")
        .expect_err("VM a's rule let VM b out");
    assert_eq!(denied["code"], "EACCES");
    // Nor does the denial show VM a's rules to VM b.
    let message = denied["message"].as_str().unwrap();
    assert!(message.contains("allows nothing"), "{message}");
    assert!(!message.contains("198.51.100.0/24"), "{message}");
    let b_udp = udp_socket(&mut b, "udp4");
    for host in ["127.0.0.1", "localhost"] {
        let to = json!({"socket": b_udp, "host": host, "port": udp_port});
        b.call("dgram.send", to, b"from b").unwrap();
    }
    assert_eq!(b.stats()["vm"]["udp_dropped_no_receiver"], 2);
    assert!(matches!(native.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock));
    let nothing = native_udp.recv_from(&mut buf);
    assert!(
        matches!(&nothing, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "{nothing:?}"
    );
    assert_eq!(h.stats()["vms"]["a"]["udp_dropped_no_receiver"], 0);
}
