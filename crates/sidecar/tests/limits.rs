//! The operator's limits (`sidecar::Limits`), each set small and hit on purpose: the
//! guest that hits one gets a typed error and nothing half-done, and a guest of another
//! VM goes on fully working meanwhile (DESIGN.md, "Isolation and policy": limits per VM;
//! PROTOCOL.md §3 size limit, §11 hard limit, §13 codes).
//!
//! - `sockets_per_vm`: `EMFILE` for every way of opening one (listen, in-VM connect,
//!   UDP, host connect), shared by the VM's sessions, and room again once one closes.
//! - `write_hard_limit`: `ENOBUFS` exactly past the limit, nothing of that write taken,
//!   for an in-VM peer and a host peer; then every accepted byte arrives, in order.
//! - `parked_calls_per_session`: connects parked on a full backlog, and poll-mode polls
//!   with `wait_ms`: the next one is `ENOBUFS`; another session may still park.
//! - `max_frame`: a frame of exactly the limit is served; one byte more is `EMSGSIZE`,
//!   then the session closes (its peer sees `end`); the frames before it still count.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::time::Instant;

use serde_json::{json, Value};
use sidecar::SidecarConfig;
use support::*;

fn harness(limits: impl FnOnce(&mut sidecar::Limits), allow: Option<&str>) -> Harness {
    let mut config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb");
    limits(&mut config.limits);
    if let Some(rule) = allow {
        config = config.with_allow(rule.parse().unwrap());
    }
    Harness::with_config(config)
}

/// Listens in `server`'s VM, connects from `client`, takes the connection.
/// Returns (server socket, client socket).
fn pair(server: &mut RawGuest, client: &mut RawGuest) -> (u64, u64) {
    let listened = server.call("net.listen", json!({"port": 0}), b"").unwrap();
    let (client_sock, _) = client.connect_ok(
        "localhost",
        listened["local"]["port"].as_u64().unwrap() as u16,
    );
    let (accept, _, _) = server.event_of("accept");
    let server_sock = accept["socket"].as_u64().unwrap();
    server.send_call(
        "net.credit",
        json!({"socket": server_sock, "bytes": 0}),
        b"",
        true,
    );
    (server_sock, client_sock)
}

/// A guest of VM b does everything a guest does, while VM a sits at a limit: TCP both
/// ways (more than a window), UDP, a clean close, and it leaves nothing behind.
fn assert_vm_b_works(h: &Harness) {
    let mut server = h.guest_in(Transport::Unix, "b");
    let mut client = h.guest_in(Transport::InProcess, "b");
    let (s, c) = pair(&mut server, &mut client);
    // 10 × 30 KiB: more than a window, each write under any limit set here.
    for i in 0..10 {
        let data = pattern_at(i * 30_720, 30_720);
        client
            .call("net.write", json!({"socket": c}), &data)
            .unwrap();
        assert!(
            server.read_data(s, data.len()) == data,
            "VM b: bytes differ"
        );
    }
    server
        .call("net.write", json!({"socket": s}), b"pong")
        .unwrap();
    assert_eq!(client.read_data(c, 4), b"pong");
    let u = client
        .call("dgram.createSocket", json!({"type": "udp4"}), b"")
        .unwrap()["socket"]
        .clone();
    let bound = client
        .call("dgram.bind", json!({"socket": u, "port": 0}), b"")
        .unwrap();
    let to = json!({"socket": u, "port": bound["local"]["port"]});
    client.call("dgram.send", to, b"self").unwrap();
    assert_eq!(client.event_of("message").1, b"self");
    client
        .call("net.shutdown", json!({"socket": c}), b"")
        .unwrap();
    server.event_of("end");
    server
        .call("net.destroy", json!({"socket": s}), b"")
        .unwrap();
    let (close, _, _) = client.event_of("close");
    assert_eq!(
        (close["socket"].as_u64(), close["had_error"].as_bool()),
        (Some(c), Some(false))
    );
    drop((server, client));
    settle(h, "VM b's sockets released", |s| {
        s["vms"]["b"]["sockets"] == 0
    });
}

