//! The bystander of the limits tests: another VM's guests that must still attach and
//! exchange data while (or after) one tenant attacks.

use serde_json::json;

use super::{Harness, Incoming, RawGuest, Transport, DEADLINE};

/// Attaches two guests of `vm` over `transport`, connects them in the VM and makes
/// `rounds` echo round trips (client writes, server reads and writes it back, client
/// reads). Panics if any step fails.
pub fn echoes(h: &Harness, transport: Transport, vm: &str, rounds: usize) {
    let mut server = RawGuest::attach(h.wire(transport), vm, &format!("s{vm}"));
    let mut client = RawGuest::attach(h.wire(transport), vm, &format!("s{vm}"));
    let listened = server
        .call("net.listen", json!({"host": "127.0.0.1", "port": 0}), b"")
        .expect("bystander listen");
    let port = listened["local"]["port"].clone();
    let connected = client
        .call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": port}),
            b"",
        )
        .expect("bystander connect");
    let client_sock = connected["socket"].as_u64().unwrap();
    let (accept, _, _) = server.event_of("accept");
    let server_sock = accept["socket"].as_u64().unwrap();
    let take = json!({"socket": server_sock, "bytes": 0});
    server.send_call("net.credit", take, b"", true);
    client.event_of("connect");
    for round in 0..rounds {
        let message = format!("echo {round}").into_bytes();
        client
            .call("net.write", json!({"socket": client_sock}), &message)
            .expect("bystander write");
        let got = server.read_data(server_sock, message.len());
        server
            .call("net.write", json!({"socket": server_sock}), &got)
            .expect("bystander echo");
        assert_eq!(client.read_data(client_sock, message.len()), message);
    }
}

/// Reads a Unix stream the sidecar is expected to close: every frame until EOF, within
/// the test deadline (panics on the deadline: the sidecar did not close it).
pub fn frames_until_eof(guest: &mut RawGuest) -> Vec<Incoming> {
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut frames = Vec::new();
    while let Some(frame) = guest.recv(deadline) {
        frames.push(frame);
    }
    assert!(
        std::time::Instant::now() < deadline,
        "the sidecar did not close the stream before the deadline"
    );
    frames
}

/// The error code of the first error reply or `error` event among `frames`.
pub fn first_error_code(frames: &[Incoming]) -> Option<String> {
    frames.iter().find_map(|f| match f {
        Incoming::Reply {
            outcome: Err(e), ..
        } => e["code"].as_str().map(str::to_owned),
        Incoming::Event { event, .. } if event["event"] == "error" => {
            event["code"].as_str().map(str::to_owned)
        }
        _ => None,
    })
}
