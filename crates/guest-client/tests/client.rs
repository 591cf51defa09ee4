//! The blocking client against a scripted fake sidecar: hello, calls, the event queue,
//! and what happens when the transport breaks.

mod common;

use std::time::{Duration, Instant};

use common::{data, deadline, end, FakeSidecar};
use guest_client::protocol::{
    capability, ErrorCode, EventBody, HelloParams, Mode, SocketId, StatsParams, WriteParams,
    WriteResult, PROTOCOL_VERSION,
};
use guest_client::{Client, ClientError, CLIENT_CAPABILITIES, LOCAL_SEQ};
use serde_json::json;

fn params() -> HelloParams {
    Client::hello_params("dev", "s3cret")
}

fn connected() -> (Client, FakeSidecar) {
    let (transport, mut fake) = FakeSidecar::in_process();
    let client = common::connect_with(transport, &mut fake, params());
    (client, fake)
}

#[test]
fn hello_sends_our_identity_and_returns_the_negotiated_result() {
    let (transport, mut fake) = FakeSidecar::in_process();
    let guest = common::spawn_guest(move || Client::connect(transport, params()));
    // The sidecar knows one capability the client does not, and lacks `dns`.
    let sidecar_caps = ["push", "noreply", "tcp", "unix", "credit", "teleport"];
    let sent = fake.accept_hello_with(&sidecar_caps);
    let client = guest.join().expect("hello");

    assert_eq!(sent.version, PROTOCOL_VERSION);
    assert_eq!((sent.vm.as_str(), sent.secret.as_str()), ("dev", "s3cret"));
    assert_eq!(sent.mode, Mode::Push);
    assert_eq!(sent.capabilities, CLIENT_CAPABILITIES);
    assert!(!sent
        .capabilities
        .iter()
        .any(|c| c == capability::EVENT_CHANNEL));

    assert_eq!(client.hello().session, 7);
    assert_eq!(
        client.hello().capabilities,
        ["push", "noreply", "tcp", "unix", "credit"]
    );
    assert!(client.has_capability(capability::CREDIT));
    assert!(!client.has_capability(capability::DNS));
    assert!(client.broken().is_none());
}

#[test]
fn a_wrong_secret_is_eacces_and_the_stream_is_closed() {
    let (transport, mut fake) = FakeSidecar::in_process();
    let guest = common::spawn_guest(move || Client::connect(transport, params()));
    let (id, _, _, _) = fake.expect::<HelloParams>();
    fake.reply_err(id, ErrorCode::Eacces, "unknown VM or wrong secret");
    fake.disconnect();
    let err = guest.join().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Eacces);
    assert!(
        matches!(err, ClientError::Wire(ref w) if w.message.contains("secret")),
        "{err:?}"
    );
    assert!(
        !err.is_fatal(),
        "the sidecar's answer, not a transport failure"
    );
}

#[test]
fn a_version_mismatch_is_a_typed_error() {
    let (transport, mut fake) = FakeSidecar::in_process();
    let guest = common::spawn_guest(move || Client::connect(transport, params()));
    let (id, _, _, _) = fake.expect::<HelloParams>();
    fake.reply_err(id, ErrorCode::Eprotonosupport, "this sidecar speaks 2");
    fake.disconnect();
    assert_eq!(guest.join().unwrap_err().code(), ErrorCode::Eprotonosupport);
}

