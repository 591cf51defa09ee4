//! Unit tests of the socket table's routing and lifetime rules.

use super::*;

fn addr() -> Address {
    Address::Unix("/x".into())
}

fn ev(body: EventBody) -> Event {
    Event::new(1, body)
}

fn accept(server: u64, socket: u64) -> Event {
    ev(EventBody::Accept {
        server: ServerId(server),
        socket: SocketId(socket),
        local: addr(),
        remote: addr(),
    })
}

#[test]
fn accept_then_data_before_the_program_takes_it() {
    let mut t = SocketTable::default();
    t.insert_server(ServerId(1));
    assert_eq!(t.dispatch(accept(1, 2), vec![]), Followup::Nothing);
    t.dispatch(
        ev(EventBody::Data {
            socket: SocketId(2),
        }),
        b"early".to_vec(),
    );
    let got = t
        .server_mut(ServerId(1))
        .unwrap()
        .poll_accept(Waker::noop());
    assert_eq!(got, Poll::Ready(Ok(SocketId(2))));
    assert!(t.claim(SocketId(2)).is_some());
    let mut buf = [0; 8];
    let n = t
        .stream_mut(SocketId(2))
        .unwrap()
        .poll_read(&mut buf, Waker::noop());
    assert_eq!(n, Poll::Ready(Ok(5)));
    assert_eq!(t.unrouted, 0);
}

#[test]
fn accept_for_a_dropped_listener_is_destroyed_and_its_backlog_orphaned() {
    let mut t = SocketTable::default();
    t.insert_server(ServerId(1));
    t.dispatch(accept(1, 2), vec![]);
    let release = t.release_server(ServerId(1));
    assert!(release.close);
    assert_eq!(release.orphans, vec![SocketId(2)]);
    assert_eq!(
        t.dispatch(accept(1, 3), vec![]),
        Followup::DestroyOrphan(SocketId(3))
    );
    t.dispatch(ev(EventBody::server_closed(ServerId(1))), vec![]);
    assert!(t.server_mut(ServerId(1)).is_err(), "forgotten after close");
}

#[test]
fn a_dropped_socket_lingers_until_close() {
    let mut t = SocketTable::default();
    t.insert_stream(SocketId(4), addr(), addr());
    assert!(t.release_stream(SocketId(4)), "destroy must be sent");
    t.dispatch(
        ev(EventBody::Data {
            socket: SocketId(4),
        }),
        b"late".to_vec(),
    );
    assert_eq!(t.unrouted, 0, "late data is recognised");
    t.dispatch(ev(EventBody::socket_closed(SocketId(4), false)), vec![]);
    assert!(t.stream_mut(SocketId(4)).is_err());
}

#[test]
fn losing_the_sidecar_fails_everything() {
    let mut t = SocketTable::default();
    t.insert_stream(SocketId(4), addr(), addr());
    t.insert_server(ServerId(5));
    t.fail_all(WireError::from_code(ErrorCode::Econnreset));
    let mut buf = [0; 1];
    let read = t
        .stream_mut(SocketId(4))
        .unwrap()
        .poll_read(&mut buf, Waker::noop());
    assert!(matches!(read, Poll::Ready(Err(e)) if e.code == ErrorCode::Econnreset));
    let acc = t
        .server_mut(ServerId(5))
        .unwrap()
        .poll_accept(Waker::noop());
    assert!(matches!(acc, Poll::Ready(Err(e)) if e.code == ErrorCode::Econnreset));
    assert!(!t.release_stream(SocketId(4)), "nothing to send any more");
    t.insert_stream(SocketId(6), addr(), addr());
    assert!(t.stream_mut(SocketId(6)).unwrap().check_writable().is_err());
}

fn connected(socket: u64, request: u64) -> Event {
    ev(EventBody::Connect {
        socket: SocketId(socket),
        local: addr(),
        remote: addr(),
        request: Some(request),
    })
}

#[test]
fn a_nonblocking_connect_settles_on_its_event() {
    let mut t = SocketTable::default();
    t.start_connect(7);
    assert!(t.poll_connect(7, Waker::noop()).is_pending());
    // A connect event for another request is not ours.
    assert_eq!(t.dispatch(connected(3, 99), vec![]), Followup::Nothing);
    assert_eq!(t.unrouted, 1);
    t.dispatch(connected(4, 7), vec![]);
    assert_eq!(
        t.poll_connect(7, Waker::noop()),
        Poll::Ready(Ok(SocketId(4)))
    );
    assert!(t.stream_mut(SocketId(4)).is_ok());
    // A failed one.
    t.start_connect(8);
    t.dispatch(
        ev(EventBody::Error {
            socket: None,
            server: None,
            request: Some(8),
            code: ErrorCode::Etimedout,
            message: String::new(),
        }),
        vec![],
    );
    let failed = t.poll_connect(8, Waker::noop());
    assert!(matches!(failed, Poll::Ready(Err(e)) if e.code == ErrorCode::Etimedout));
}

