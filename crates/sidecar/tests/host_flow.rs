//! Flow control through host sockets (DESIGN.md, "Flow control"): nothing lost, nothing
//! unbounded, with a real kernel socket and a native peer on the far side.
//!
//! - Sidecar → guest: a guest that grants no credit gets exactly its window (hello's
//!   credit) and no more. The sidecar then stops reading the kernel socket, the kernel's
//!   buffers fill, and a native writer going as fast as it can is held back: it cannot
//!   finish. Once the guest grants credit as it reads, every byte arrives, in order, and
//!   the writer finishes.
//! - Guest → sidecar: writes to a native peer that does not read pass the high-water mark
//!   (`need_drain`), then the hard limit (`ENOBUFS`, nothing of that write taken); once
//!   the peer reads, `drain` comes, and every accepted byte arrives, in order.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

use serde_json::json;
use sidecar_protocol::DEFAULT_CREDIT;
use support::*;

/// The receive window of a socket: hello's credit (RawGuest asks for the default).
const WINDOW: usize = DEFAULT_CREDIT as usize;
/// The native writer's send buffer, fixed (so not autotuned).
const SNDBUF: usize = 64 * 1024;
const CHUNK: usize = 64 * 1024;

/// Bytes `offset..offset + len` of every stream in these tests: byte `i` is `i % 251`.
/// (Built from slices of one period, so that a debug build makes 30 MiB of it quickly.)
fn pattern(offset: usize, len: usize) -> Vec<u8> {
    let period: Vec<u8> = (0..251u8).collect();
    let mut out = Vec::with_capacity(len);
    let mut at = offset % 251;
    while out.len() < len {
        let n = (251 - at).min(len - out.len());
        out.extend_from_slice(&period[at..at + n]);
        at = 0;
    }
    out
}

fn is_pattern(offset: usize, bytes: &[u8]) -> bool {
    bytes == pattern(offset, bytes.len())
}

/// What the kernel can hold between a native writer and the sidecar's socket that does
/// not read: the writer's send buffer (fixed; Linux doubles what is asked) and the
/// sidecar socket's receive buffer, which autotuning may grow up to `tcp_rmem`'s maximum.
fn kernel_buffering() -> usize {
    let rmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(6 << 20);
    rmem_max + 4 * SNDBUF
}

/// A native server that writes `total` pattern bytes as fast as it can on a blocking
/// socket, publishing how many the kernel has taken so far, then closes.
fn native_writer(total: usize) -> (u16, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let progress = Arc::new(AtomicUsize::new(0));
    let written = Arc::clone(&progress);
    let writer = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let sock = socket2::SockRef::from(&stream);
        sock.set_send_buffer_size(SNDBUF).unwrap();
        let mut offset = 0;
        while offset < total {
            let n = CHUNK.min(total - offset);
            stream.write_all(&pattern(offset, n)).unwrap();
            offset += n;
            written.store(offset, Ordering::SeqCst);
        }
    });
    (port, progress, writer)
}

/// Reads `len` bytes of `data` for `socket`, having consumed `owed` bytes not granted
/// back yet. Grants credit back in lumps of a quarter window, as a program reading 64 KiB
/// at a time would. (Granting each `data` back as it comes keeps a window, once split,
/// in small pieces: tens of thousands of small events, a slow test, the same bytes.)
fn read_granting_in_lumps(g: &mut RawGuest, socket: u64, mut owed: usize, len: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(len);
    loop {
        if owed >= WINDOW / 4 || got.len() == len {
            let grant = json!({"socket": socket, "bytes": owed});
            g.send_call("net.credit", grant, b"", true);
            owed = 0;
        }
        if got.len() == len {
            return got;
        }
        let (event, payload) = g.event();
        assert_eq!(event["event"], "data", "{event}");
        assert_eq!(event["socket"], socket);
        owed += payload.len();
        got.extend(payload);
    }
}

