//! A guest killed mid-stream, a thousand times (DESIGN.md, "Transport": a session's end
//! closes its sockets as a process exit closes them; PROTOCOL.md §9 "When a session
//! ends", §16).
//!
//! Each round a guest attaches over the embedded sidecar's Unix socket, opens an in-VM
//! connection to a peer guest and a host connection to a native server, writes on both,
//! and is killed: its Unix stream is dropped with no goodbye. Rounds vary how it dies:
//! at a frame boundary, inside a frame, with connects still parked (a full backlog, a host
//! connect in flight), or with data sent to it unread. Asserted every round: the in-VM
//! peer gets every byte, then `end`/`close` (or `ECONNRESET`/`close` where the dead guest
//! left data unread); the native server gets every byte, then EOF (or a reset where the
//! dead guest left data unread). Every 100 rounds: a guest of another VM still echoes,
//! and the VM is back to its standing sockets. At the end: no session, socket, host
//! connection or parked call left, and (Linux) the process's fd count back to baseline.
//!
//! In a test binary of its own, with one test, so nothing else opens fds meanwhile.

mod support;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use serde_json::{json, Value};
use support::*;

const ROUNDS: usize = 1000;
const WRITE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    /// Between frames.
    Clean,
    /// Inside a frame (the stream ends mid-frame: a framing error).
    MidFrame,
    /// With a connect parked on a full backlog and a host connect in flight.
    Parked,
    /// With data sent to it (in-VM and from the host) unread.
    Unread,
}

const DEATHS: [Death; 4] = [Death::Clean, Death::MidFrame, Death::Parked, Death::Unread];

/// How a native connection ended: the round that wrote it (its first byte is a marker,
/// the next four the round number; `None` if it wrote fewer), bytes read, then EOF
/// (`true`) or a reset (`false`).
type Ending = (Option<u32>, usize, bool);

/// A native server on 127.0.0.1: each connection is read to its end on a thread of its
/// own (after a 4 KiB greeting if its marker is `G`); its ending is reported once the
/// socket is closed. Returns the port, the endings, and a count of connections accepted.
fn native_server() -> (u16, mpsc::Receiver<Ending>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream: TcpStream = stream.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            thread::spawn(move || {
                stream.set_read_timeout(Some(DEADLINE * 2)).unwrap();
                let (mut head, mut total, mut buf) = (Vec::new(), 0, vec![0u8; 16 * 1024]);
                let eof = loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => {
                            if total == 0 && buf[0] == b'G' {
                                let _ = stream.write_all(&[7u8; 4096]);
                            }
                            head.extend(&buf[..n.min(5 - head.len().min(5))]);
                            total += n;
                        }
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => break false,
                        Err(e) => panic!("native connection: {e}"),
                    }
                };
                drop(stream);
                let round =
                    (head.len() == 5).then(|| u32::from_be_bytes(head[1..5].try_into().unwrap()));
                let _ = tx.send((round, total, eof));
            });
        }
    });
    (port, rx, accepted)
}

/// The native connections' endings as they come: by round, and how many in all.
struct Endings {
    rx: mpsc::Receiver<Ending>,
    by_round: HashMap<u32, (usize, bool)>,
    count: usize,
    resets: usize,
}

impl Endings {
    fn receive(&mut self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        let (round, bytes, eof) = self
            .rx
            .recv_timeout(left)
            .expect("a host connection outlived its guest");
        self.count += 1;
        self.resets += usize::from(!eof);
        if let Some(round) = round {
            assert!(
                self.by_round.insert(round, (bytes, eof)).is_none(),
                "round {round} twice"
            );
        }
    }

    /// Waits for the ending of round `round`'s connection.
    fn of(&mut self, round: u32) -> (usize, bool) {
        let until = Instant::now() + DEADLINE;
        while !self.by_round.contains_key(&round) {
            self.receive(until);
        }
        self.by_round[&round]
    }

    /// Waits until every connection accepted so far has ended.
    fn all(&mut self, accepted: &AtomicUsize) {
        let until = Instant::now() + DEADLINE;
        while self.count < accepted.load(Ordering::SeqCst) {
            self.receive(until);
        }
    }
}

