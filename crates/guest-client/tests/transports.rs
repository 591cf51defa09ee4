//! The same client over the byte-stream transports: a Unix socket (as to `sidecar serve
//! --listen PATH`) and a child's stdio (as to `sidecar serve --stdio`).

mod common;

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{data, deadline, end, FakeSidecar};
use guest_client::protocol::{encode_raw_frame, ErrorCode, StatsParams, DEFAULT_MAX_FRAME};
use guest_client::{connect_unix, Client, StreamTransport, Transport, TransportError};
use serde_json::json;

/// A socket path of its own for each test, removed when dropped.
struct SocketPath(std::path::PathBuf);

impl SocketPath {
    fn new(name: &str) -> SocketPath {
        let path =
            std::env::temp_dir().join(format!("guest-client-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_client_over_a_unix_socket() {
    let path = SocketPath::new("client");
    let listener = UnixListener::bind(&path.0).unwrap();
    let sidecar = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut fake = FakeSidecar::over_stream(stream);
        fake.accept_hello();
        fake.fence(|fake| {
            fake.push(data(3), &[5; 100_000]); // several reads' worth
        });
        fake.push(end(3), b"");
        fake.disconnect();
    });
    let transport = connect_unix(&path.0).unwrap();
    let mut client = Client::connect(transport, Client::hello_params("dev", "s")).unwrap();
    assert_eq!(client.hello().session, 7);
    assert_eq!(client.call(&StatsParams {}).unwrap(), json!({}));
    let (event, payload) = client.next_event(Some(deadline())).unwrap().unwrap();
    assert_eq!((event.body, payload.len()), (data(3), 100_000));
    let (event, _) = client.next_event(Some(deadline())).unwrap().unwrap();
    assert_eq!(event.body, end(3));
    sidecar.join().unwrap();
    assert_eq!(
        client.next_event(Some(deadline())).unwrap_err().code(),
        ErrorCode::Econnreset
    );
}

#[test]
fn a_deadline_over_a_unix_socket_returns_in_time() {
    let path = SocketPath::new("deadline");
    let listener = UnixListener::bind(&path.0).unwrap();
    let sidecar = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut fake = FakeSidecar::over_stream(stream);
        fake.accept_hello();
        fake.expect_closed();
    });
    let transport = connect_unix(&path.0).unwrap();
    let mut client = Client::connect(transport, Client::hello_params("dev", "s")).unwrap();
    let until = Instant::now() + Duration::from_millis(30);
    assert!(client.next_event(Some(until)).unwrap().is_none());
    assert!(Instant::now() >= until);
    assert!(client.try_next_event().unwrap().is_none());
    drop(client);
    sidecar.join().unwrap();
}

#[test]
fn frames_through_a_childs_stdio() {
    // `cat` plays a sidecar that echoes every frame: enough to exercise a pipe pair.
    let mut child = match Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("this test needs `cat` on PATH: {e}"),
    };
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        panic!("piped stdio missing");
    };
    let mut transport = StreamTransport::new(stdout, stdin);

    let until = Instant::now() + Duration::from_millis(20);
    assert!(
        transport.recv(Some(until)).unwrap().is_none(),
        "nothing sent yet"
    );
    assert!(Instant::now() >= until);

    let mut frame = Vec::new();
    encode_raw_frame(b"{\"n\":1}", &[9; 70_000], DEFAULT_MAX_FRAME, &mut frame).unwrap();
    transport.send(frame).unwrap();
    let got = transport
        .recv(Some(deadline()))
        .unwrap()
        .expect("echoed frame");
    assert_eq!(got.header, b"{\"n\":1}");
    assert_eq!(got.payload, vec![9; 70_000]);

    let (stdout, stdin) = transport.into_inner();
    drop(stdin); // cat sees EOF and exits
    let mut transport = StreamTransport::new(stdout, std::io::sink());
    assert!(matches!(transport.recv(None), Err(TransportError::Closed)));
    assert!(child.wait().unwrap().success());
}
