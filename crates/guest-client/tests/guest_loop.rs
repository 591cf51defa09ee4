//! The guest loop against a scripted fake sidecar: accept, echo, end of stream, credit,
//! write errors, cleanup, and a lost transport. The guest runs on its own thread; the
//! test thread plays the sidecar.

mod common;

use std::io;

use common::{accept_event, data, end, inet, FakeSidecar};
use guest_client::protocol::{
    Address, ConnectParams, ConnectResult, CreditParams, DestroyParams, Endpoint, ErrorCode,
    EventBody, HelloParams, ListenParams, ListenResult, ServerCloseParams, ServerId,
    ShutdownParams, SocketId, StatsParams, WriteParams,
};
use guest_client::{
    error_code, Client, GuestLoop, LoopCounters, TcpListener, TcpStream, UnixListener, UnixStream,
};
use serde_json::json;

/// Runs `guest` on a thread with a loop connected to the fake (hello answered here).
fn run_guest<T: Send + 'static>(
    hello: HelloParams,
    guest: impl FnOnce(GuestLoop) -> T + Send + 'static,
) -> (common::Guest<T>, FakeSidecar) {
    let (transport, mut fake) = FakeSidecar::in_process();
    let handle = common::spawn_guest(move || {
        let client = Client::connect(transport, hello).expect("hello");
        guest(GuestLoop::new(client).expect("loop"))
    });
    fake.accept_hello();
    (handle, fake)
}

fn hello() -> HelloParams {
    Client::hello_params("dev", "s3cret")
}

/// Answers a `net.listen` with `server`, checking the endpoint.
fn answer_listen(fake: &mut FakeSidecar, expected: Endpoint, server: u64, local: &Address) {
    let (id, params, _, _) = fake.expect::<ListenParams>();
    assert_eq!(params.endpoint, expected);
    fake.reply(
        id,
        &ListenResult {
            server: ServerId(server),
            local: local.clone(),
        },
    );
}

/// Answers a `net.connect` with `socket` as the sidecar does: a `noreply` connect (the
/// loop's non-blocking connect) gets a `connect` event carrying the call's id; a plain
/// one gets a reply, then a `connect` event (which the loop must take in stride).
fn answer_connect(fake: &mut FakeSidecar, expected: Endpoint, socket: u64) {
    let (id, params, _, noreply) = fake.expect::<ConnectParams>();
    assert_eq!(params.endpoint, expected);
    connected(fake, id, noreply, socket);
}

fn connected(fake: &mut FakeSidecar, id: u64, noreply: bool, socket: u64) {
    let (local, remote) = (Address::Unix(String::new()), Address::Unix("/srv".into()));
    if !noreply {
        fake.reply(
            id,
            &ConnectResult {
                socket: SocketId(socket),
                local: local.clone(),
                remote: remote.clone(),
            },
        );
    }
    fake.push(
        EventBody::Connect {
            socket: SocketId(socket),
            local,
            remote,
            request: noreply.then_some(id),
        },
        b"",
    );
}

fn expect_noreply<P: guest_client::protocol::CallParams + std::fmt::Debug>(
    fake: &mut FakeSidecar,
) -> (u64, P, Vec<u8>) {
    let (id, params, payload, noreply) = fake.expect::<P>();
    assert!(noreply, "{params:?} should be sent noreply");
    (id, params, payload)
}