#[test]
fn abandoned_and_broken_connects() {
    let mut t = SocketTable::default();
    t.start_connect(1);
    assert_eq!(t.abandon_connect(1), None);
    assert_eq!(
        t.dispatch(connected(5, 1), vec![]),
        Followup::DestroyOrphan(SocketId(5))
    );
    // Settled but never collected, then abandoned: destroy it now.
    t.start_connect(2);
    t.dispatch(connected(6, 2), vec![]);
    assert_eq!(t.abandon_connect(2), Some(SocketId(6)));
    // Losing the sidecar fails connects in flight and any started later.
    t.start_connect(3);
    t.fail_all(WireError::from_code(ErrorCode::Econnreset));
    t.start_connect(4);
    for request in [3, 4] {
        let got = t.poll_connect(request, Waker::noop());
        assert!(matches!(got, Poll::Ready(Err(e)) if e.code == ErrorCode::Econnreset));
    }
}

#[test]
fn udp_events_route_to_udp_state_and_close_forgets_a_dropped_one() {
    let mut t = SocketTable::default();
    t.insert_udp(SocketId(9));
    let from = Address::Inet(([127, 0, 0, 1], 5).into());
    t.dispatch(
        ev(EventBody::Message {
            socket: SocketId(9),
            remote: from.clone(),
        }),
        b"dgram".to_vec(),
    );
    let mut buf = [0; 8];
    let got = t
        .udp_mut(SocketId(9))
        .unwrap()
        .poll_recv(&mut buf, Waker::noop());
    assert_eq!(got, Poll::Ready(Ok((5, from))));
    t.dispatch(
        ev(EventBody::socket_error(
            SocketId(9),
            WireError::from_code(ErrorCode::Econnrefused),
        )),
        vec![],
    );
    let err = t.udp_mut(SocketId(9)).unwrap().check_op().unwrap_err();
    assert_eq!(err.code, ErrorCode::Econnrefused);
    assert!(t.release_udp(SocketId(9)), "dgram.close must be sent");
    t.dispatch(ev(EventBody::socket_closed(SocketId(9), false)), vec![]);
    assert!(t.udp_mut(SocketId(9)).is_err(), "forgotten after close");
    assert_eq!(t.unrouted, 0);
    t.dispatch(
        ev(EventBody::Message {
            socket: SocketId(10),
            remote: addr(),
        }),
        vec![],
    );
    assert_eq!(t.unrouted, 1);
}

#[test]
fn poll_targets_are_the_waited_on_and_the_lingering_ids_in_order() {
    let mut t = SocketTable::default();
    t.insert_stream(SocketId(4), addr(), addr());
    t.insert_stream(SocketId(2), addr(), addr());
    t.insert_server(ServerId(1));
    t.insert_udp(SocketId(3));
    assert!(t.poll_targets().is_empty(), "nobody waits");
    let mut buf = [0; 4];
    let read = t
        .stream_mut(SocketId(4))
        .unwrap()
        .poll_read(&mut buf, Waker::noop());
    assert!(read.is_pending());
    let accept = t
        .server_mut(ServerId(1))
        .unwrap()
        .poll_accept(Waker::noop());
    assert!(accept.is_pending());
    let recv = t
        .udp_mut(SocketId(3))
        .unwrap()
        .poll_recv(&mut buf, Waker::noop());
    assert!(recv.is_pending());
    assert!(t.release_stream(SocketId(2)));
    assert_eq!(
        t.poll_targets(),
        [
            PollTarget::Stream(SocketId(2)),
            PollTarget::Stream(SocketId(4)),
            PollTarget::Server(ServerId(1)),
            PollTarget::Udp(SocketId(3)),
        ]
    );
    t.dispatch(ev(EventBody::socket_closed(SocketId(2), false)), vec![]);
    assert!(
        !t.wants(PollTarget::Stream(SocketId(2))),
        "closed: forgotten"
    );
    t.fail_all(WireError::from_code(ErrorCode::Econnreset));
    assert!(
        t.poll_targets().is_empty(),
        "nothing to poll without a session"
    );
}