#[test]
fn a_guest_without_credit_holds_a_fast_native_writer_back() {
    let h = allowing(&["127.0.0.1"]);
    // More than the guest's window and the kernel's buffers can hold, so the writer can
    // finish only if the guest reads (8 MiB with Linux's default `tcp_rmem`, more where
    // its maximum is larger).
    let bound = WINDOW + kernel_buffering();
    let total = (8 << 20).max(bound + (1 << 20));
    let setups = [
        Setup::from(Transport::InProcess),
        Setup {
            transport: Transport::Unix,
            mode: Mode::Poll,
        },
    ];
    for setup in setups {
        let (port, progress, writer) = native_writer(total);
        let mut g = h.guest(setup);
        let (sock, _) = g.connect_ok("127.0.0.1", port);

        // No credit granted: `data` up to the window, which the sidecar cannot pass.
        let mut got = Vec::new();
        while got.len() < WINDOW {
            let (event, payload) = g.event();
            assert_eq!(event["event"], "data", "{setup:?}: {event}");
            got.extend(payload);
        }
        assert_eq!(got.len(), WINDOW, "{setup:?}: data beyond the window");
        assert!(is_pattern(0, &got), "{setup:?}");
        // Nothing more is pushed, or pending for a poll.
        g.stats();
        assert_eq!(g.queued_events(), 0, "{setup:?}: data beyond the window");
        if setup.mode == Mode::Poll {
            let poll = g.call("net.poll", json!({"socket": sock}), b"");
            assert_eq!(poll, Ok(serde_json::Value::Null), "{setup:?}");
        }
        // And the writer is held back by the kernel's buffers, which nobody empties.
        let held = progress.load(Ordering::SeqCst);
        assert!(held < total, "{setup:?}: the writer finished unread");
        assert!(
            held <= bound,
            "{setup:?}: {held} bytes written, over {bound}"
        );

        // The guest consumes: all of it arrives, in order, and the writer finishes.
        let rest = read_granting_in_lumps(&mut g, sock, WINDOW, total - WINDOW);
        assert_eq!(rest.len(), total - WINDOW, "{setup:?}");
        assert!(is_pattern(WINDOW, &rest), "{setup:?}: bytes differ");
        writer.join().unwrap();
        assert_eq!(progress.load(Ordering::SeqCst), total);
        let (end, _) = g.event();
        assert_eq!(end["event"], "end", "{setup:?}: {end}");
        g.call("net.shutdown", json!({"socket": sock}), b"")
            .unwrap();
        let (close, _, _) = g.event_of("close");
        assert_eq!(close["had_error"], false);
    }
}

/// A native server that reads nothing until told to, then reads to the end of stream.
fn native_late_reader() -> (u16, mpsc::Sender<()>, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go, start) = mpsc::channel();
    let reader = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        start.recv().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    });
    (port, go, reader)
}

#[test]
fn writes_to_a_native_peer_that_does_not_read_pass_the_marks_then_drain() {
    let h = allowing(&["127.0.0.1"]);
    let hard_limit = sidecar::Limits::default().write_hard_limit;
    let write = 256 * 1024;
    for setup in TRANSPORTS {
        let (port, go, reader) = native_late_reader();
        let mut g = h.guest(setup);
        let (sock, _) = g.connect_ok("127.0.0.1", port);

        // The kernel takes what its buffers hold, the sidecar up to the hard limit.
        let (mut accepted, mut need_drain, mut refused) = (0, false, None);
        let mut buffered = 0;
        for _ in 0..64 {
            let chunk = pattern(accepted, write);
            match g.call("net.write", json!({"socket": sock}), &chunk) {
                Ok(reply) => {
                    accepted += write;
                    buffered = reply["buffered"].as_u64().unwrap() as usize;
                    assert!(buffered <= hard_limit, "{setup:?}: {reply}");
                    need_drain |= reply["need_drain"] == true;
                }
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        assert!(need_drain, "{setup:?}: never past the high-water mark");
        let refused = refused.expect("never past the hard limit");
        assert_eq!(refused["code"], "ENOBUFS", "{setup:?}: {refused}");
        // Refused only where it had to be (the buffer can only have shrunk since).
        assert!(buffered + write > hard_limit, "{setup:?}: {buffered}");

        // The peer reads: the buffer falls below the mark, `drain` comes.
        go.send(()).unwrap();
        let (drain, _, skipped) = g.event_of("drain");
        assert_eq!(drain["socket"], sock, "{setup:?}");
        assert!(skipped.is_empty(), "{setup:?}: {skipped:?}");
        // FIN after what is still buffered; the refused write left no byte behind.
        g.call("net.shutdown", json!({"socket": sock}), b"")
            .unwrap();
        let all = reader.join().unwrap();
        assert_eq!(all.len(), accepted, "{setup:?}");
        assert!(is_pattern(0, &all), "{setup:?}: bytes differ");
        let (end, _) = g.event();
        assert_eq!(end["event"], "end", "{setup:?}: {end}");
        let (close, _) = g.event();
        assert_eq!(
            (close["event"].as_str(), close["had_error"].as_bool()),
            (Some("close"), Some(false)),
            "{setup:?}: {close}"
        );
    }
}