#[test]
fn tcp_accept_and_echo_through_the_loop() {
    let local = inet("127.0.0.1:8080");
    let remote = inet("127.0.0.1:40001");
    let (guest, mut fake) = run_guest(hello(), |lp| {
        lp.block_on(async {
            let listener = TcpListener::bind(&lp, "127.0.0.1", 8080)?;
            let (stream, peer) = listener.accept().await?;
            let mut buf = [0; 64];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).await?;
            }
            let again = stream.read(&mut buf).await?;
            io::Result::Ok((
                peer,
                stream.local_addr(),
                listener.local_addr(),
                again,
                lp.counters(),
            ))
        })
    });
    answer_listen(&mut fake, Endpoint::inet("127.0.0.1", 8080), 1, &local);
    fake.push(accept_event(1, 2, &local, &remote), b"");
    // Taking the connection acknowledges it (frees its backlog slot at the sidecar).
    let (_, ack, _) = expect_noreply::<CreditParams>(&mut fake);
    assert_eq!(
        ack,
        CreditParams {
            socket: SocketId(2),
            bytes: 0
        }
    );
    for chunk in [&b"hello"[..], b"world, twice as long"] {
        fake.push(data(2), chunk);
        let (_, write, payload) = expect_noreply::<WriteParams>(&mut fake);
        assert_eq!((write.socket, payload.as_slice()), (SocketId(2), chunk));
    }
    fake.push(end(2), b"");
    // The stream, then the listener, are dropped at the end of the block.
    let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
    assert_eq!(destroy.socket, SocketId(2));
    let (_, close, _) = expect_noreply::<ServerCloseParams>(&mut fake);
    assert_eq!(close.server, ServerId(1));

    let (peer, stream_local, listener_local, again, counters) = guest.join().unwrap();
    assert_eq!(peer, remote);
    assert_eq!((stream_local, listener_local), (local.clone(), local));
    assert_eq!(again, 0, "read keeps returning 0 after end");
    assert_eq!((counters.timer_wakes, counters.polls), (0, 0));
    assert_eq!(counters.unrouted_events, 0);
    assert_eq!(counters.events, 4, "accept, 2 data, end: {counters:?}");
    // Every sleep of the loop ended with an event, none with a timer.
    assert_eq!(counters.idle_waits, counters.events, "{counters:?}");
}

#[test]
fn unix_connect_read_exact_then_end() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            stream.write_all(b"ping").await?;
            let mut reply = [0; 4];
            stream.read_exact(&mut reply).await?;
            let mut rest = [0; 10];
            let short = stream.read_exact(&mut rest).await.unwrap_err();
            let after = stream.read(&mut rest).await?;
            io::Result::Ok((reply, short.kind(), after, stream.peer_addr()))
        })
    });
    answer_connect(&mut fake, Endpoint::unix("/srv"), 3);
    let (_, _, payload) = expect_noreply::<WriteParams>(&mut fake);
    assert_eq!(payload, b"ping");
    // The reply comes split; then the peer ends with 3 bytes fewer than asked.
    fake.push(data(3), b"po");
    fake.push(data(3), b"ng");
    fake.push(data(3), b"1234567");
    fake.push(end(3), b"");
    let (reply, short, after, peer) = guest.join().unwrap();
    assert_eq!(&reply, b"pong");
    assert_eq!(short, io::ErrorKind::UnexpectedEof);
    assert_eq!(after, 0);
    assert_eq!(peer, Address::Unix("/srv".into()));
}

#[test]
fn credit_is_granted_in_batches_and_not_while_paused() {
    let mut hello = hello();
    hello.credit = 1000; // grants go out once 500 bytes were consumed
    let (guest, mut fake) = run_guest(hello, |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            let mut buf = [0; 200];
            stream.read_exact(&mut buf).await?;
            stream.read_exact(&mut buf).await?;
            lp.call(&StatsParams {})?; // fence: 400 consumed, no grant yet
            stream.read_exact(&mut buf).await?; // 600: one grant
            stream.pause()?;
            let mut big = [0; 600];
            stream.read_exact(&mut big).await?;
            lp.call(&StatsParams {})?; // fence: paused, no grant
            stream.resume()?; // grants what was read while paused
            io::Result::Ok(lp.counters())
        })
    });
    answer_connect(&mut fake, Endpoint::unix("/srv"), 3);
    for _ in 0..3 {
        fake.push(data(3), &[7; 200]);
    }
    fake.fence(|_| {}); // fails here if a grant came before 500 bytes
    let (_, grant, _) = expect_noreply::<CreditParams>(&mut fake);
    assert_eq!(
        grant,
        CreditParams {
            socket: SocketId(3),
            bytes: 600
        }
    );
    fake.push(data(3), &[8; 600]);
    fake.fence(|_| {}); // fails here if a paused socket granted
    let (_, grant, _) = expect_noreply::<CreditParams>(&mut fake);
    assert_eq!(grant.bytes, 600);
    let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
    assert_eq!(destroy.socket, SocketId(3));
    let counters: LoopCounters = guest.join().unwrap();
    assert_eq!(counters.credit_calls, 2);
}