#[test]
fn sockets_per_vm_is_emfile_for_that_vm_only_and_room_comes_back() {
    let native = TcpListener::bind("127.0.0.1:0").unwrap();
    native.set_nonblocking(true).unwrap();
    let port = native.local_addr().unwrap().port();
    let h = harness(|l| l.sockets_per_vm = 6, Some(&format!("127.0.0.1:{port}")));
    let mut g = h.guest(Transport::InProcess);
    let mut other = h.guest(Transport::Unix);
    // Three sockets (a server, both ends), a fourth (UDP), a fifth (a server).
    let (accepted, sock) = pair(&mut g, &mut other);
    let udp = |g: &mut RawGuest| g.call("dgram.createSocket", json!({"type": "udp4"}), b"");
    let u1 = udp(&mut g).unwrap()["socket"].clone();
    g.call("net.listen", json!({"path": "/five"}), b"").unwrap();
    // One left: an in-VM connect needs two, refused whole (no half-open socket).
    let refused = other.call("net.connect", json!({"path": "/five"}), b"");
    assert_eq!(code(refused), "EMFILE");
    assert_eq!(h.stats()["vms"]["a"]["sockets"], 5);
    // The sixth, from the other session: now full, whichever session asks.
    udp(&mut other).unwrap();
    for g in [&mut g, &mut other] {
        assert_eq!(code(udp(g)), "EMFILE");
        assert_eq!(
            code(g.call("net.listen", json!({"port": 0}), b"")),
            "EMFILE"
        );
        assert_eq!(
            code(g.call("net.connect", json!({"path": "/five"}), b"")),
            "EMFILE"
        );
        let host = g.call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": port}),
            b"",
        );
        assert_eq!(code(host), "EMFILE");
    }
    let nothing = native.accept().map(|_| ());
    let nothing = nothing.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(nothing, "a refused host connect reached the host");
    let operator = h.stats();
    assert_eq!(operator["vms"]["a"]["sockets"], 6, "{operator}");
    assert_eq!(operator["host_connections"], 0);
    // The limit is VM a's: VM b works in full meanwhile.
    assert_vm_b_works(&h);
    // Closing one makes room for exactly one.
    g.call("dgram.close", json!({"socket": u1}), b"").unwrap();
    udp(&mut g).expect("room after a close");
    assert_eq!(code(udp(&mut g)), "EMFILE");
    // Destroying a connected socket frees its end, and its peer's once that closes
    // (half-closed after the end, until it ends its side too).
    other
        .call("net.destroy", json!({"socket": sock}), b"")
        .unwrap();
    g.event_of("end");
    g.call("net.shutdown", json!({"socket": accepted}), b"")
        .unwrap();
    g.event_of("close");
    assert_eq!(h.stats()["vms"]["a"]["sockets"], 4);
    other.connect_ok("127.0.0.1", port);
    assert!(
        native.accept().is_ok(),
        "the host connect did not reach the host"
    );
    assert_eq!(h.stats()["vms"]["a"]["sockets"], 5);
}

/// Writes `chunk`-sized pattern blocks until one is refused; returns (bytes accepted,
/// last `buffered`, the refusal, whether `need_drain` was seen).
fn write_until_refused(g: &mut RawGuest, sock: u64, chunk: usize) -> (usize, u64, Value, bool) {
    let (mut accepted, mut buffered, mut need_drain) = (0, 0, false);
    for _ in 0..8192 {
        match g.call(
            "net.write",
            json!({"socket": sock}),
            &pattern_at(accepted, chunk),
        ) {
            Ok(reply) => {
                accepted += chunk;
                buffered = reply["buffered"].as_u64().unwrap();
                need_drain |= reply["need_drain"] == true;
            }
            Err(refused) => return (accepted, buffered, refused, need_drain),
        }
    }
    panic!("never refused after {accepted} bytes");
}

