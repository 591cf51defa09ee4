//! Every message kind (a call per method, a reply per result type, an error reply, every
//! event kind) encoded with the typed encoders, concatenated into one stream, fed to the
//! decoder one byte at a time, and compared with what was sent.

use serde::Serialize;
use serde_json::Value;
use sidecar_protocol::*;

fn inet(s: &str) -> Address {
    Address::Inet(s.parse().unwrap())
}

struct Wire {
    bytes: Vec<u8>,
    expected: Vec<(Header, Vec<u8>)>,
}

impl Wire {
    fn call<P: CallParams + Clone>(&mut self, id: u64, params: P, payload: &[u8]) {
        encode_call(
            id,
            &params,
            false,
            payload,
            DEFAULT_MAX_FRAME,
            &mut self.bytes,
        )
        .unwrap();
        let header = Header::Call(Call::new(id, params));
        self.expected.push((header, payload.to_vec()));
    }

    fn reply<T: Serialize>(&mut self, id: u64, result: &T, payload: &[u8]) {
        encode_reply_ok(id, result, payload, DEFAULT_MAX_FRAME, &mut self.bytes).unwrap();
        let header = Header::Reply(Reply::ok_typed(id, result).unwrap());
        self.expected.push((header, payload.to_vec()));
    }

    fn event(&mut self, event: Event, payload: &[u8]) {
        encode_event(&event, payload, DEFAULT_MAX_FRAME, &mut self.bytes).unwrap();
        self.expected.push((Header::Event(event), payload.to_vec()));
    }
}

