//! `UdpSocket` against the scripted fake: datagram boundaries (with truncation), sends
//! that fail locally before anything is sent, and `ECONNREFUSED` on a connected socket
//! reported by a later operation. The receive paths run in push and in poll mode.

mod common;

use std::io;

use common::{bare, hello_in, inet, run_loop, FakeSidecar, Polled};
use guest_client::protocol::{
    Address, BindParams, BindResult, CreateSocketParams, CreateSocketResult, DgramCloseParams,
    DgramConnectParams, DgramConnectResult, ErrorCode, EventBody, Mode, SendParams, SocketId,
    StatsParams, UdpType, MAX_UDP_PAYLOAD,
};
use guest_client::{error_code, UdpSocket};

/// Answers `dgram.createSocket` + `dgram.bind` with `socket` bound at `local`.
fn answer_bind(fake: &mut FakeSidecar, udp_type: UdpType, socket: u64, local: &Address) {
    let (id, create, _, _) = fake.expect::<CreateSocketParams>();
    assert_eq!(create.udp_type, udp_type);
    fake.reply(
        id,
        &CreateSocketResult {
            socket: SocketId(socket),
        },
    );
    let (id, bind, _, _) = fake.expect::<BindParams>();
    assert_eq!(bind.socket, SocketId(socket));
    fake.reply(
        id,
        &BindResult {
            local: local.clone(),
        },
    );
}

fn expect_send(fake: &mut FakeSidecar) -> (u64, SendParams, Vec<u8>) {
    let (id, params, payload, noreply) = fake.expect::<SendParams>();
    assert!(noreply, "datagrams are sent noreply");
    (id, params, payload)
}

fn message(socket: u64, from: &Address, bytes: &[u8]) -> common::Scripted {
    let body = EventBody::Message {
        socket: SocketId(socket),
        remote: from.clone(),
    };
    (body, bytes.to_vec())
}

fn boundaries_are_kept(mode: Mode) {
    let local = inet("127.0.0.1:41000");
    let peers = [
        inet("127.0.0.1:1"),
        inet("127.0.0.1:2"),
        inet("127.0.0.1:3"),
    ];
    let (guest, mut fake) = run_loop(hello_in(mode), None, |lp| {
        lp.block_on(async {
            let socket = UdpSocket::bind(&lp, "127.0.0.1", 0)?;
            assert_eq!(socket.local_addr()?, inet("127.0.0.1:41000"));
            assert_eq!(
                error_code(&socket.peer_addr().unwrap_err()),
                ErrorCode::Enotconn
            );
            for datagram in [&b"one"[..], b"", b"three"] {
                let n = socket.send_to(datagram, "127.0.0.1", 9).await?;
                assert_eq!(n, datagram.len());
            }
            let big = vec![0; MAX_UDP_PAYLOAD + 1];
            let err = socket.send_to(&big, "127.0.0.1", 9).await.unwrap_err();
            assert_eq!(error_code(&err), ErrorCode::Emsgsize);
            let err = socket.send(b"x").await.unwrap_err();
            assert_eq!(error_code(&err), ErrorCode::Edestaddrreq);
            let mut got = Vec::new();
            let mut buf = [0; 5];
            for _ in 0..3 {
                let (n, from) = socket.recv_from(&mut buf).await?;
                got.push((buf[..n].to_vec(), from));
            }
            io::Result::Ok(got)
        })
    });
    answer_bind(&mut fake, UdpType::Udp4, 5, &local);
    for expected in [&b"one"[..], b"", b"three"] {
        let (_, send, payload) = expect_send(&mut fake);
        assert_eq!(
            (send.host.as_deref(), send.port),
            (Some("127.0.0.1"), Some(9))
        );
        assert_eq!(payload, expected, "one frame per datagram");
    }
    fake.deliver(
        Polled::Udp(5),
        vec![
            message(5, &peers[0], b"hello world"),
            message(5, &peers[1], b""),
            message(5, &peers[2], b"xyz"),
        ],
    );
    let (_, close, _, noreply) = fake.expect::<DgramCloseParams>();
    assert_eq!((close.socket, noreply), (SocketId(5), true));
    let got = guest.join().unwrap();
    assert_eq!(
        got,
        [
            (b"hello".to_vec(), peers[0].clone()), // truncated to the buffer
            (Vec::new(), peers[1].clone()),
            (b"xyz".to_vec(), peers[2].clone()),
        ]
    );
}

#[test]
fn datagram_boundaries_are_kept_in_push_mode() {
    boundaries_are_kept(Mode::Push);
}

#[test]
fn datagram_boundaries_are_kept_in_poll_mode() {
    boundaries_are_kept(Mode::Poll);
}