#[cfg(target_os = "linux")]
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The peer guest's view of one killed guest's connection `sock`: its bytes, then how
/// it ended.
fn peer_sees(peer: &mut RawGuest, sock: u64, bytes: usize, reset: bool, round: usize) {
    let got = peer.read_data(sock, bytes);
    assert!(
        got == pattern_at(0, bytes),
        "round {round}: in-VM bytes differ"
    );
    let (event, _) = peer.event();
    let expected = if reset { "error" } else { "end" };
    assert_eq!(event["event"], expected, "round {round}: {event}");
    if reset {
        assert_eq!(event["code"], "ECONNRESET", "round {round}: {event}");
    } else {
        // Half-closed, as a kernel socket whose peer exited: ending this side closes it.
        peer.send_call("net.shutdown", json!({"socket": sock}), b"", true);
    }
    let (close, _) = peer.event();
    assert_eq!(close["event"], "close", "round {round}: {close}");
    let got = (close["socket"].as_u64(), close["had_error"].as_bool());
    assert_eq!(got, (Some(sock), Some(reset)), "round {round}: {close}");
}

/// One round: attach, connect, write, die as `death` says.
fn round(h: &Harness, peer: &mut RawGuest, native: u16, death: Death, i: usize) {
    // Over the Unix socket, with a 1 KiB window, so data sent to it stays unread.
    let mut k = attach_with(h, Transport::Unix, "a", json!({"credit": 1024}));
    let reply = k
        .call("net.connect", json!({"path": "/peer"}), b"")
        .unwrap();
    let in_vm = reply["socket"].as_u64().unwrap();
    assert_eq!(k.event_of("connect").0["socket"], in_vm);
    let (accept, _, skipped) = peer.event_of("accept");
    assert!(skipped.is_empty(), "round {i}: {skipped:?}");
    let accepted = accept["socket"].as_u64().unwrap();
    let (host, _) = k.connect_ok("127.0.0.1", native);
    let mut to_native = pattern_at(0, WRITE);
    to_native[0] = if death == Death::Unread { b'G' } else { b'Q' };
    to_native[1..5].copy_from_slice(&(i as u32).to_be_bytes());
    for (sock, bytes) in [(in_vm, pattern_at(0, WRITE)), (host, to_native)] {
        for chunk in bytes.chunks(WRITE / 4) {
            k.send_call("net.write", json!({"socket": sock}), chunk, true);
        }
    }
    match death {
        Death::Clean => {}
        Death::MidFrame => {
            let frame = encode(&json!({"type": "call", "id": 99, "method": "stats"}), b"");
            k.send_raw(frame[..frame.len() / 2].to_vec());
        }
        Death::Parked => {
            k.send_call("net.connect", json!({"path": "/full"}), b"", false);
            k.send_call(
                "net.connect",
                json!({"host": "127.0.0.1", "port": native}),
                b"",
                false,
            );
            // Every other time, let the sidecar start them (calls run in order, and the
            // loop runs parked tasks before it reads the kill) rather than die at once.
            // (The host connect may have completed by then: its reply is skipped.)
            if i % 8 < 4 {
                let id = k.send_call("stats", json!({}), b"", false);
                let deadline = Instant::now() + DEADLINE;
                let stats = loop {
                    match k.recv(deadline).expect("a stats reply") {
                        Incoming::Reply {
                            id: got, outcome, ..
                        } if got == id => break outcome,
                        _ => {}
                    }
                };
                let parked = stats.unwrap()["session"]["parked_calls"].as_u64();
                assert!(parked >= Some(1), "round {i}: {parked:?}");
            }
        }
        Death::Unread => {
            // The peer writes past the window; the greeting comes from the host. Both
            // have reached the dead-to-be guest's sockets once their first data has.
            let write = json!({"socket": accepted});
            peer.call("net.write", write, &[1u8; 4096]).unwrap();
            let mut waiting = vec![in_vm, host];
            while !waiting.is_empty() {
                let (event, _) = k.event();
                if event["event"] == "data" {
                    waiting.retain(|s| event["socket"] != *s);
                }
            }
        }
    }
    drop(k); // the kill
    peer_sees(peer, accepted, WRITE, death == Death::Unread, i);
}

/// VM b's echo, on a connection that lives through all the rounds.
fn echo_in_vm_b(b_server: &mut RawGuest, s: u64, b_client: &mut RawGuest, c: u64, i: usize) {
    let message = format!("round {i}").into_bytes();
    b_client
        .call("net.write", json!({"socket": c}), &message)
        .unwrap();
    let got = b_server.read_data(s, message.len());
    b_server
        .call("net.write", json!({"socket": s}), &got)
        .unwrap();
    assert_eq!(
        b_client.read_data(c, message.len()),
        message,
        "VM b's echo, round {i}"
    );
}

