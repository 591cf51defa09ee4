//! The guest loop over a poll-mode session (the bench's `guest-poll` lane) against the
//! scripted fake: the same program as in push mode, with events fetched by polls with
//! `wait_ms = 0` and a timer sleep whenever a pass over the waited-on ids finds nothing.
//! The exact poll sequences are asserted: the baseline must be neither slower (extra
//! polls, extra sleeps) nor faster (skipped sleeps) than the old polyfill.

mod common;

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use common::{
    accept_event, bare, closed, data_of, end, hello_in, inet, run_loop, FakeSidecar, Polled,
};
use guest_client::protocol::{
    Address, ConnectParams, ConnectResult, CreditParams, DestroyParams, ErrorCode, EventBody,
    ListenParams, ListenResult, Mode, ServerCloseParams, ServerId, SocketId, WriteParams,
};
use guest_client::{
    error_code, GuestLoop, LoopCounters, TcpListener, UnixListener, UnixStream,
    DEFAULT_POLL_INTERVAL,
};

fn answer_listen(fake: &mut FakeSidecar, server: u64, local: &Address) {
    let (id, _, _, _) = fake.expect::<ListenParams>();
    let result = ListenResult {
        server: ServerId(server),
        local: local.clone(),
    };
    fake.reply(id, &result);
}

/// A poll-mode connect is a blocking call (its `connect` event could not be polled
/// before the reply names the socket); the event then waits in the socket's queue.
fn answer_blocking_connect(fake: &mut FakeSidecar, socket: u64) -> EventBody {
    let (id, _, _, noreply) = fake.expect::<ConnectParams>();
    assert!(!noreply, "poll mode connects with a blocking call");
    let (local, remote) = (Address::Unix(String::new()), Address::Unix("/srv".into()));
    let result = ConnectResult {
        socket: SocketId(socket),
        local: local.clone(),
        remote: remote.clone(),
    };
    fake.reply(id, &result);
    EventBody::Connect {
        socket: SocketId(socket),
        local,
        remote,
        request: None,
    }
}

/// The echo server program both modes run.
fn echo_program(lp: &GuestLoop) -> io::Result<(LoopCounters, Duration)> {
    lp.block_on(async {
        let listener = TcpListener::bind(lp, "127.0.0.1", 8080)?;
        let started = Instant::now();
        let (stream, _) = listener.accept().await?;
        let waited = started.elapsed();
        let mut buf = [0; 64];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).await?;
        }
        Ok((lp.counters(), waited))
    })
}

/// Answers from a per-id queue; `null` once a queue is empty.
fn scripted(
    mut answers: Vec<(Polled, Vec<Option<common::Scripted>>)>,
) -> impl FnMut(Polled) -> Option<common::Scripted> {
    let mut queues: Vec<(Polled, VecDeque<Option<common::Scripted>>)> = answers
        .drain(..)
        .map(|(target, list)| (target, list.into()))
        .collect();
    move |target| {
        let (_, queue) = queues
            .iter_mut()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("unexpected poll of {target:?}"));
        queue.pop_front().flatten()
    }
}

#[test]
fn poll_mode_echo_polls_with_wait_0_and_sleeps_on_the_timer() {
    let local = inet("127.0.0.1:8080");
    let remote = inet("127.0.0.1:40001");
    let (guest, mut fake) = run_loop(hello_in(Mode::Poll), None, |lp| echo_program(&lp));
    assert!(fake.is_poll_mode());
    answer_listen(&mut fake, 1, &local);
    // Idle with a task in accept(): three empty polls, each followed by a timer sleep.
    let write = fake.serve_polls(scripted(vec![
        (
            Polled::Server(1),
            vec![
                None,
                None,
                None,
                Some(bare(accept_event(1, 2, &local, &remote))),
            ],
        ),
        (Polled::Socket(2), vec![Some(data_of(2, b"hello"))]),
    ]));
    // The next call is the echo: a polled accept needs no acknowledgement.
    let params = write.params::<WriteParams>();
    assert_eq!(
        (params.socket, write.payload.as_slice()),
        (SocketId(2), &b"hello"[..])
    );
    assert!(write.call.noreply);
    let destroy = fake.serve_polls(scripted(vec![(
        Polled::Socket(2),
        vec![None, None, Some(bare(end(2)))],
    )]));
    assert_eq!(destroy.params::<DestroyParams>().socket, SocketId(2));
    let (_, close, _, _) = fake.expect::<ServerCloseParams>();
    assert_eq!(close.server, ServerId(1));
    let (counters, waited) = guest.join().unwrap();

    use Polled::{Server, Socket};
    assert_eq!(
        fake.poll_log,
        [
            (Server(1), false),
            (Server(1), false),
            (Server(1), false),
            (Server(1), true),  // accept; the server has no waiter any more
            (Socket(2), true),  // data
            (Socket(2), false), // polled again at once after its event
            (Socket(2), false), // after one timer sleep
            (Socket(2), true),  // end, after a second sleep
        ]
    );
    assert_eq!(
        (counters.polls, counters.empty_polls),
        (8, 5),
        "{counters:?}"
    );
    // Every empty pass slept once, and only those.
    assert_eq!(counters.timer_wakes, 5, "{counters:?}");
    assert_eq!(counters.idle_waits, 8, "{counters:?}");
    assert_eq!((counters.events, counters.unrouted_events), (3, 0));
    assert_eq!(counters.credit_calls, 0);
    assert!(
        waited >= 3 * DEFAULT_POLL_INTERVAL,
        "three timer sleeps before the accept, took {waited:?}"
    );
}