fn build() -> Wire {
    let mut w = Wire {
        bytes: Vec::new(),
        expected: Vec::new(),
    };
    let s = SocketId(3);
    let srv = ServerId(2);

    // Calls: one per method.
    let mut hello = HelloParams::new("dev", "s3cret");
    hello.capabilities = capability::to_owned_list(capability::ALL);
    hello.cwd = Some("/app".into());
    w.call(1, hello, b"");
    w.call(2, ConnectParams::new(Endpoint::inet("localhost", 80)), b"");
    w.call(3, ListenParams::new(Endpoint::unix("srv.sock")), b"");
    w.call(4, WriteParams { socket: s }, b"GET / HTTP/1.1\r\n\r\n");
    w.call(5, ShutdownParams { socket: s }, b"");
    w.call(6, DestroyParams::new(s), b"");
    w.call(7, ServerCloseParams { server: srv }, b"");
    w.call(
        8,
        SetNoDelayParams {
            socket: s,
            enable: true,
        },
        b"",
    );
    w.call(
        9,
        SetKeepAliveParams {
            socket: s,
            enable: true,
            initial_delay_ms: Some(1000),
        },
        b"",
    );
    w.call(
        10,
        PollParams {
            socket: s,
            wait_ms: 50,
        },
        b"",
    );
    w.call(
        11,
        ServerPollParams {
            server: srv,
            wait_ms: 0,
        },
        b"",
    );
    w.call(
        12,
        CreditParams {
            socket: s,
            bytes: 65536,
        },
        b"",
    );
    w.call(
        13,
        CreateSocketParams {
            udp_type: UdpType::Udp4,
        },
        b"",
    );
    w.call(
        14,
        BindParams {
            socket: s,
            host: None,
            port: 0,
            reuse_addr: false,
        },
        b"",
    );
    w.call(
        15,
        DgramConnectParams {
            socket: s,
            host: Some("127.0.0.1".into()),
            port: 53,
        },
        b"",
    );
    w.call(21, DgramDisconnectParams { socket: s }, b"");
    w.call(
        16,
        SendParams {
            socket: s,
            host: Some("::1".into()),
            port: Some(9),
        },
        &[0, 1, 2, 255],
    );
    w.call(
        17,
        DgramPollParams {
            socket: s,
            wait_ms: 1,
        },
        b"",
    );
    w.call(18, DgramCloseParams { socket: s }, b"");
    let group = || "239.1.2.3".to_owned();
    let add = AddMembershipParams {
        socket: s,
        group: group(),
        interface: Some("0.0.0.0".into()),
    };
    w.call(101, add, b"");
    let drop_group = DropMembershipParams {
        socket: s,
        group: group(),
        interface: None,
    };
    w.call(102, drop_group, b"");
    let broadcast = SetBroadcastParams {
        socket: s,
        enable: true,
    };
    w.call(103, broadcast, b"");
    w.call(104, SetTtlParams { socket: s, ttl: 64 }, b"");
    w.call(105, SetMulticastTtlParams { socket: s, ttl: 0 }, b"");
    let loopback = SetMulticastLoopbackParams {
        socket: s,
        enable: false,
    };
    w.call(106, loopback, b"");
    let interface = SetMulticastInterfaceParams {
        socket: s,
        interface: "127.0.0.1".into(),
    };
    w.call(107, interface, b"");
    w.call(
        19,
        LookupParams {
            host: "localhost".into(),
            family: Family::Any,
        },
        b"",
    );
    w.call(20, StatsParams {}, b"");

    // Replies: one per result shape, plus an error.
    w.reply(
        1,
        &HelloResult {
            version: PROTOCOL_VERSION,
            session: 1,
            capabilities: vec!["push".into()],
            event_channel_token: Some("tok".into()),
            max_frame: DEFAULT_MAX_FRAME as u32,
        },
        b"",
    );
    w.reply(
        2,
        &ConnectResult {
            socket: s,
            local: inet("127.0.0.1:40000"),
            remote: inet("127.0.0.1:80"),
        },
        b"",
    );
    w.reply(
        3,
        &ListenResult {
            server: srv,
            local: Address::Unix("/srv.sock".into()),
        },
        b"",
    );
    w.reply(
        4,
        &WriteResult {
            buffered: 70_000,
            need_drain: true,
        },
        b"",
    );
    w.reply(5, &Empty {}, b"");
    w.reply(10, &None::<Event>, b"");
    w.reply(
        11,
        &Some(Event::new(5, EventBody::Data { socket: s })),
        b"polled bytes",
    );
    w.reply(
        13,
        &CreateSocketResult {
            socket: SocketId(4),
        },
        b"",
    );
    w.reply(
        14,
        &BindResult {
            local: inet("0.0.0.0:50000"),
        },
        b"",
    );
    w.reply(
        15,
        &DgramConnectResult {
            local: inet("127.0.0.1:50000"),
            remote: inet("127.0.0.1:53"),
        },
        b"",
    );
    w.reply(16, &SendResult { bytes: 4 }, b"");
    w.reply(
        19,
        &LookupResult {
            addresses: vec![LookupAddress::from(
                "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            )],
        },
        b"",
    );
    w.reply(20, &serde_json::json!({"events_pushed": {"data": 3}}), b"");
    let err = WireError::new(ErrorCode::Econnrefused, "127.0.0.1:81");
    encode_reply_err(21, &err, DEFAULT_MAX_FRAME, &mut w.bytes).unwrap();
    w.expected
        .push((Header::Reply(Reply::err(21, err)), Vec::new()));

    // Events: every kind.
    let bodies = [
        (
            EventBody::Accept {
                server: srv,
                socket: SocketId(7),
                local: inet("127.0.0.1:80"),
                remote: inet("127.0.0.1:40000"),
            },
            &b""[..],
        ),
        (
            EventBody::Connect {
                socket: s,
                local: inet("127.0.0.1:40000"),
                remote: inet("127.0.0.1:80"),
                request: Some(2),
            },
            b"",
        ),
        (EventBody::Data { socket: s }, b"HTTP/1.1 200 OK\r\n"),
        (EventBody::End { socket: s }, b""),
        (
            EventBody::request_error(4, Some(s), WireError::from_code(ErrorCode::Epipe)),
            b"",
        ),
        (EventBody::socket_closed(s, true), b""),
        (EventBody::server_closed(srv), b""),
        (EventBody::Drain { socket: s }, b""),
        (
            EventBody::Pressure {
                socket: s,
                buffered: 65_536,
            },
            b"",
        ),
        (
            EventBody::Message {
                socket: SocketId(4),
                remote: inet("127.0.0.1:53"),
            },
            b"",
        ),
    ];
    for (seq, (body, payload)) in bodies.into_iter().enumerate() {
        w.event(Event::new(seq as u64 + 1, body), payload);
    }
    w
}

#[test]
fn every_message_kind_survives_the_stream_byte_by_byte() {
    let wire = build();
    let mut decoder = FrameDecoder::default();
    let mut got = Vec::new();
    for byte in &wire.bytes {
        decoder.push(std::slice::from_ref(byte));
        while let Some(raw) = decoder.next_frame().unwrap() {
            let frame = raw.into_frame().unwrap();
            got.push((frame.header, frame.payload));
        }
    }
    decoder.finish().unwrap();
    assert_eq!(got.len(), wire.expected.len());
    for (i, (g, e)) in got.iter().zip(&wire.expected).enumerate() {
        assert_eq!(g, e, "message {i}");
    }

    // Every call parses into a typed request of its method; every event kind appears.
    let mut methods = Vec::new();
    let mut kinds = Vec::new();
    for (header, _) in &got {
        match header {
            Header::Call(call) => methods.push(call.request().unwrap().method()),
            Header::Event(ev) => kinds.push(ev.kind()),
            Header::Reply(_) => {}
        }
    }
    assert_eq!(methods, Method::ALL);
    for kind in EventKind::ALL {
        assert!(kinds.contains(kind), "{kind:?} not covered");
    }
}

#[test]
fn blocking_reader_and_writer_agree_with_the_decoder() {
    let wire = build();
    let mut rewritten = Vec::new();
    let mut r = &wire.bytes[..];
    while let Some(raw) = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap() {
        let frame = raw.into_frame().unwrap();
        write_frame(
            &mut rewritten,
            &frame.header,
            &frame.payload,
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
    }
    // Re-encoding through `Value` may reorder keys, so compare decoded frames.
    let decode = |bytes: &[u8]| {
        let mut r = bytes;
        let mut out: Vec<(Header, Vec<u8>)> = Vec::new();
        while let Some(raw) = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap() {
            let f = raw.into_frame().unwrap();
            out.push((f.header, f.payload));
        }
        out
    };
    assert_eq!(decode(&rewritten), wire.expected);
}

#[test]
fn typed_result_decoding_matches_call_params() {
    fn result_of<P: CallParams>(reply: Reply) -> Result<P::Result, WireError> {
        reply.into_typed::<P::Result>()
    }
    let v: Value = serde_json::json!({"socket": 3,
        "local": {"address": "127.0.0.1", "port": 1, "family": "IPv4"},
        "remote": {"path": ""}});
    let r = result_of::<ConnectParams>(Reply::ok(1, v)).unwrap();
    assert_eq!(r.remote, Address::Unix(String::new()));
    let e = result_of::<ConnectParams>(Reply::ok(1, Value::Null)).unwrap_err();
    assert_eq!(e.code, ErrorCode::Eproto);
}