#[test]
fn a_write_past_the_hard_limit_is_enobufs_and_nothing_of_it_is_taken() {
    const HARD: usize = 64 * 1024;
    const CHUNK: usize = 16 * 1024;
    let native = TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&native)
        .set_recv_buffer_size(4096)
        .unwrap();
    let port = native.local_addr().unwrap().port();
    let h = harness(
        |l| (l.write_high_water, l.write_hard_limit) = (16 * 1024, HARD),
        Some(&format!("127.0.0.1:{port}")),
    );

    // In the VM: a reader with a 1 KiB window that reads nothing.
    let mut reader = attach_with(&h, Transport::Unix, "a", json!({"credit": 1024}));
    let mut writer = h.guest(Transport::InProcess);
    let (r, w) = pair(&mut reader, &mut writer);
    let (accepted, buffered, refused, need_drain) = write_until_refused(&mut writer, w, CHUNK);
    assert_eq!(refused["code"], "ENOBUFS", "{refused}");
    assert!(need_drain, "never past the high-water mark");
    assert_eq!(
        buffered as usize,
        accepted - 1024,
        "all but the window is buffered"
    );
    assert!(
        buffered as usize + CHUNK > HARD,
        "refused early at {buffered}"
    );
    // Up to the limit exactly is taken; one byte more is not, and leaves nothing.
    let fill = HARD - buffered as usize;
    let reply = writer.call(
        "net.write",
        json!({"socket": w}),
        &pattern_at(accepted, fill),
    );
    assert_eq!(reply.unwrap()["buffered"], HARD);
    let accepted = accepted + fill;
    assert_eq!(
        code(writer.call("net.write", json!({"socket": w}), b"!")),
        "ENOBUFS"
    );
    let reply = writer.call("net.write", json!({"socket": w}), b"").unwrap();
    assert_eq!(reply["buffered"], HARD, "part of a refused write was kept");
    assert_vm_b_works(&h);
    // The reader consumes: every accepted byte, in order, then `drain` for the writer.
    assert!(
        reader.read_data(r, accepted) == pattern_at(0, accepted),
        "bytes differ"
    );
    let (drain, _, _) = writer.event_of("drain");
    assert_eq!(drain["socket"], w);

    // To a host peer that does not read: the kernel takes what it holds, then the
    // sidecar up to the same limit.
    let (sock, _) = writer.connect_ok("127.0.0.1", port);
    let (mut native_end, _) = native.accept().unwrap();
    let (accepted, buffered, refused, _) = write_until_refused(&mut writer, sock, CHUNK);
    assert_eq!(refused["code"], "ENOBUFS", "{refused}");
    assert!(
        buffered as usize <= HARD && buffered as usize + CHUNK > HARD,
        "{buffered}"
    );
    assert_vm_b_works(&h);
    writer
        .call("net.shutdown", json!({"socket": sock}), b"")
        .unwrap();
    native_end.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut all = Vec::new();
    native_end.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), accepted);
    assert!(all == pattern_at(0, accepted), "bytes differ");
}

#[test]
fn parked_calls_past_the_session_limit_are_enobufs() {
    let h = harness(|l| l.parked_calls_per_session = 3, None);
    let mut server = h.guest(Transport::InProcess);
    server
        .call("net.listen", json!({"path": "/full", "backlog": 1}), b"")
        .unwrap();
    let mut filler = h.guest(Transport::InProcess);
    filler
        .call("net.connect", json!({"path": "/full"}), b"")
        .unwrap();
    // The backlog is full until the server takes that connection: connects park.
    let mut p = h.guest(Transport::Unix);
    let parked: Vec<u64> = (0..3)
        .map(|_| p.send_call("net.connect", json!({"path": "/full"}), b"", false))
        .collect();
    let fourth = p.send_call("net.connect", json!({"path": "/full"}), b"", false);
    assert_eq!(code(p.wait_reply(fourth)), "ENOBUFS");
    assert_eq!(p.stats()["session"]["parked_calls"], 3);
    // The limit is per session: another one may still park.
    let mut q = h.guest(Transport::Unix);
    let q_parked = q.send_call("net.connect", json!({"path": "/full"}), b"", false);
    assert_eq!(q.stats()["session"]["parked_calls"], 1);

    // Poll mode: polls that wait are parked calls too. Four in one batch: one refused.
    let poll = Setup {
        transport: Transport::InProcess,
        mode: Mode::Poll,
    };
    let mut r = h.guest(poll);
    let u = r
        .call("dgram.createSocket", json!({"type": "udp4"}), b"")
        .unwrap()["socket"]
        .clone();
    let mut batch = Vec::new();
    for id in 1000..1004 {
        let header = json!({"type": "call", "id": id, "method": "dgram.poll",
                            "params": {"socket": u, "wait_ms": 50}});
        batch.extend(encode(&header, b""));
    }
    r.send_raw(batch);
    let polled = replies(&mut r, &[1000, 1001, 1002, 1003]);
    assert_eq!(code(polled[&1003].clone()), "ENOBUFS");
    for id in 1000..1003 {
        assert_eq!(
            polled[&id],
            Ok(Value::Null),
            "poll {id} waited, found nothing"
        );
    }
    assert_vm_b_works(&h);

    // Room in the backlog, one acknowledgement at a time: every parked connect completes.
    for _ in 0..5 {
        let (accept, _, _) = server.event_of("accept");
        server.send_call(
            "net.credit",
            json!({"socket": accept["socket"], "bytes": 0}),
            b"",
            true,
        );
    }
    for (id, outcome) in replies(&mut p, &parked) {
        assert!(outcome.is_ok(), "{id}: {outcome:?}");
    }
    assert!(q.wait_reply(q_parked).is_ok());
    let operator = h.stats();
    assert_eq!(operator["parked_calls"], 0, "{operator}");
    assert_eq!(operator["fallback_found_work"], 0);
}

