//! Guest → sidecar flow control against the scripted fake: `write_all` sends `noreply`
//! writes of at most 256 KiB, makes one write per 256 KiB a blocking call, and waits for
//! `drain` when that call's reply says `need_drain`. A simulated sidecar buffer checks
//! that a 64 MiB write arrives byte-exact while the buffer stays bounded, in both modes.

mod common;

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;

use common::{bare, hello_in, run_loop, FakeSidecar, Polled};
use guest_client::protocol::{
    Address, ConnectParams, ConnectResult, DestroyParams, ErrorCode, EventBody, Mode,
    ShutdownParams, SocketId, StatsParams, WriteParams, WriteResult,
};
use guest_client::{error_code, LoopCounters, UnixStream};
use serde_json::json;

const KIB: usize = 1024;

/// Answers the connect to socket 3 as either mode's sidecar does (push: a `noreply`
/// connect settled by its event; poll: a blocking call whose event the fake leaves out).
fn answer_connect(fake: &mut FakeSidecar) {
    let (id, _, _, noreply) = fake.expect::<ConnectParams>();
    let (local, remote) = (Address::Unix(String::new()), Address::Unix("/srv".into()));
    if !noreply {
        let result = ConnectResult {
            socket: SocketId(3),
            local: local.clone(),
            remote: remote.clone(),
        };
        fake.reply(id, &result);
    }
    if !fake.is_poll_mode() {
        let request = noreply.then_some(id);
        let event = EventBody::Connect {
            socket: SocketId(3),
            local,
            remote,
            request,
        };
        fake.push(event, b"");
    }
}

fn drain() -> EventBody {
    EventBody::Drain {
        socket: SocketId(3),
    }
}

/// Gives the other ready tasks a turn.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[test]
fn small_writes_make_one_blocking_write_per_256_kib() {
    let (guest, mut fake) = run_loop(hello_in(Mode::Push), None, |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            for i in 0..60u8 {
                stream.write_all(&[i; 10 * KIB]).await?;
            }
            io::Result::Ok(lp.counters())
        })
    });
    answer_connect(&mut fake);
    let mut blocking = Vec::new();
    for i in 0..60u8 {
        let (id, params, payload, noreply) = fake.expect::<WriteParams>();
        assert_eq!(
            (params.socket, payload.len(), payload[0]),
            (SocketId(3), 10 * KIB, i)
        );
        if !noreply {
            blocking.push(i + 1);
            let result = WriteResult {
                buffered: 10 * KIB as u64,
                need_drain: false,
            };
            fake.reply(id, &result);
        }
    }
    fake.expect::<DestroyParams>();
    let counters: LoopCounters = guest.join().unwrap();
    // 260 KiB went out noreply before each blocking write.
    assert_eq!(blocking, [27, 54]);
    assert_eq!((counters.sync_writes, counters.drain_waits), (2, 0));
}

fn need_drain_waits_for_drain(mode: Mode) {
    let (guest, mut fake) = run_loop(hello_in(mode), None, |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            stream.write_all(&vec![7; 300 * KIB]).await?;
            let more = lp.spawn(async move { stream.write_all(b"more").await.map(|()| stream) });
            yield_now().await; // the writer runs, and waits for `drain`
            lp.call(&StatsParams {})?; // fence: nothing was written before it
            let _stream = more.await?;
            io::Result::Ok(lp.counters())
        })
    });
    answer_connect(&mut fake);
    // At most 256 KiB per frame; the first 256 KiB went out noreply, so the
    // next write is blocking.
    let (_, _, first, noreply) = fake.expect::<WriteParams>();
    assert_eq!((first.len(), noreply), (256 * KIB, true));
    let (id, _, second, noreply) = fake.expect::<WriteParams>();
    assert_eq!((second.len(), noreply), (44 * KIB, false));
    let result = WriteResult {
        buffered: 300 * KIB as u64,
        need_drain: true,
    };
    fake.reply(id, &result);
    fake.fence(|_| {});
    fake.deliver(Polled::Socket(3), vec![bare(drain())]);
    let (_, _, more, _) = fake.expect::<WriteParams>();
    assert_eq!(more, b"more");
    fake.expect::<DestroyParams>();
    let counters: LoopCounters = guest.join().unwrap();
    assert_eq!((counters.sync_writes, counters.drain_waits), (1, 1));
}

