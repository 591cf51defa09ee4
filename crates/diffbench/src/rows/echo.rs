//! Echo rows: `unix_echo_small` (64 B), `udp_echo_small` (64 B), `tcp_echo_64k`. The
//! client writes, the echo server (a separate guest, or a native thread in the host lane)
//! sends it back, the client reads it all.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket as StdUdp};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use guest_client::{
    protocol::Address, TcpListener as GTcpListener, TcpStream, UdpSocket, UnixListener, UnixStream,
};

use super::{port_of, Lane, Runner};
use crate::env::Connector;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unix,
    Tcp,
}

/// Guest lane of a stream echo of `size` bytes.
pub fn guest_stream(
    connector: &Connector,
    poll: bool,
    kind: Kind,
    size: usize,
    tag: &str,
) -> Runner {
    let path = format!("/bench/{tag}-{}.sock", if poll { "poll" } else { "push" });
    let (tx, rx) = mpsc::channel();
    let server_path = path.clone();
    macro_rules! echo_server {
        ($stream:expr) => {{
            let stream = $stream;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }};
    }
    let server = connector.spawn("echo-server", poll, move |lp| async move {
        match kind {
            Kind::Unix => {
                let listener = UnixListener::bind(&lp, &server_path).unwrap();
                tx.send(0).unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                echo_server!(stream)
            }
            Kind::Tcp => {
                let listener = GTcpListener::bind(&lp, "127.0.0.1", 0).unwrap();
                tx.send(port_of(&listener.local_addr())).unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                echo_server!(stream)
            }
        }
    });
    let port = rx.recv().unwrap();
    let lp = connector.guest(poll);
    let message = vec![7u8; size];
    macro_rules! client {
        ($connect:expr) => {{
            let stream = lp.block_on(async { $connect.await.unwrap() });
            Box::new(move |n: usize, hist: &mut hdrhistogram::Histogram<u64>| {
                let _server = &server;
                lp.block_on(async {
                    let mut buf = vec![0u8; size];
                    for _ in 0..n {
                        let start = Instant::now();
                        stream.write_all(&message).await.unwrap();
                        stream.read_exact(&mut buf).await.unwrap();
                        hist.record(start.elapsed().as_nanos() as u64).unwrap();
                    }
                })
            }) as Runner
        }};
    }
    match kind {
        Kind::Unix => client!(UnixStream::connect(&lp, &path)),
        Kind::Tcp => client!(TcpStream::connect(&lp, "127.0.0.1", port)),
    }
}

/// Host lane of a stream echo: native sockets, a blocking echo thread.
pub fn host_stream(kind: Kind, size: usize) -> Runner {
    fn echo(mut stream: impl Read + Write) {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut stream: Box<dyn ReadWrite> = match kind {
        Kind::Unix => {
            let path = dir.path().join("echo.sock");
            let listener = StdUnixListener::bind(&path).unwrap();
            thread::spawn(move || echo(listener.accept().unwrap().0));
            Box::new(StdUnixStream::connect(&path).unwrap())
        }
        Kind::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            thread::spawn(move || echo(listener.accept().unwrap().0));
            let stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_nodelay(true).unwrap();
            Box::new(stream)
        }
    };
    let message = vec![7u8; size];
    Box::new(move |n, hist| {
        let _keep = &dir;
        let mut buf = vec![0u8; size];
        for _ in 0..n {
            let start = Instant::now();
            stream.write_all(&message).unwrap();
            stream.read_exact(&mut buf).unwrap();
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
    })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Guest lane of the 64 B UDP echo.
pub fn guest_udp(connector: &Connector, poll: bool) -> Runner {
    let (tx, rx) = mpsc::channel();
    let server = connector.spawn("udp-echo", poll, move |lp| async move {
        let socket = UdpSocket::bind(&lp, "127.0.0.1", 0).unwrap();
        tx.send(port_of(&socket.local_addr().unwrap())).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Address::Inet(from) = from else { return };
            if socket
                .send_to(&buf[..n], "127.0.0.1", from.port())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let port = rx.recv().unwrap();
    let lp = connector.guest(poll);
    let socket = UdpSocket::bind(&lp, "127.0.0.1", 0).unwrap();
    socket.connect("127.0.0.1", port).unwrap();
    Box::new(move |n, hist| {
        let _server = &server;
        lp.block_on(async {
            let message = [7u8; 64];
            let mut buf = [0u8; 2048];
            for _ in 0..n {
                let start = Instant::now();
                socket.send(&message).await.unwrap();
                let got = socket.recv(&mut buf).await.unwrap();
                assert_eq!(got, 64);
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    })
}

/// Host lane of the 64 B UDP echo.
pub fn host_udp() -> Runner {
    let server = StdUdp::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&buf[..n], from);
        }
    });
    let client = StdUdp::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    Box::new(move |n, hist| {
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let start = Instant::now();
            client.send(&[7u8; 64]).unwrap();
            assert_eq!(client.recv(&mut buf).unwrap(), 64);
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
    })
}

/// The three lanes of a row, in table order.
pub fn lanes(host: Runner, poll: Runner, push: Runner, budget: super::Budget) -> Vec<Lane> {
    vec![
        Lane {
            name: "host",
            run: host,
            per_block: budget.fast,
        },
        Lane {
            name: "guest-poll",
            run: poll,
            per_block: budget.slow,
        },
        Lane {
            name: "guest-push",
            run: push,
            per_block: budget.fast,
        },
    ]
}