/// A `net.write` frame whose `total` is exactly `total`; returns it and its payload.
fn write_frame(socket: u64, total: usize, noreply: bool) -> (Vec<u8>, Vec<u8>) {
    let header = json!({"type": "call", "id": 77, "method": "net.write",
                        "params": {"socket": socket}, "noreply": noreply});
    let head = serde_json::to_vec(&header).unwrap().len();
    let payload = pattern_at(0, total - 4 - head);
    (encode(&header, &payload), payload)
}

#[test]
fn an_oversized_frame_is_emsgsize_and_closes_only_its_session() {
    const MAX: usize = 64 * 1024;
    let h = harness(|l| l.max_frame = MAX, None);
    for transport in [Transport::InProcess, Transport::Unix] {
        let mut peer = h.guest(Transport::InProcess);
        let mut g = h.guest(transport);
        let (s, c) = pair(&mut peer, &mut g);
        // `total` at the limit exactly: served.
        let (frame, payload) = write_frame(c, MAX, false);
        assert_eq!(frame.len(), 4 + MAX);
        g.send_raw(frame);
        g.wait_reply(77).expect("a frame at the limit is served");
        assert!(peer.read_data(s, payload.len()) == payload, "bytes differ");

        // A last write, then a frame one byte over the limit, in one go.
        let (last, last_payload) = write_frame(c, 300, true);
        let (over, _) = write_frame(c, MAX + 1, true);
        g.send_raw([last, over].concat());
        let deadline = Instant::now() + DEADLINE;
        match g.recv(deadline) {
            Some(Incoming::Event { event, .. }) => {
                let got = (event["event"].as_str(), event["code"].as_str());
                assert_eq!(got, (Some("error"), Some("EMSGSIZE")), "{event}");
                assert!(event.get("socket").is_none(), "{event}");
            }
            other => panic!("{transport:?}: expected an EMSGSIZE event, got {other:?}"),
        }
        assert!(
            g.recv(deadline).is_none(),
            "{transport:?}: the session stayed open"
        );
        // The write that came whole before the bad frame was served; then the session's
        // end closed its socket as a process exit does.
        let got = peer.read_data(s, last_payload.len());
        assert!(got == last_payload, "{transport:?}: bytes differ");
        let (end, _) = peer.event();
        assert_eq!(end["event"], "end", "{transport:?}: {end}");
        peer.call("net.shutdown", json!({"socket": s}), b"")
            .unwrap();
        let (close, _) = peer.event();
        assert_eq!(
            (close["event"].as_str(), close["had_error"].as_bool()),
            (Some("close"), Some(false))
        );
        assert_vm_b_works(&h);
    }
    assert_eq!(h.stats()["framing_errors"], 2);
}