#[test]
fn the_same_echo_program_in_push_mode_has_no_timer_and_no_polls() {
    let local = inet("127.0.0.1:8080");
    let remote = inet("127.0.0.1:40001");
    let (guest, mut fake) = run_loop(hello_in(Mode::Push), None, |lp| echo_program(&lp));
    answer_listen(&mut fake, 1, &local);
    fake.push(accept_event(1, 2, &local, &remote), b"");
    let (_, ack, _, _) = fake.expect::<CreditParams>();
    assert_eq!(ack.bytes, 0, "push mode acknowledges the accept");
    fake.push(common::data(2), b"hello");
    let (_, _, payload, _) = fake.expect::<WriteParams>();
    assert_eq!(payload, b"hello");
    fake.push(end(2), b"");
    fake.expect::<DestroyParams>();
    fake.expect::<ServerCloseParams>();
    let (counters, _) = guest.join().unwrap();
    assert_eq!(
        (counters.polls, counters.timer_wakes),
        (0, 0),
        "{counters:?}"
    );
    assert!(fake.poll_log.is_empty());
}

#[test]
fn polled_events_come_in_order_and_close_ends_polling_of_the_id() {
    let hello = hello_in(Mode::Poll);
    let (guest, mut fake) = run_loop(hello, Some(Duration::from_millis(1)), |lp| {
        lp.block_on(async {
            let listener = UnixListener::bind(&lp, "/l")?;
            let stream = UnixStream::connect(&lp, "/srv").await?;
            let mut buf = [0; 6];
            stream.read_exact(&mut buf).await?;
            // Dropped with its `close` still to come: the loop collects it.
            drop(stream);
            let (next, _) = listener.accept().await?;
            io::Result::Ok((buf, next.id(), lp.counters()))
        })
    });
    let path = Address::Unix("/l".into());
    answer_listen(&mut fake, 1, &path);
    let connect_event = answer_blocking_connect(&mut fake, 3);
    let destroy = fake.serve_polls(scripted(vec![(
        Polled::Socket(3),
        vec![
            Some(bare(connect_event)),
            Some(data_of(3, b"ab")),
            Some(data_of(3, b"cd")),
            Some(data_of(3, b"ef")),
        ],
    )]));
    assert_eq!(destroy.params::<DestroyParams>().socket, SocketId(3));
    assert!(fake.poll_log.iter().all(|(t, _)| *t == Polled::Socket(3)));
    let accepted = bare(accept_event(1, 4, &path, &Address::Unix(String::new())));
    let mut accepted = Some(accepted);
    let mut socket3_polls = 0;
    let destroy = fake.serve_polls(|target| match target {
        Polled::Socket(3) => {
            socket3_polls += 1;
            match socket3_polls {
                1 => Some(data_of(3, b"late")),
                2 => Some(bare(closed(3))),
                _ => panic!("socket 3 polled after its close"),
            }
        }
        // The accept comes only once socket 3 is closed, so the loop keeps polling both.
        Polled::Server(1) if socket3_polls >= 2 => accepted.take(),
        Polled::Server(1) => None,
        other => panic!("unexpected poll of {other:?}"),
    });
    assert_eq!(destroy.params::<DestroyParams>().socket, SocketId(4));
    fake.expect::<ServerCloseParams>();
    let (buf, next, counters) = guest.join().unwrap();
    assert_eq!(&buf, b"abcdef");
    assert_eq!(next, SocketId(4));
    assert_eq!(
        counters.unrouted_events, 0,
        "late data of the dropped socket is known"
    );
}

#[test]
fn credit_is_granted_for_polled_data() {
    let mut hello = hello_in(Mode::Poll);
    hello.credit = 1000;
    let (guest, mut fake) = run_loop(hello, None, |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            let mut buf = [0; 600];
            stream.read_exact(&mut buf).await?;
            io::Result::Ok(lp.counters())
        })
    });
    answer_blocking_connect(&mut fake, 3);
    let grant = fake.serve_polls(scripted(vec![(
        Polled::Socket(3),
        vec![
            None,
            Some(data_of(3, &[1; 300])),
            Some(data_of(3, &[2; 300])),
        ],
    )]));
    let grant = grant.params::<CreditParams>();
    assert_eq!((grant.socket, grant.bytes), (SocketId(3), 600));
    fake.expect::<DestroyParams>();
    let counters = guest.join().unwrap();
    assert_eq!(counters.credit_calls, 1);
    assert_eq!(counters.timer_wakes, 1, "one empty pass before the data");
}

#[test]
fn a_poll_the_sidecar_refuses_fails_the_waiter_and_stops_polling_that_id() {
    let (guest, mut fake) = run_loop(hello_in(Mode::Poll), None, |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            let mut buf = [0; 8];
            let err = stream.read(&mut buf).await.unwrap_err();
            let again = stream.read(&mut buf).await.unwrap_err();
            lp.call(&guest_client::protocol::StatsParams {})?;
            io::Result::Ok((error_code(&err), error_code(&again)))
        })
    });
    answer_blocking_connect(&mut fake, 3);
    let poll = fake.recv_any();
    assert_eq!(poll.call.method, "net.poll");
    fake.reply_err(poll.call.id, ErrorCode::Ebadf, "unknown socket 3");
    // Not polled again: the next call is the program's fence.
    let (id, _, _, _) = fake.expect::<guest_client::protocol::StatsParams>();
    fake.reply(id, &serde_json::json!({}));
    let (first, again) = guest.join().unwrap();
    assert_eq!((first, again), (ErrorCode::Ebadf, ErrorCode::Ebadf));
}