#[test]
fn events_that_arrive_during_a_call_are_queued_in_order() {
    let (mut client, mut fake) = connected();
    let guest = common::spawn_guest(move || {
        let stats = client.call(&StatsParams {}).expect("stats");
        let mut events = Vec::new();
        for _ in 0..4 {
            events.push(client.next_event(Some(deadline())).unwrap().expect("event"));
        }
        let nothing_more = client.try_next_event().unwrap();
        (stats, events, nothing_more.is_none(), client.seq_gaps())
    });
    let (id, _, _, _) = fake.expect::<StatsParams>();
    fake.push(data(3), b"first");
    fake.push(data(3), b"second");
    fake.push(end(3), b"");
    fake.reply(id, &json!({"calls": 1}));
    fake.push(EventBody::socket_closed(SocketId(3), false), b"");

    let (stats, events, drained, gaps) = guest.join();
    assert_eq!(stats, json!({"calls": 1}));
    let seqs: Vec<u64> = events.iter().map(|(e, _)| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(events[0].1, b"first");
    assert_eq!(events[1].1, b"second");
    assert_eq!(events[2].0.body, end(3));
    assert_eq!(
        events[3].0.body,
        EventBody::socket_closed(SocketId(3), false)
    );
    assert!(drained);
    assert_eq!(gaps, 0);
}

#[test]
fn a_broken_transport_fails_the_pending_call_then_everything_after() {
    let (mut client, mut fake) = connected();
    let guest = common::spawn_guest(move || {
        let pending = client.call(&StatsParams {});
        let queued = client.next_event(Some(deadline()));
        let after_queue = client.next_event(Some(deadline()));
        let later_call = client.call(&StatsParams {});
        let later_send = client.send_noreply(
            &WriteParams {
                socket: SocketId(1),
            },
            b"x",
        );
        (pending, queued, after_queue, later_call, later_send)
    });
    let _ = fake.expect::<StatsParams>();
    fake.push(data(3), b"before the break");
    fake.disconnect();

    let (pending, queued, after_queue, later_call, later_send) = guest.join();
    let pending = pending.unwrap_err();
    assert_eq!(pending.code(), ErrorCode::Econnreset);
    assert!(
        matches!(pending, ClientError::Disconnected { .. }),
        "{pending:?}"
    );
    // The event received before the break is still delivered, then the error.
    let (event, payload) = queued.unwrap().expect("queued event");
    assert_eq!(
        (event.body, payload.as_slice()),
        (data(3), &b"before the break"[..])
    );
    assert_eq!(after_queue.unwrap_err().code(), ErrorCode::Econnreset);
    assert_eq!(later_call.unwrap_err().code(), ErrorCode::Econnreset);
    assert_eq!(later_send.unwrap_err().code(), ErrorCode::Econnreset);
}

#[test]
fn the_event_stream_reports_a_break_without_a_call() {
    let (mut client, mut fake) = connected();
    fake.disconnect();
    let err = client.next_event(None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Econnreset);
    assert!(client.broken().is_some());
}

#[test]
fn next_event_ends_at_its_deadline() {
    let (mut client, _fake) = connected();
    let until = Instant::now() + Duration::from_millis(30);
    assert!(client.next_event(Some(until)).unwrap().is_none());
    assert!(Instant::now() >= until);
    assert!(client.try_next_event().unwrap().is_none());
}

#[test]
fn noreply_calls_send_no_wait_and_their_failures_come_as_events() {
    let (mut client, mut fake) = connected();
    let id = client
        .send_noreply(
            &WriteParams {
                socket: SocketId(3),
            },
            b"payload",
        )
        .unwrap();
    let (got_id, params, payload, noreply) = fake.expect::<WriteParams>();
    assert_eq!(
        (got_id, params.socket, payload.as_slice(), noreply),
        (id, SocketId(3), &b"payload"[..], true)
    );
    fake.push(
        EventBody::Error {
            socket: Some(SocketId(3)),
            server: None,
            request: Some(id),
            code: ErrorCode::Epipe,
            message: "write after end".into(),
        },
        b"",
    );
    let (event, _) = client.next_event(Some(deadline())).unwrap().unwrap();
    assert_eq!(event.body.request(), Some(id));
    assert_eq!(event.seq, 1);
}

#[test]
fn without_the_noreply_capability_an_error_reply_becomes_an_error_event() {
    let (transport, mut fake) = FakeSidecar::in_process();
    let guest = common::spawn_guest(move || Client::connect(transport, params()));
    fake.accept_hello_with(&["push", "tcp", "unix", "credit"]);
    let mut client = guest.join().unwrap();
    assert!(!client.has_capability(capability::NOREPLY));

    let ok_id = client
        .send_noreply(
            &WriteParams {
                socket: SocketId(3),
            },
            b"a",
        )
        .unwrap();
    let bad_id = client
        .send_noreply(
            &WriteParams {
                socket: SocketId(3),
            },
            b"b",
        )
        .unwrap();
    // This sidecar ignores the flag and answers both.
    let (id, _, _, _) = fake.expect::<WriteParams>();
    assert_eq!(id, ok_id);
    fake.reply(id, &WriteResult::default());
    let (id, _, _, _) = fake.expect::<WriteParams>();
    assert_eq!(id, bad_id);
    fake.reply_err(id, ErrorCode::Epipe, "peer gone");
    fake.push(end(3), b"");

    // The success is dropped; the failure is an event about socket 3, then the real one.
    let (event, _) = client.next_event(Some(deadline())).unwrap().unwrap();
    assert_eq!(event.seq, LOCAL_SEQ);
    match event.body {
        EventBody::Error {
            socket,
            request,
            code,
            ..
        } => {
            assert_eq!(
                (socket, request, code),
                (Some(SocketId(3)), Some(bad_id), ErrorCode::Epipe)
            );
        }
        other => panic!("expected an error event, got {other:?}"),
    }
    let (event, _) = client.next_event(Some(deadline())).unwrap().unwrap();
    assert_eq!(event.body, end(3));
}

#[test]
fn an_error_reply_is_not_fatal() {
    let (mut client, mut fake) = connected();
    let guest = common::spawn_guest(move || {
        let unknown = client.call_value("net.teleport", json!({}), b"");
        let write = client.write(SocketId(9), b"abc");
        (unknown, write)
    });
    let received = fake.recv();
    assert_eq!(received.call.method, "net.teleport");
    fake.reply_err(received.call.id, ErrorCode::Enosys, "unknown method");
    let (id, params, payload, noreply) = fake.expect::<WriteParams>();
    assert_eq!(
        (params.socket, payload.as_slice(), noreply),
        (SocketId(9), &b"abc"[..], false)
    );
    fake.reply(
        id,
        &WriteResult {
            buffered: 3,
            need_drain: true,
        },
    );

    let (unknown, write) = guest.join();
    assert_eq!(unknown.unwrap_err().code(), ErrorCode::Enosys);
    assert_eq!(
        write.unwrap(),
        WriteResult {
            buffered: 3,
            need_drain: true
        }
    );
}

#[test]
fn a_garbage_header_from_the_sidecar_is_eproto_and_closes_the_session() {
    let (mut client, mut fake) = connected();
    let guest = common::spawn_guest(move || {
        let first = client.call(&StatsParams {});
        let second = client.call(&StatsParams {});
        (first, second)
    });
    let _ = fake.expect::<StatsParams>();
    fake.send_garbage_header();
    fake.expect_closed(); // the client dropped its transport
    let (first, second) = guest.join();
    assert_eq!(first.unwrap_err().code(), ErrorCode::Eproto);
    assert_eq!(second.unwrap_err().code(), ErrorCode::Eproto);
}

#[test]
fn a_frame_over_the_sidecars_limit_is_refused_locally() {
    let (transport, mut fake) = FakeSidecar::in_process();
    let guest = common::spawn_guest(move || Client::connect(transport, params()));
    let (id, _, _, _) = fake.expect::<HelloParams>();
    fake.reply(
        id,
        &json!({"version": PROTOCOL_VERSION, "session": 1, "capabilities": ["push"], "max_frame": 200}),
    );
    let mut client = guest.join().unwrap();
    assert_eq!(client.max_frame(), 200);
    let err = client.write(SocketId(1), &[0; 300]).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Emsgsize);
    assert!(!err.is_fatal());
    // Nothing was sent: the next frame the fake sees is the next call.
    let guest = common::spawn_guest(move || client.call(&StatsParams {}).map(|_| ()));
    let (id, _, _, _) = fake.expect::<StatsParams>();
    fake.reply(id, &json!({}));
    guest.join().unwrap();
}

#[test]
fn a_result_of_the_wrong_shape_fails_only_that_call() {
    let (mut client, mut fake) = connected();
    let guest = common::spawn_guest(move || {
        let listen = client.call(&guest_client::protocol::ListenParams::new(
            guest_client::protocol::Endpoint::unix("/l"),
        ));
        let after = client.call(&StatsParams {});
        (listen, after)
    });
    let (id, _, _, _) = fake.expect::<guest_client::protocol::ListenParams>();
    fake.reply(id, &json!({"server": "not a number"}));
    let (id, _, _, _) = fake.expect::<StatsParams>();
    fake.reply(id, &json!({"ok": true}));
    let (listen, after) = guest.join();
    let err = listen.unwrap_err();
    assert!(matches!(err, ClientError::BadReply { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Eproto);
    assert!(!err.is_fatal());
    assert_eq!(after.unwrap(), json!({"ok": true}));
}

#[test]
fn a_client_can_move_to_a_guest_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Client>();
    assert_send::<ClientError>();
}