#[test]
fn without_the_credit_capability_nothing_is_granted_or_acknowledged() {
    let (transport, mut fake) = FakeSidecar::in_process();
    let guest = common::spawn_guest(move || {
        let client = Client::connect(transport, hello()).expect("hello");
        let lp = GuestLoop::new(client).expect("loop");
        lp.block_on(async {
            let listener = UnixListener::bind(&lp, "/l")?;
            let (stream, _) = listener.accept().await?;
            let mut buf = vec![0; 300_000]; // past half the default window
            stream.read_exact(&mut buf).await?;
            lp.call(&StatsParams {})?;
            io::Result::Ok(lp.counters().credit_calls)
        })
    });
    fake.accept_hello_with(&["push", "noreply", "unix"]);
    let path = Address::Unix("/l".into());
    answer_listen(&mut fake, Endpoint::unix("/l"), 1, &path);
    fake.push(
        accept_event(1, 2, &path, &Address::Unix(String::new())),
        b"",
    );
    fake.push(data(2), &vec![1; 300_000]);
    fake.fence(|_| {}); // the next call must be this fence: no ack, no grant
    assert_eq!(guest.join().unwrap(), 0);
}

#[test]
fn a_failed_noreply_write_surfaces_on_the_next_operation() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        lp.block_on(async {
            let stream = TcpStream::connect(&lp, "localhost", 9000).await?;
            stream.write_all(b"first").await?;
            lp.call(&StatsParams {})?; // the error event arrives during this call
            let failed = stream.write_all(b"second").await.unwrap_err();
            let next = stream.write_all(b"third").await;
            io::Result::Ok((failed, next.is_ok()))
        })
    });
    answer_connect(&mut fake, Endpoint::inet("localhost", 9000), 4);
    let (write_id, _, _) = expect_noreply::<WriteParams>(&mut fake);
    fake.fence(|fake| {
        fake.push(
            EventBody::Error {
                socket: Some(SocketId(4)),
                server: None,
                request: Some(write_id),
                code: ErrorCode::Epipe,
                message: "the peer is gone".into(),
            },
            b"",
        );
    });
    let (_, _, payload) = expect_noreply::<WriteParams>(&mut fake);
    assert_eq!(payload, b"third", "the failed write was not sent");
    let (failed, next_ok) = guest.join().unwrap();
    assert_eq!(failed.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(error_code(&failed), ErrorCode::Epipe);
    assert!(failed.to_string().contains("the peer is gone"));
    assert!(next_ok, "a request error is reported once");
}

#[test]
fn connect_errors_keep_their_code() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        lp.block_on(async { TcpStream::connect(&lp, "127.0.0.1", 1).await.unwrap_err() })
    });
    // A non-blocking connect fails with an `error` event carrying the call's id.
    let (id, _, _, noreply) = fake.expect::<ConnectParams>();
    assert!(noreply);
    fake.push(
        EventBody::Error {
            socket: None,
            server: None,
            request: Some(id),
            code: ErrorCode::Econnrefused,
            message: "connect ECONNREFUSED 127.0.0.1:1".into(),
        },
        b"",
    );
    let err = guest.join();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(error_code(&err), ErrorCode::Econnrefused);
}

#[test]
fn without_noreply_connect_is_a_blocking_call() {
    let (transport, mut fake) = FakeSidecar::in_process();
    let guest = common::spawn_guest(move || {
        let client = Client::connect(transport, hello()).expect("hello");
        let lp = GuestLoop::new(client).expect("loop");
        lp.block_on(async {
            let refused = UnixStream::connect(&lp, "/nobody").await.unwrap_err();
            let stream = UnixStream::connect(&lp, "/srv").await?;
            let mut buf = [0; 8];
            let n = stream.read(&mut buf).await?;
            io::Result::Ok((error_code(&refused), buf[..n].to_vec()))
        })
    });
    fake.accept_hello_with(&["push", "unix", "credit"]);
    let (id, _, _, noreply) = fake.expect::<ConnectParams>();
    assert!(!noreply);
    fake.reply_err(id, ErrorCode::Enoent, "no such socket");
    answer_connect(&mut fake, Endpoint::unix("/srv"), 3);
    fake.push(data(3), b"hi");
    let (refused, got) = guest.join().unwrap();
    assert_eq!(refused, ErrorCode::Enoent);
    assert_eq!(got, b"hi");
}

