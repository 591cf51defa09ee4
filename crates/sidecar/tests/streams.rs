//! In-VM stream sockets end to end, over the in-process transport and over the Unix
//! listening socket: echo (TCP and Unix), accept, many connections, half-close, close
//! with data in flight.

mod support;

use serde_json::json;
use support::{connect_pair, Harness, TRANSPORTS};

#[test]
fn echo_over_tcp_and_unix_on_every_transport() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        for (listen, connect) in [
            (
                json!({"host": "127.0.0.1", "port": 0}),
                json!({"host": "127.0.0.1"}),
            ),
            (
                json!({"path": "/run/echo.sock"}),
                json!({"path": "/run/echo.sock"}),
            ),
        ] {
            let mut c = connect_pair(&h, transport, listen, connect);
            for round in 0..20u8 {
                let msg = vec![round; 64];
                c.client
                    .send_call("net.write", json!({"socket": c.client_sock}), &msg, true);
                let got = c.server.read_data(c.server_sock, 64);
                assert_eq!(got, msg, "{transport:?} round {round}");
                c.server
                    .send_call("net.write", json!({"socket": c.server_sock}), &got, true);
                assert_eq!(c.client.read_data(c.client_sock, 64), msg);
            }
        }
    }
}

#[test]
fn accept_and_connect_report_addresses_and_order() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut server = h.guest(transport);
        let mut client = h.guest(transport);
        let listened = server.call("net.listen", json!({"port": 0}), b"").unwrap();
        assert_eq!(
            listened["local"]["address"], "::",
            "default host is dual-stack"
        );
        let port = listened["local"]["port"].as_u64().unwrap();
        assert!(port >= 32768, "ephemeral port {port}");
        let connected = client
            .call(
                "net.connect",
                json!({"host": "127.0.0.1", "port": port}),
                b"",
            )
            .unwrap();
        assert_eq!(connected["remote"]["address"], "127.0.0.1");
        assert_eq!(connected["remote"]["port"], port);
        assert_eq!(connected["local"]["address"], "127.0.0.1");
        // The reply came first; the connect event follows it.
        let (event, _, skipped) = client.event_of("connect");
        assert!(skipped.is_empty());
        assert_eq!(event["socket"], connected["socket"]);
        let (accept, _, _) = server.event_of("accept");
        assert_eq!(accept["server"], listened["server"]);
        // A dual-stack listener sees its IPv4 client v4-mapped, as Linux does.
        assert_eq!(accept["remote"]["address"], "::ffff:127.0.0.1");
        assert_eq!(accept["remote"]["port"], connected["local"]["port"]);
        assert_eq!(accept["local"]["port"], port);
    }
}

#[test]
fn many_concurrent_connections_each_echo_their_own_bytes() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut server = h.guest(transport);
        let mut client = h.guest(transport);
        let listened = server
            .call(
                "net.listen",
                json!({"path": "many.sock", "backlog": 1000}),
                b"",
            )
            .unwrap();
        let path = listened["local"]["path"].as_str().unwrap().to_owned();
        assert_eq!(path, "/many.sock", "relative to the default cwd /");
        const N: usize = 200;
        let mut clients = Vec::new();
        for _ in 0..N {
            let c = client
                .call("net.connect", json!({"path": path}), b"")
                .unwrap();
            clients.push(c["socket"].as_u64().unwrap());
        }
        let mut accepted = Vec::new();
        while accepted.len() < N {
            let (accept, _, _) = server.event_of("accept");
            accepted.push(accept["socket"].as_u64().unwrap());
        }
        // Each client writes its index; the server echoes it back on the same socket.
        for (i, sock) in clients.iter().enumerate() {
            client.send_call(
                "net.write",
                json!({"socket": sock}),
                &(i as u32).to_be_bytes(),
                true,
            );
        }
        for _ in 0..N {
            let (data, payload, _) = server.event_of("data");
            assert_eq!(payload.len(), 4);
            server.send_call(
                "net.write",
                json!({"socket": data["socket"]}),
                &payload,
                true,
            );
        }
        for _ in 0..N {
            let (data, payload, _) = client.event_of("data");
            let i = u32::from_be_bytes(payload.try_into().unwrap()) as usize;
            assert_eq!(
                data["socket"], clients[i],
                "bytes came back on another socket"
            );
        }
        assert_eq!(h.stats()["streams"].as_u64().unwrap() as usize, 2 * N);
        drop(client);
        drop(server);
    }
}

