//! Flow control end to end: nothing lost, nothing unbounded. A 64 MiB transfer through a
//! slow reader arrives byte-exact while the writer sees the high-water mark and `drain`,
//! and another session's echo keeps completing meanwhile; the hard limit; `end` after
//! buffered data; a close with unread data resets the peer.

mod support;

use std::thread;

use serde_json::{json, Value};
use support::{connect_pair, Conn, Harness, Mode, RawGuest, Setup, Transport};

/// A tiny deterministic PRNG (xorshift), so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= *b as u64;
        *hash = hash.wrapping_mul(0x100000001b3);
    }
}

/// Writes `total` bytes with synchronous writes, waiting for `drain` whenever a reply
/// says the high-water mark was passed. Returns (checksum, times need_drain was seen).
fn write_with_backpressure(writer: &mut RawGuest, socket: u64, total: usize) -> (u64, usize) {
    let mut hash = 0xcbf29ce484222325u64;
    let mut sent = 0usize;
    let mut drains = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    while sent < total {
        let n = chunk.len().min(total - sent);
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = ((sent + i) * 31 % 251) as u8;
        }
        fnv(&mut hash, &chunk[..n]);
        let reply = writer
            .call("net.write", json!({"socket": socket}), &chunk[..n])
            .unwrap();
        sent += n;
        if reply["need_drain"] == true {
            drains += 1;
            let (drain, _, _) = writer.event_of("drain");
            assert_eq!(drain["socket"], socket);
        }
    }
    (hash, drains)
}

/// Reads `total` bytes, granting credit back in small random steps.
fn slow_read(reader: &mut RawGuest, socket: u64, total: usize, seed: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut hash = 0xcbf29ce484222325u64;
    let mut got = 0usize;
    let mut owed = 0u64;
    while got < total {
        let (event, payload) = reader.event();
        assert_eq!(event["event"], "data", "{event}");
        fnv(&mut hash, &payload);
        got += payload.len();
        owed += payload.len() as u64;
        // Grant back only a random part of what was consumed, now and then.
        let step = 1 + rng.below(64 * 1024);
        if owed >= step {
            reader.send_call(
                "net.credit",
                json!({"socket": socket, "bytes": step}),
                b"",
                true,
            );
            owed -= step;
        }
        if owed > 0 && rng.below(8) == 0 {
            reader.send_call(
                "net.credit",
                json!({"socket": socket, "bytes": owed}),
                b"",
                true,
            );
            owed = 0;
        }
    }
    hash
}

fn transfer_through_a_slow_reader(setup: Setup, total: usize) {
    let h = Harness::new();
    let Conn {
        server: mut reader,
        server_sock,
        client: mut writer,
        client_sock,
        ..
    } = connect_pair(&h, setup, json!({"port": 0}), json!({}));
    // A bystander pair that must keep echoing while the transfer crawls.
    let mut bystander = connect_pair(
        &h,
        Transport::InProcess,
        json!({"path": "/echo"}),
        json!({"path": "/echo"}),
    );
    let write = thread::spawn(move || write_with_backpressure(&mut writer, client_sock, total));
    let read = thread::spawn(move || slow_read(&mut reader, server_sock, total, 7));
    let mut echoes = 0;
    while !write.is_finished() || echoes < 100 {
        bystander.client.send_call(
            "net.write",
            json!({"socket": bystander.client_sock}),
            b"ping",
            true,
        );
        assert_eq!(
            bystander.server.read_data(bystander.server_sock, 4),
            b"ping"
        );
        echoes += 1;
    }
    let (sent_hash, drains) = write.join().unwrap();
    let got_hash = read.join().unwrap();
    assert_eq!(sent_hash, got_hash, "bytes differ");
    assert!(drains > 0, "the writer never passed the high-water mark");
    assert!(echoes >= 100);
    let stats: Value = h.stats();
    assert_eq!(stats["fallback_found_work"], 0);
}

#[test]
fn sixty_four_mib_through_a_slow_reader_arrive_exactly_push_mode() {
    transfer_through_a_slow_reader(
        Setup {
            transport: Transport::Unix,
            mode: Mode::Push,
        },
        64 << 20,
    );
}

#[test]
fn a_transfer_through_a_slow_reader_arrives_exactly_poll_mode() {
    transfer_through_a_slow_reader(
        Setup {
            transport: Transport::InProcess,
            mode: Mode::Poll,
        },
        4 << 20,
    );
}

#[test]
fn past_the_hard_limit_a_write_fails_and_nothing_of_it_is_accepted() {
    let h = Harness::new();
    let mut c = connect_pair(&h, Transport::InProcess, json!({"port": 0}), json!({}));
    // The reader grants nothing: 256 KiB (its window) is delivered, the rest buffers.
    let mb = vec![1u8; 1 << 20];
    let mut last = json!(null);
    for _ in 0..4 {
        last = c
            .client
            .call("net.write", json!({"socket": c.client_sock}), &mb)
            .unwrap();
    }
    assert_eq!(last["need_drain"], true);
    let buffered = last["buffered"].as_u64().unwrap();
    assert_eq!(buffered, (4 << 20) - (256 << 10));
    let err = c
        .client
        .call("net.write", json!({"socket": c.client_sock}), &mb)
        .unwrap_err();
    assert_eq!(err["code"], "ENOBUFS");
    let reply = c
        .client
        .call("net.write", json!({"socket": c.client_sock}), b"")
        .unwrap();
    assert_eq!(
        reply["buffered"].as_u64().unwrap(),
        buffered,
        "part of the refused write was kept"
    );
}

#[test]
fn end_waits_for_the_data_buffered_ahead_of_it() {
    let h = Harness::new();
    for setup in support::TRANSPORTS {
        let mut c = connect_pair(&h, setup, json!({"port": 0}), json!({}));
        let data = vec![9u8; 300 * 1024];
        c.client
            .call("net.write", json!({"socket": c.client_sock}), &data)
            .unwrap();
        c.client
            .call("net.shutdown", json!({"socket": c.client_sock}), b"")
            .unwrap();
        // read_data grants credit as it goes, so the rest, then `end`, follow.
        assert_eq!(
            c.server.read_data(c.server_sock, data.len()).len(),
            data.len()
        );
        let (end, _) = c.server.event();
        assert_eq!(end["event"], "end", "{setup:?}");
    }
}

#[test]
fn closing_with_unread_data_resets_the_peer() {
    let h = Harness::new();
    for setup in support::TRANSPORTS {
        // By destroy, and by the guest going away.
        for by_destroy in [true, false] {
            let mut c = connect_pair(&h, setup, json!({"port": 0}), json!({}));
            // 300 KiB to the server, whose window is 256 KiB: 44 KiB stay unread.
            c.client
                .call(
                    "net.write",
                    json!({"socket": c.client_sock}),
                    &vec![0u8; 300 * 1024],
                )
                .unwrap();
            if by_destroy {
                c.server
                    .call("net.destroy", json!({"socket": c.server_sock}), b"")
                    .unwrap();
            } else {
                drop(c.server);
            }
            let (error, _, _) = c.client.event_of("error");
            assert_eq!(error["code"], "ECONNRESET", "{setup:?}");
            let (close, _) = c.client.event();
            assert_eq!(close["event"], "close");
            assert_eq!(close["had_error"], true);
        }
    }
}