#[test]
fn need_drain_makes_the_next_write_wait_for_drain_in_push_mode() {
    need_drain_waits_for_drain(Mode::Push);
}

#[test]
fn need_drain_makes_the_next_write_wait_for_drain_in_poll_mode() {
    need_drain_waits_for_drain(Mode::Poll);
}

#[test]
fn a_blocking_write_past_the_hard_limit_fails_write_all() {
    let (guest, mut fake) = run_loop(hello_in(Mode::Push), None, |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            let err = stream.write_all(&vec![1; 600 * KIB]).await.unwrap_err();
            io::Result::Ok(error_code(&err))
        })
    });
    answer_connect(&mut fake);
    fake.expect::<WriteParams>();
    let (id, _, _, noreply) = fake.expect::<WriteParams>();
    assert!(!noreply);
    fake.reply_err(id, ErrorCode::Enobufs, "past the hard limit");
    // Nothing more is sent for this write_all.
    fake.expect::<DestroyParams>();
    assert_eq!(guest.join().unwrap(), ErrorCode::Enobufs);
}

/// The sidecar's buffer for socket 3 as the fake models it.
const HIGH_WATER: u64 = 64 * KIB as u64;
const HARD_LIMIT: u64 = 4 * 1024 * KIB as u64;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i ^ (i >> 11) ^ (i >> 19)) as u8)
        .collect()
}

fn sixty_four_mib_arrive_byte_exact(mode: Mode) {
    let total = 64 * 1024 * KIB;
    let data = Arc::new(pattern(total));
    let sent = Arc::clone(&data);
    let (guest, mut fake) = run_loop(hello_in(mode), None, move |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            stream.write_all(&sent).await?;
            stream.shutdown().await?;
            io::Result::Ok(lp.counters())
        })
    });
    answer_connect(&mut fake);
    let (mut received, mut buffered, mut max_buffered) = (0usize, 0u64, 0u64);
    let mut drain_owed = false;
    loop {
        let call = fake.recv_any();
        match call.call.method.as_str() {
            "net.write" => {
                let len = call.payload.len();
                assert!(len <= 256 * KIB);
                assert!(
                    call.payload == data[received..received + len],
                    "bytes differ at {received}"
                );
                received += len;
                buffered += len as u64;
                max_buffered = max_buffered.max(buffered);
                assert!(buffered <= HARD_LIMIT, "the guest overran the hard limit");
                if call.call.noreply {
                    continue;
                }
                let need_drain = buffered > HIGH_WATER;
                fake.reply(
                    call.call.id,
                    &WriteResult {
                        buffered,
                        need_drain,
                    },
                );
                if need_drain {
                    // The peer takes everything; the buffer falls below the mark.
                    buffered = 0;
                    drain_owed = true;
                    if !fake.is_poll_mode() {
                        fake.push(drain(), b"");
                        drain_owed = false;
                    }
                }
            }
            "net.poll" => {
                let event = drain_owed.then(|| bare(drain()));
                drain_owed = false;
                fake.answer_poll(&call, Polled::Socket(3), event);
            }
            "net.shutdown" => {
                call.params::<ShutdownParams>();
                fake.reply(call.call.id, &json!({}));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    fake.expect::<DestroyParams>();
    let counters: LoopCounters = guest.join().unwrap();
    assert_eq!(received, total, "every byte arrived");
    // 256 KiB noreply, then 256 KiB blocking, then a drain wait: 128 times.
    assert_eq!(
        (counters.sync_writes, counters.drain_waits),
        (128, 128),
        "{counters:?}"
    );
    assert!(
        max_buffered <= 512 * KIB as u64,
        "buffer peaked at {max_buffered}"
    );
}

#[test]
fn a_64_mib_write_arrives_byte_exact_with_a_bounded_buffer_in_push_mode() {
    sixty_four_mib_arrive_byte_exact(Mode::Push);
}

#[test]
fn a_64_mib_write_arrives_byte_exact_with_a_bounded_buffer_in_poll_mode() {
    sixty_four_mib_arrive_byte_exact(Mode::Poll);
}