#[test]
fn half_close_then_more_data_the_other_way() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut c = connect_pair(&h, transport, json!({"port": 0}), json!({}));
        c.client.send_call(
            "net.write",
            json!({"socket": c.client_sock}),
            b"request",
            true,
        );
        c.client
            .call("net.shutdown", json!({"socket": c.client_sock}), b"")
            .unwrap();
        assert_eq!(c.server.read_data(c.server_sock, 7), b"request");
        let (end, _, _) = c.server.event_of("end");
        assert_eq!(end["socket"], c.server_sock);
        // The client may not write any more; the server still may, and does.
        let err = c
            .client
            .call("net.write", json!({"socket": c.client_sock}), b"x")
            .unwrap_err();
        assert_eq!(err["code"], "EPIPE");
        c.server.send_call(
            "net.write",
            json!({"socket": c.server_sock}),
            b"response",
            true,
        );
        assert_eq!(c.client.read_data(c.client_sock, 8), b"response");
        c.server
            .call("net.shutdown", json!({"socket": c.server_sock}), b"")
            .unwrap();
        // Both directions ended: both ends close; the client saw end first.
        let (_, _, before) = c.client.event_of("close");
        assert_eq!(before.iter().filter(|e| e["event"] == "end").count(), 1);
        let (close, _, _) = c.server.event_of("close");
        assert_eq!(close["socket"], c.server_sock);
    }
}

#[test]
fn data_in_flight_is_delivered_before_end_and_close() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut c = connect_pair(&h, transport, json!({"port": 0}), json!({}));
        for chunk in [&b"one"[..], b"two", b"three"] {
            c.client
                .send_call("net.write", json!({"socket": c.client_sock}), chunk, true);
        }
        c.client
            .call("net.destroy", json!({"socket": c.client_sock}), b"")
            .unwrap();
        let (own_close, _, _) = c.client.event_of("close");
        assert_eq!(own_close["socket"], c.client_sock);
        let mut kinds = Vec::new();
        let mut bytes = Vec::new();
        loop {
            let (event, payload) = c.server.event();
            kinds.push(event["event"].as_str().unwrap().to_owned());
            bytes.extend(payload);
            if event["event"] == "end" {
                break;
            }
        }
        assert_eq!(bytes, b"onetwothree");
        assert_eq!(kinds, ["data", "data", "data", "end"]);
        // Half-closed as a kernel socket whose peer closed: it stays open, and its writes
        // (TLS's close_notify on `end()`) are taken, for nobody, until it ends its side.
        for last_words in [&b"close_notify"[..], b"more"] {
            let written = c
                .server
                .call("net.write", json!({"socket": c.server_sock}), last_words)
                .expect("a write after the peer's close does not fail");
            assert_eq!(written["need_drain"], false);
        }
        assert_eq!(c.server.queued_events(), 0, "closed before its own end");
        c.server
            .call("net.shutdown", json!({"socket": c.server_sock}), b"")
            .unwrap();
        let (close, _, _) = c.server.event_of("close");
        assert_eq!(
            (close["socket"].clone(), close["had_error"].clone()),
            (c.server_sock.into(), false.into())
        );
        let stats = h.stats();
        assert!(
            stats["stream_bytes_after_peer_close"].as_u64() >= Some(16),
            "{stats}"
        );
        // Nothing after close: the id is gone.
        let err = c
            .server
            .call("net.write", json!({"socket": c.server_sock}), b"x")
            .unwrap_err();
        assert_eq!(err["code"], "EBADF");
    }
}

#[test]
fn large_writes_arrive_whole_and_in_order() {
    let h = Harness::new();
    for transport in TRANSPORTS {
        let mut c = connect_pair(&h, transport, json!({"port": 0}), json!({}));
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        c.client
            .send_call("net.write", json!({"socket": c.client_sock}), &big, true);
        assert_eq!(c.server.read_data(c.server_sock, big.len()), big);
    }
}
