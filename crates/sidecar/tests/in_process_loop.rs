//! A sidecar started with `Sidecar::start_in_process`: its RPC loop has no I/O driver and
//! sleeps on a condition variable (runtime.rs, "Two ways for the loop to sleep").
//!
//! Everything the loop does must work without tokio's I/O driver: it would panic at the
//! first use of one. So each part of the loop that waits on something is exercised here:
//! in-VM data (wakes from guest threads), host sockets and published ports (readiness
//! thread handlers and waits), timers (a connect timeout, a parked poll), the blocking
//! pool (a host-resolver lookup), and shutdown. The transports that need the driver are
//! refused with a typed error, and the sidecar goes on serving.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Instant;

use serde_json::{json, Value};
use sidecar::SidecarConfig;
use support::*;

fn config() -> SidecarConfig {
    SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_allow("127.0.0.1".parse().unwrap())
}

fn in_process() -> Harness {
    Harness::in_process_only(config())
}

const POLL: Setup = Setup {
    transport: Transport::InProcess,
    mode: Mode::Poll,
};

#[test]
fn fd_transports_are_refused_as_unsupported_and_sessions_go_on() {
    let h = in_process();
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let refused = h.sidecar.serve_fds(ours.into(), None).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    assert!(
        refused.to_string().contains("start_in_process"),
        "the error says why: {refused}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.sock");
    let refused = h.sidecar.listen_unix(&path).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    assert!(!path.exists(), "no socket file is left behind");
    // In-process sessions are served as before.
    let mut g = h.guest(Transport::InProcess);
    assert_eq!(g.stats()["session"]["vm"], "a");
}

#[test]
fn in_vm_streams_and_datagrams_flow_in_push_and_poll_mode() {
    let h = in_process();
    for setup in [Setup::from(Transport::InProcess), POLL] {
        let mut conn = connect_pair(
            &h,
            setup,
            json!({"host": "127.0.0.1", "port": 0}),
            json!({"host": "127.0.0.1"}),
        );
        let message: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        conn.client
            .call("net.write", json!({"socket": conn.client_sock}), &message)
            .unwrap();
        let got = conn.server.read_data(conn.server_sock, message.len());
        assert!(got == message, "{setup:?}: in-VM bytes differ");
    }
    let mut a = h.guest(Transport::InProcess);
    let mut b = h.guest(Transport::InProcess);
    let receiver = udp_socket(&mut b, "udp4");
    let bound = b
        .call("dgram.bind", json!({"socket": receiver, "port": 0}), b"")
        .unwrap();
    let sender = udp_socket(&mut a, "udp4");
    let to = json!({"socket": sender, "host": "127.0.0.1", "port": bound["local"]["port"]});
    a.call("dgram.send", to, b"in the VM").unwrap();
    let (message, payload, _) = b.event_of("message");
    assert_eq!(message["socket"], receiver);
    assert_eq!(payload, b"in the VM");
}

#[test]
fn host_sockets_echo_through_native_servers() {
    let h = in_process();
    for setup in [Setup::from(Transport::InProcess), POLL] {
        let (port, server) = native_echo();
        let mut g = h.guest(setup);
        // A host connect (allowed by policy): its reply, then its `connect` event.
        let (sock, _) = g.connect_ok("127.0.0.1", port);
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        g.call("net.write", json!({"socket": sock}), &message)
            .unwrap();
        assert!(
            g.read_data(sock, message.len()) == message,
            "{setup:?}: echo differs"
        );
        g.call("net.destroy", json!({"socket": sock}), b"").unwrap();
        assert_eq!(server.join().unwrap(), message.len(), "{setup:?}");

        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        let udp = udp_socket(&mut g, "udp4");
        let to = json!({"socket": udp, "host": "127.0.0.1", "port": echo_addr.port()});
        g.call("dgram.send", to, b"out and back").unwrap();
        let mut buf = [0u8; 64];
        echo.set_read_timeout(Some(DEADLINE)).unwrap();
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"out and back", "{setup:?}");
        echo.send_to(&buf[..n], from).unwrap();
        let (message, payload, _) = g.event_of("message");
        assert_eq!(message["socket"], udp, "{setup:?}");
        assert_eq!(message["remote"]["port"], echo_addr.port(), "{setup:?}");
        assert_eq!(payload, b"out and back", "{setup:?}");
    }
}

#[test]
fn timers_end_a_connect_nobody_answers_and_a_parked_poll() {
    let h = in_process();
    let (_listener, _fill, addr) = full_backlog();
    let mut g = h.guest(Transport::InProcess);
    let timed_out = g.call(
        "net.connect",
        json!({"host": "127.0.0.1", "port": addr.port(), "timeout_ms": 200}),
        b"",
    );
    assert_eq!(code(timed_out), "ETIMEDOUT");

    let mut p = h.guest(POLL);
    let listened = p.call("net.listen", json!({"port": 0}), b"").unwrap();
    let started = Instant::now();
    let polled = p
        .call(
            "net.server_poll",
            json!({"server": listened["server"], "wait_ms": 30}),
            b"",
        )
        .unwrap();
    assert_eq!(polled, Value::Null, "nobody connected");
    assert!(
        started.elapsed().as_millis() >= 30,
        "the poll was parked until its wait ended"
    );
}

#[test]
fn a_published_port_accepts_a_native_client() {
    let host: SocketAddr = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let h = Harness::in_process_only(config().with_publish("a", host, 8080));
    let mut g = h.guest(Transport::InProcess);
    g.call("net.listen", json!({"host": "0.0.0.0", "port": 8080}), b"")
        .unwrap();
    let mut client = TcpStream::connect(host).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let (accept, _, _) = g.event_of("accept");
    let sock = accept["socket"].as_u64().unwrap();
    client.write_all(b"hello").unwrap();
    assert_eq!(g.read_data(sock, 5), b"hello");
    g.call("net.write", json!({"socket": sock}), b"world")
        .unwrap();
    let mut answer = [0u8; 5];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"world");
}

#[test]
fn a_host_resolver_lookup_runs_on_the_blocking_pool() {
    // `0x7f.1` is a name to the VM; glibc's resolver reads it as 127.0.0.1 with no DNS
    // traffic. Whatever this process's resolver answers, the sidecar must answer too.
    let name = "0x7f.1";
    let here: Vec<String> = (name, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip().to_string()).collect())
        .unwrap_or_default();
    let h = in_process();
    let mut g = h.guest(Transport::InProcess);
    let looked_up = g.call("dns.lookup", json!({"host": name}), b"");
    match here.is_empty() {
        true => assert_eq!(code(looked_up), "ENOTFOUND"),
        false => {
            let answer = looked_up.expect("the host resolver answers");
            let mut got: Vec<String> = answer["addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .map(|a| a["address"].as_str().unwrap().to_owned())
                .collect();
            let mut want = here;
            got.sort();
            got.dedup();
            want.sort();
            want.dedup();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn shutting_down_closes_every_session() {
    let h = in_process();
    let mut g = h.guest(Transport::InProcess);
    let listened = g.call("net.listen", json!({"port": 0}), b"").unwrap();
    let server = listened["server"].as_u64().unwrap();
    let Harness { sidecar, .. } = h;
    let stopper = thread::spawn(move || sidecar.shutdown());
    let (close, _, _) = g.event_of("close");
    assert_eq!(close["server"], server, "{close}");
    stopper.join().unwrap();
    // Then the session's pipe closes: nothing more arrives.
    assert!(g.recv(Instant::now() + DEADLINE).is_none());
}