#[test]
fn a_guest_killed_mid_stream_a_thousand_times_leaves_nothing_behind() {
    let (native, endings, accepted) = native_server();
    let h = allowing(&[&format!("127.0.0.1:{native}")]);
    // The peer: a listener, and a second one whose backlog (1) its own connection fills.
    let mut peer = h.guest(Transport::InProcess);
    peer.call("net.listen", json!({"path": "/peer"}), b"")
        .unwrap();
    peer.call("net.listen", json!({"path": "/full", "backlog": 1}), b"")
        .unwrap();
    peer.call("net.connect", json!({"path": "/full"}), b"")
        .unwrap();
    peer.event_of("accept");
    peer.event_of("connect");
    // VM b: a connection of its own, echoed through every 100 rounds.
    let mut b_server = h.guest_in(Transport::Unix, "b");
    let mut b_client = h.guest_in(Transport::InProcess, "b");
    let listened = b_server
        .call("net.listen", json!({"port": 7000}), b"")
        .unwrap();
    let (c, _) = b_client.connect_ok("127.0.0.1", 7000);
    let (accept, _, _) = b_server.event_of("accept");
    assert_eq!(accept["server"], listened["server"]);
    let s = accept["socket"].as_u64().unwrap();

    let standing = |stats: &Value| {
        stats["sessions"] == 3
            && stats["vms"]["a"]["sockets"] == 4
            && stats["host_connections"] == 0
            && stats["parked_calls"] == 0
    };
    let mut endings = Endings {
        rx: endings,
        by_round: HashMap::new(),
        count: 0,
        resets: 0,
    };
    // Warm-up: one round of each kind, so lasting runtime state exists before the count.
    // (Rounds are numbered on: the warm-up's are ROUNDS..)
    for (i, death) in DEATHS.into_iter().enumerate() {
        round(&h, &mut peer, native, death, ROUNDS + i);
    }
    endings.all(&accepted);
    settle(&h, "warm-up", standing);
    // The baseline, once a round trip through the sidecar's loop changes it no more (a
    // connection's fd closes as its tasks finish, just after its session ends).
    #[cfg(target_os = "linux")]
    let baseline = {
        let until = Instant::now() + DEADLINE;
        let mut last = open_fds();
        loop {
            h.stats();
            match open_fds() {
                now if now == last => break now,
                now => last = now,
            }
            assert!(Instant::now() < until, "the fd count never settled");
        }
    };

    let started = Instant::now();
    let mut parked = 1;
    for i in 0..ROUNDS {
        let death = DEATHS[i % DEATHS.len()];
        round(&h, &mut peer, native, death, i);
        parked += usize::from(death == Death::Parked);
        let (bytes, eof) = endings.of(i as u32);
        if death == Death::Unread {
            assert!(!eof || bytes == WRITE, "round {i}: {bytes} bytes, then EOF");
        } else {
            assert_eq!((bytes, eof), (WRITE, true), "round {i}: native ending");
        }
        if i % 100 == 99 {
            echo_in_vm_b(&mut b_server, s, &mut b_client, c, i);
            let stats = settle(&h, "sockets left after a kill", standing);
            assert_eq!(stats["vms"]["b"]["sockets"], 3, "{stats}");
            assert_eq!(stats["fallback_found_work"], 0, "{stats}");
        }
    }
    eprintln!("{ROUNDS} kills in {:?}", started.elapsed());

    // Every native connection ended, parked host connects included.
    endings.all(&accepted);
    eprintln!(
        "{} native connections, {} reset",
        endings.count, endings.resets
    );
    let stats = settle(&h, "the end", standing);
    let rounds = ROUNDS + DEATHS.len();
    assert_eq!(stats["framing_errors"], rounds / DEATHS.len(), "{stats}");
    // Every round parked its host connect; `Parked` rounds two more calls each, dropped
    // with their session.
    assert_eq!(stats["parked_calls_total"], rounds + 2 * parked, "{stats}");
    assert_eq!(
        stats["streams"],
        2 + 2,
        "peer's /full pair and VM b's pair: {stats}"
    );
    #[cfg(target_os = "linux")]
    {
        let until = Instant::now() + DEADLINE;
        while open_fds() != baseline {
            assert!(
                Instant::now() < until,
                "{} fds, baseline {baseline}",
                open_fds()
            );
            let _ = h.stats();
        }
        eprintln!(
            "fds after {ROUNDS} kills: {} (baseline {baseline}): 0 leaked",
            open_fds()
        );
    }
    // The peer ends too: its VM is empty.
    drop(peer);
    settle(&h, "the peer's end", |s| {
        s["vms"]["a"]["sockets"] == 0 && s["sessions"] == 2
    });
}