#[test]
fn the_loop_keeps_serving_while_a_connect_is_in_flight() {
    let local = Address::Unix("/l".into());
    let (guest, mut fake) = run_guest(hello(), |lp| {
        let handle = lp.handle();
        let connecting = handle.spawn({
            let lp = handle.clone();
            async move { UnixStream::connect(&lp, "/slow").await.map(|s| s.id()) }
        });
        lp.block_on(async {
            // All of this happens while the connect above waits at the sidecar.
            let listener = UnixListener::bind(&lp, "/l")?;
            let (stream, _) = listener.accept().await?;
            let mut buf = [0; 8];
            let n = stream.read(&mut buf).await?;
            let served = buf[..n].to_vec();
            let connected_after = connecting.await?;
            io::Result::Ok((served, connected_after))
        })
    });
    let (connect_id, params, _, noreply) = fake.expect::<ConnectParams>();
    assert_eq!((params.endpoint, noreply), (Endpoint::unix("/slow"), true));
    answer_listen(&mut fake, Endpoint::unix("/l"), 1, &local);
    fake.push(
        accept_event(1, 2, &local, &Address::Unix(String::new())),
        b"",
    );
    let _ack = expect_noreply::<CreditParams>(&mut fake);
    fake.push(data(2), b"served");
    // Only now does the connect complete.
    connected(&mut fake, connect_id, true, 5);
    let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
    assert_eq!(
        destroy.socket,
        SocketId(5),
        "the connecting task dropped its stream"
    );
    let (served, connected_after) = guest.join().unwrap();
    assert_eq!(served, b"served");
    assert_eq!(connected_after, SocketId(5));
}

/// Polls a future once, then drops it (a program that stops waiting).
struct PollOnce<F>(Option<std::pin::Pin<Box<F>>>);

impl<F: std::future::Future> std::future::Future for PollOnce<F> {
    type Output = bool;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        let mut inner = self.0.take().expect("polled after completion");
        std::task::Poll::Ready(inner.as_mut().poll(cx).is_pending())
    }
}

#[test]
fn a_connect_the_program_stopped_waiting_for_is_destroyed_when_it_arrives() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        lp.block_on(async {
            let connect = UnixStream::connect(&lp, "/srv");
            let was_pending = PollOnce(Some(Box::pin(connect))).await;
            lp.call(&StatsParams {})?; // the connection arrives during this call
            io::Result::Ok((was_pending, lp.counters()))
        })
    });
    let (id, _, _, _) = fake.expect::<ConnectParams>();
    fake.fence(|fake| {
        connected(fake, id, true, 8);
        fake.push(data(8), b"nobody reads this");
    });
    let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
    assert_eq!(destroy.socket, SocketId(8));
    let (was_pending, counters) = guest.join().unwrap();
    assert!(was_pending);
    assert_eq!(
        counters.unrouted_events, 0,
        "late events of the orphan are recognised"
    );
}

#[test]
fn shutdown_sends_fin_and_later_writes_fail_locally() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            stream.shutdown().await?;
            stream.shutdown().await?; // idempotent: not sent twice
            let err = stream.write_all(b"late").await.unwrap_err();
            let mut buf = [0; 8];
            let n = stream.read(&mut buf).await?; // the other direction still works
            io::Result::Ok((error_code(&err), buf[..n].to_vec()))
        })
    });
    answer_connect(&mut fake, Endpoint::unix("/srv"), 3);
    let (id, params, _, noreply) = fake.expect::<ShutdownParams>();
    assert_eq!((params.socket, noreply), (SocketId(3), false));
    fake.reply(id, &json!({}));
    fake.push(data(3), b"still");
    let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
    assert_eq!(destroy.socket, SocketId(3));
    let (code, got) = guest.join().unwrap();
    assert_eq!(code, ErrorCode::Epipe);
    assert_eq!(got, b"still");
}

