//! Where a guest's connect or datagram goes (DESIGN.md, "Isolation and policy"), in
//! order: a listener (or bound UDP socket) of the same VM at the destination, in memory,
//! even where the policy would allow the host's port; else a host kernel socket, only if
//! the operator's policy allows the destination (the host's own loopback counts as
//! outside the VM); else `ECONNREFUSED` for a loopback destination, as an empty kernel
//! answers, and `EACCES` naming the rules for any other.
//!
//! Native listeners prove where traffic did *not* go: a connect reply comes only once the
//! connection is established, so a host connection would already sit in the native
//! listener's accept queue (and a datagram in a native socket's queue) when the test
//! looks. The non-loopback destinations are TEST-NET / private addresses that are never
//! contacted: a denial is decided before any socket exists.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::thread::{self, JoinHandle};

use serde_json::{json, Value};
use support::*;

/// A native echo server on 127.0.0.1 for `connections` connections, one after another.
fn native_echo(connections: usize) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                stream.write_all(&buf[..n]).unwrap();
            }
        }
    });
    (port, server)
}

/// A native listener that never accepts, to see whether anything connected to it.
fn idle_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn nothing_connected(listener: &TcpListener) -> bool {
    matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn connect(g: &mut RawGuest, host: &str, port: u16) -> Result<Value, Value> {
    g.call("net.connect", json!({"host": host, "port": port}), b"")
}

/// Echoes one message through a host connection to `host:port`, then ends it.
fn echo_via(g: &mut RawGuest, host: &str, port: u16) -> Value {
    let (sock, reply) = g.connect_ok(host, port);
    g.call("net.write", json!({"socket": sock}), b"hello")
        .unwrap();
    assert_eq!(g.read_data(sock, 5), b"hello", "via {host}");
    g.call("net.shutdown", json!({"socket": sock}), b"")
        .unwrap();
    g.event_of("end");
    let (close, _, _) = g.event_of("close");
    assert_eq!(close["had_error"], false);
    reply
}

#[test]
fn only_what_the_rules_allow_leaves_the_vm() {
    let (port, echo) = native_echo(2);
    let (idle, idle_port) = idle_listener();
    let h = allowing(&[&format!("127.0.0.1:{port}")]);
    let mut g = h.guest(Transport::InProcess);

    // Allowed, written as IPv4 or v4-mapped: the same destination.
    let reply = echo_via(&mut g, "127.0.0.1", port);
    assert_eq!(reply["remote"]["port"], port);
    echo_via(&mut g, "::ffff:127.0.0.1", port);
    echo.join().unwrap();

    // Loopback outside the rule (another port, another address): refused, as an empty
    // kernel would; the native listener there saw nothing.
    for (host, p) in [("127.0.0.1", idle_port), ("127.0.0.2", port), ("::1", port)] {
        let error = connect(&mut g, host, p).expect_err("not allowed");
        assert_eq!(error["code"], "ECONNREFUSED", "{host}:{p}: {error}");
    }
    assert!(nothing_connected(&idle));

    // Anything else: EACCES, naming the destination and the rules. A v4-mapped address
    // is denied exactly as its IPv4 form.
    for (host, shown) in [
        ("192.0.2.1", "192.0.2.1"),
        ("10.0.0.1", "10.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),
    ] {
        let error = connect(&mut g, host, port).expect_err("denied");
        assert_eq!(error["code"], "EACCES", "{host}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(shown), "{host}: {message}");
        assert!(
            message.contains(&format!("127.0.0.1/32:{port}")),
            "the message names the rules: {message}"
        );
    }
    let stats = g.stats();
    assert_eq!(stats["session"]["open_handles"], 0, "{stats}");
}

#[test]
fn with_no_rule_even_a_listening_host_port_is_refused() {
    let (idle, port) = idle_listener();
    let h = Harness::new();
    let mut g = h.guest(Transport::Unix);
    for host in ["127.0.0.1", "localhost", "0.0.0.0"] {
        let error = connect(&mut g, host, port).expect_err("nothing is allowed");
        assert_eq!(error["code"], "ECONNREFUSED", "{host}: {error}");
    }
    assert!(nothing_connected(&idle));
    let error = connect(&mut g, "192.0.2.1", port).expect_err("nothing is allowed");
    assert_eq!(error["code"], "EACCES", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("allows nothing"),
        "{error}"
    );
}

#[test]
fn an_in_vm_listener_wins_over_an_allowed_host_port() {
    let (native, port) = idle_listener();
    let h = allowing(&[&format!("127.0.0.1:{port}")]);
    // VM `a` listens on the very port the policy allows on the host.
    let mut server = h.guest(Transport::InProcess);
    let listened = server
        .call(
            "net.listen",
            json!({"host": "127.0.0.1", "port": port}),
            b"",
        )
        .expect("in-VM ports are the VM's own, whatever the host has bound");
    let mut client = h.guest(Transport::Unix);
    let (sock, _) = client.connect_ok("127.0.0.1", port);
    let (accept, _, _) = server.event_of("accept");
    assert_eq!(accept["server"], listened["server"]);
    let accepted = accept["socket"].as_u64().unwrap();
    client
        .call("net.write", json!({"socket": sock}), b"in-vm")
        .unwrap();
    assert_eq!(server.read_data(accepted, 5), b"in-vm");
    assert!(nothing_connected(&native), "the connect left the VM");

    // VM `b` has no listener there: its connect goes to the host's port.
    let mut other = h.guest_in(Transport::InProcess, "b");
    let (_, reply) = other.connect_ok("127.0.0.1", port);
    native.set_nonblocking(false).unwrap();
    let (_, peer) = native.accept().expect("VM b's connection reached the host");
    assert_eq!(reply["local"]["port"], peer.port(), "{reply}");
}

#[test]
fn datagrams_outside_the_rules_are_denied_or_dropped() {
    let native = UdpSocket::bind("127.0.0.1:0").unwrap();
    native.set_nonblocking(true).unwrap();
    let allowed = native.local_addr().unwrap().port();
    // Any other port: not allowed (nothing is sent there, so any number does).
    let unlisted = if allowed == 9 { 7 } else { 9 };
    let h = allowing(&[&format!("127.0.0.1:{allowed}")]);
    let mut g = h.guest(Transport::InProcess);
    let created = g.call("dgram.createSocket", json!({"type": "udp4"}), b"");
    let sock = created.unwrap()["socket"].as_u64().unwrap();

    // Non-loopback, not allowed: EACCES naming the rules, before anything changes.
    let to = |host: &str, port: u16| json!({"socket": sock, "host": host, "port": port});
    for host in ["192.0.2.1", "::ffff:10.0.0.1"] {
        let error = g
            .call("dgram.send", to(host, 53), b"x")
            .expect_err("denied");
        assert_eq!(error["code"], "EACCES", "{host}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("127.0.0.1/32:{allowed}")),
            "{message}"
        );
        let connected = g.call("dgram.connect", to(host, 53), b"");
        assert_eq!(code(connected), "EACCES", "{host}");
    }
    // The refused sends did not bind the socket implicitly.
    let bound = g.call("dgram.bind", json!({"socket": sock, "port": 0}), b"");
    assert!(bound.is_ok(), "{bound:?}");

    // Loopback, not allowed, nobody in the VM: sent, dropped and counted (UDP).
    let sent = g.call("dgram.send", to("127.0.0.1", unlisted), b"lost");
    assert_eq!(sent.unwrap()["bytes"], 4);
    assert_eq!(g.stats()["vm"]["udp_dropped_no_receiver"], 1);

    // A socket of the VM bound to the allowed port receives in memory; the native socket
    // on the host's port gets nothing.
    let created = g.call("dgram.createSocket", json!({"type": "udp4"}), b"");
    let receiver = created.unwrap()["socket"].as_u64().unwrap();
    let bind = json!({"socket": receiver, "host": "127.0.0.1", "port": allowed});
    g.call("dgram.bind", bind, b"").unwrap();
    g.call("dgram.send", to("127.0.0.1", allowed), b"in-vm")
        .unwrap();
    let (message, payload, _) = g.event_of("message");
    assert_eq!(
        (message["socket"].as_u64(), payload),
        (Some(receiver), b"in-vm".to_vec())
    );
    let mut buf = [0u8; 16];
    let nothing = native.recv_from(&mut buf);
    assert!(
        matches!(&nothing, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "{nothing:?}"
    );
}