fn refused(socket: u64, request: u64) -> EventBody {
    EventBody::Error {
        socket: Some(SocketId(socket)),
        server: None,
        request: Some(request),
        code: ErrorCode::Econnrefused,
        message: "nobody bound 127.0.0.1:9".into(),
    }
}

/// Connects socket 6 to 127.0.0.1:9 as the fake (create, connect).
fn answer_unbound_then_connect(fake: &mut FakeSidecar) {
    let (id, create, _, _) = fake.expect::<CreateSocketParams>();
    assert_eq!(create.udp_type, UdpType::Udp6);
    fake.reply(
        id,
        &CreateSocketResult {
            socket: SocketId(6),
        },
    );
    let (id, connect, _, _) = fake.expect::<DgramConnectParams>();
    assert_eq!((connect.host.as_deref(), connect.port), (Some("::1"), 9));
    let result = DgramConnectResult {
        local: inet("[::1]:41001"),
        remote: inet("[::1]:9"),
    };
    fake.reply(id, &result);
}

fn connected_refusal_surfaces_on_receive(mode: Mode) {
    let (guest, mut fake) = run_loop(hello_in(mode), None, |lp| {
        lp.block_on(async {
            let socket = UdpSocket::unbound(&lp, UdpType::Udp6)?;
            socket.connect("::1", 9)?;
            assert_eq!(socket.peer_addr()?, inet("[::1]:9"));
            socket.send(b"1").await?; // dropped: nobody bound the port
            socket.send(b"2").await?; // the sidecar refuses this one
            let mut buf = [0; 8];
            let err = socket.recv(&mut buf).await.unwrap_err();
            socket.send(b"3").await?; // reported once; the socket goes on
            io::Result::Ok(error_code(&err))
        })
    });
    answer_unbound_then_connect(&mut fake);
    let (_, first, _) = expect_send(&mut fake);
    assert_eq!(
        (first.host, first.port),
        (None, None),
        "to the connected peer"
    );
    let (second, _, _) = expect_send(&mut fake);
    fake.deliver(Polled::Udp(6), vec![bare(refused(6, second))]);
    let (_, _, third) = expect_send(&mut fake);
    assert_eq!(third, b"3");
    fake.expect::<DgramCloseParams>();
    assert_eq!(guest.join().unwrap(), ErrorCode::Econnrefused);
}

#[test]
fn connected_udp_refusal_surfaces_on_receive_in_push_mode() {
    connected_refusal_surfaces_on_receive(Mode::Push);
}

#[test]
fn connected_udp_refusal_surfaces_on_receive_in_poll_mode() {
    connected_refusal_surfaces_on_receive(Mode::Poll);
}

#[test]
fn connected_udp_refusal_fails_the_next_send_without_sending_it() {
    let (guest, mut fake) = run_loop(hello_in(Mode::Push), None, |lp| {
        lp.block_on(async {
            let socket = UdpSocket::unbound(&lp, UdpType::Udp6)?;
            socket.connect("::1", 9)?;
            socket.send(b"1").await?;
            socket.send(b"2").await?;
            lp.call(&StatsParams {})?; // the refusal arrives during this call
            let err = socket.send(b"3").await.unwrap_err();
            socket.send(b"4").await?;
            io::Result::Ok(error_code(&err))
        })
    });
    answer_unbound_then_connect(&mut fake);
    expect_send(&mut fake);
    let (second, _, _) = expect_send(&mut fake);
    fake.fence(|fake| {
        fake.push(refused(6, second), b"");
    });
    let (_, _, payload) = expect_send(&mut fake);
    assert_eq!(payload, b"4", "the refused send was not sent");
    fake.expect::<DgramCloseParams>();
    assert_eq!(guest.join().unwrap(), ErrorCode::Econnrefused);
}

#[test]
fn a_failed_bind_closes_the_created_socket() {
    let (guest, mut fake) = run_loop(hello_in(Mode::Push), None, |lp| {
        UdpSocket::bind(&lp, "::", 53).map(drop).unwrap_err()
    });
    let (id, create, _, _) = fake.expect::<CreateSocketParams>();
    assert_eq!(
        create.udp_type,
        UdpType::Udp6,
        "an IPv6 host makes a udp6 socket"
    );
    fake.reply(
        id,
        &CreateSocketResult {
            socket: SocketId(7),
        },
    );
    let (id, _, _, _) = fake.expect::<BindParams>();
    fake.reply_err(id, ErrorCode::Eaddrinuse, "port 53 is taken");
    let (_, close, _, _) = fake.expect::<DgramCloseParams>();
    assert_eq!(close.socket, SocketId(7));
    assert_eq!(error_code(&guest.join()), ErrorCode::Eaddrinuse);
}