#[test]
fn tasks_waiting_on_different_sockets_each_get_their_own_data() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        let handle = lp.handle();
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let lp = handle.clone();
                handle.spawn(async move {
                    let stream = UnixStream::connect(&lp, &format!("/s{i}")).await?;
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).await?;
                    stream.write_all(&got).await?;
                    io::Result::Ok((stream.id(), got))
                })
            })
            .collect();
        lp.block_on(async {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await);
            }
            (results, lp.task_count())
        })
    });
    for i in 0..3 {
        answer_connect(&mut fake, Endpoint::unix(format!("/s{i}")), 10 + i);
    }
    // Interleaved, last socket first.
    fake.push(data(12), b"c1");
    fake.push(data(10), b"a1");
    fake.push(data(11), b"b1");
    fake.push(data(10), b"a2");
    for socket in [11, 12, 10] {
        fake.push(end(socket), b"");
        let (_, write, payload) = expect_noreply::<WriteParams>(&mut fake);
        let expected: &[u8] = match socket {
            10 => b"a1a2",
            11 => b"b1",
            _ => b"c1",
        };
        assert_eq!(
            (write.socket, payload.as_slice()),
            (SocketId(socket), expected)
        );
        let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
        assert_eq!(destroy.socket, SocketId(socket));
    }
    let (results, left) = guest.join();
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results[0], (SocketId(10), b"a1a2".to_vec()));
    assert_eq!(results[2], (SocketId(12), b"c1".to_vec()));
    assert_eq!(left, 0);
}

#[test]
fn a_dropped_listener_closes_and_destroys_connections_nobody_took() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        lp.block_on(async {
            let listener = UnixListener::bind(&lp, "/l")?;
            lp.call(&StatsParams {})?; // an accept arrives during this call
            drop(listener);
            lp.call(&StatsParams {})?; // a late accept arrives during this one
            io::Result::Ok(())
        })
    });
    let path = Address::Unix("/l".into());
    let peer = Address::Unix(String::new());
    answer_listen(&mut fake, Endpoint::unix("/l"), 1, &path);
    fake.fence(|fake| {
        fake.push(accept_event(1, 2, &path, &peer), b"");
        fake.push(data(2), b"unread");
    });
    let (_, close, _) = expect_noreply::<ServerCloseParams>(&mut fake);
    assert_eq!(close.server, ServerId(1));
    let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
    assert_eq!(destroy.socket, SocketId(2));
    fake.fence(|fake| {
        fake.push(accept_event(1, 3, &path, &peer), b"");
    });
    let (_, destroy, _) = expect_noreply::<DestroyParams>(&mut fake);
    assert_eq!(destroy.socket, SocketId(3));
    guest.join().unwrap();
}

#[test]
fn a_lost_transport_fails_pending_reads_and_accepts_with_econnreset() {
    let (guest, mut fake) = run_guest(hello(), |lp| {
        let handle = lp.handle();
        let listener = UnixListener::bind(&lp, "/l").unwrap();
        let accepting = handle.spawn(async move { listener.accept().await.map(drop) });
        lp.block_on(async {
            let stream = UnixStream::connect(&lp, "/srv").await?;
            let mut buf = [0; 16];
            let n = stream.read(&mut buf).await?;
            let before = buf[..n].to_vec();
            let read = stream.read(&mut buf).await.unwrap_err();
            let write = stream.write_all(b"x").await.unwrap_err();
            let accept = accepting.await.unwrap_err();
            let call = lp.call(&StatsParams {}).unwrap_err();
            io::Result::Ok((before, read, write, accept, call, lp.broken()))
        })
    });
    answer_listen(
        &mut fake,
        Endpoint::unix("/l"),
        1,
        &Address::Unix("/l".into()),
    );
    answer_connect(&mut fake, Endpoint::unix("/srv"), 3);
    fake.push(data(3), b"last words");
    fake.disconnect();
    let (before, read, write, accept, call, broken) = guest.join().unwrap();
    assert_eq!(
        before, b"last words",
        "data received before the break is delivered"
    );
    for err in [&read, &write, &accept] {
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(error_code(err), ErrorCode::Econnreset);
    }
    assert_eq!(call.code(), ErrorCode::Econnreset);
    assert!(broken.is_some());
}
