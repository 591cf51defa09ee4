//! The Rust guest client against the real sidecar: guests on their own threads (as
//! isolates on an embedder's threads), over the in-process transport and the Unix
//! listening socket, with every socket event pushed and no timer anywhere.

use std::thread;

use guest_client::{
    connect_unix, Client, GuestLoop, InProcTransport, TcpListener, TcpStream, UnixListener,
    UnixStream,
};
use sidecar::{Sidecar, SidecarConfig};

fn sidecar_with_socket() -> (Sidecar, tempfile::TempDir, std::path::PathBuf) {
    let sidecar = Sidecar::start(SidecarConfig::default().with_vm("vm", "secret")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.sock");
    sidecar.listen_unix(&path).unwrap();
    (sidecar, dir, path)
}

#[derive(Clone, Copy, Debug)]
enum Via {
    InProcess,
    Unix,
}

fn client(sidecar: &Sidecar, socket: &std::path::Path, via: Via) -> Client {
    let hello = Client::hello_params("vm", "secret");
    match via {
        Via::InProcess => {
            let end = sidecar.connect_in_process().unwrap();
            Client::connect(InProcTransport::new(end), hello).unwrap()
        }
        Via::Unix => Client::connect(connect_unix(socket).unwrap(), hello).unwrap(),
    }
}

/// An echo server guest on its own thread: echoes `connections` connections, in turn.
fn spawn_echo_server(
    client: Client,
    unix: bool,
    connections: usize,
) -> (thread::JoinHandle<()>, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = thread::spawn(move || {
        let lp = GuestLoop::new(client).unwrap();
        lp.block_on(async {
            let echo = |stream: Box<dyn EchoStream>| async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    stream.write_all(&buf[..n]).await.unwrap();
                }
                stream.shutdown().await.unwrap();
            };
            if unix {
                let listener = UnixListener::bind(&lp, "/run/echo.sock").unwrap();
                tx.send("/run/echo.sock".to_owned()).unwrap();
                for _ in 0..connections {
                    let (stream, _) = listener.accept().await.unwrap();
                    echo(Box::new(stream)).await;
                }
            } else {
                let listener = TcpListener::bind(&lp, "127.0.0.1", 0).unwrap();
                let port = match listener.local_addr() {
                    guest_client::protocol::Address::Inet(addr) => addr.port(),
                    other => panic!("{other:?}"),
                };
                tx.send(port.to_string()).unwrap();
                for _ in 0..connections {
                    let (stream, _) = listener.accept().await.unwrap();
                    echo(Box::new(stream)).await;
                }
            }
            assert_eq!(lp.counters().timer_wakes, 0, "push mode armed a timer");
        });
    });
    (server, rx.recv().unwrap())
}

/// The two stream handles, for one echo routine.
trait EchoStream {
    fn read<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<usize>> + 'a>>;
    fn write_all<'a>(
        &'a self,
        buf: &'a [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + 'a>>;
    fn shutdown(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + '_>>;
}

macro_rules! echo_stream {
    ($t:ty) => {
        impl EchoStream for $t {
            fn read<'a>(
                &'a self,
                buf: &'a mut [u8],
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<usize>> + 'a>>
            {
                Box::pin(<$t>::read(self, buf))
            }
            fn write_all<'a>(
                &'a self,
                buf: &'a [u8],
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + 'a>>
            {
                Box::pin(<$t>::write_all(self, buf))
            }
            fn shutdown(
                &self,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + '_>>
            {
                Box::pin(<$t>::shutdown(self))
            }
        }
    };
}
echo_stream!(TcpStream);
echo_stream!(UnixStream);

#[test]
fn echo_between_guest_threads_over_every_transport_and_socket_kind() {
    let (sidecar, _dir, socket) = sidecar_with_socket();
    for via in [Via::InProcess, Via::Unix] {
        for unix in [false, true] {
            let (server, address) = spawn_echo_server(client(&sidecar, &socket, via), unix, 2);
            let lp = GuestLoop::new(client(&sidecar, &socket, via)).unwrap();
            lp.block_on(async {
                for round in 0..2 {
                    let stream: Box<dyn EchoStream> = if unix {
                        Box::new(UnixStream::connect(&lp, &address).await.unwrap())
                    } else {
                        let port = address.parse().unwrap();
                        Box::new(TcpStream::connect(&lp, "localhost", port).await.unwrap())
                    };
                    for size in [1usize, 64, 65_536, 300_000] {
                        let sent: Vec<u8> = (0..size).map(|i| (i * 7 + round) as u8).collect();
                        stream.write_all(&sent).await.unwrap();
                        let mut got = vec![0u8; size];
                        let mut filled = 0;
                        while filled < size {
                            let n = stream.read(&mut got[filled..]).await.unwrap();
                            assert!(n > 0, "{via:?} unix={unix}: early end");
                            filled += n;
                        }
                        assert_eq!(got, sent, "{via:?} unix={unix} size {size}");
                    }
                    stream.shutdown().await.unwrap();
                    let mut rest = [0u8; 1];
                    assert_eq!(
                        stream.read(&mut rest).await.unwrap(),
                        0,
                        "end after the echo"
                    );
                }
            });
            assert_eq!(lp.counters().timer_wakes, 0);
            server.join().unwrap();
        }
    }
    let stats = sidecar.stats().unwrap();
    assert_eq!(stats["timer_origin_wakes"], 0);
    assert_eq!(stats["fallback_found_work"], 0);
}

#[test]
fn one_single_threaded_guest_serves_and_connects_to_itself_past_a_full_backlog() {
    let (sidecar, _dir, socket) = sidecar_with_socket();
    let lp = GuestLoop::new(client(&sidecar, &socket, Via::InProcess)).unwrap();
    lp.block_on(async {
        let listener = UnixListener::bind_with_backlog(&lp, "/srv/s.sock", Some(1)).unwrap();
        // Three clients against a backlog of one, all from this one thread: the connects
        // must not freeze the loop, or the accepts that make room could never run.
        let clients: Vec<_> = (0..3u8)
            .map(|i| {
                let lp = lp.handle();
                lp.clone().spawn(async move {
                    let stream = UnixStream::connect(&lp, "/srv/s.sock").await.unwrap();
                    stream.write_all(&[i]).await.unwrap();
                    stream
                })
            })
            .collect();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (stream, _) = listener.accept().await.unwrap();
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            seen.push(byte[0]);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2]);
        for c in clients {
            drop(c.await);
        }
    });
}

#[test]
fn a_sidecar_that_goes_away_fails_pending_reads_with_econnreset() {
    let (sidecar, _dir, socket) = sidecar_with_socket();
    let mut server = client(&sidecar, &socket, Via::Unix);
    let params = sidecar_protocol::ListenParams::new(sidecar_protocol::Endpoint::unix("/x.sock"));
    server.call(&params).unwrap();
    let lp = GuestLoop::new(client(&sidecar, &socket, Via::Unix)).unwrap();
    let stream = lp.block_on(async { UnixStream::connect(&lp, "/x.sock").await.unwrap() });
    drop(sidecar);
    let read = lp.block_on(async {
        let mut buf = [0u8; 8];
        stream.read(&mut buf).await
    });
    let err = read.expect_err("a read on a dead sidecar must fail, not hang or end");
    assert_eq!(guest_client::error_code(&err).as_str(), "ECONNRESET");
}

/// A guest thread running `body` on its own loop over the in-process transport.
fn spawn_loop<F, Fut>(
    sidecar: &Sidecar,
    poll: bool,
    body: F,
) -> thread::JoinHandle<guest_client::LoopCounters>
where
    F: FnOnce(guest_client::LoopHandle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let end = sidecar.connect_in_process().unwrap();
    thread::spawn(move || {
        let hello = match poll {
            true => Client::hello_params_poll("vm", "secret"),
            false => Client::hello_params("vm", "secret"),
        };
        let lp =
            GuestLoop::new(Client::connect(InProcTransport::new(end), hello).unwrap()).unwrap();
        lp.block_on(body(lp.handle()));
        lp.counters()
    })
}

#[test]
fn the_same_program_runs_in_poll_mode_and_pays_timer_wakes_there_only() {
    for poll in [true, false] {
        let (sidecar, _dir, _socket) = sidecar_with_socket();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = spawn_loop(&sidecar, poll, move |lp| async move {
            let listener = TcpListener::bind(&lp, "127.0.0.1", 0).unwrap();
            let udp = guest_client::UdpSocket::bind(&lp, "127.0.0.1", 0).unwrap();
            let port = |a: guest_client::protocol::Address| match a {
                guest_client::protocol::Address::Inet(a) => a.port(),
                other => panic!("{other:?}"),
            };
            tx.send((port(listener.local_addr()), port(udp.local_addr().unwrap())))
                .unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(&buf).await.unwrap();
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            let guest_client::protocol::Address::Inet(from) = from else {
                panic!()
            };
            udp.send_to(&buf[..n], "127.0.0.1", from.port())
                .await
                .unwrap();
        });
        let (tcp_port, udp_port) = rx.recv().unwrap();
        let client = spawn_loop(&sidecar, poll, move |lp| async move {
            let stream = TcpStream::connect(&lp, "127.0.0.1", tcp_port)
                .await
                .unwrap();
            stream.write_all(&[5u8; 64]).await.unwrap();
            let mut buf = [0u8; 64];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [5u8; 64]);
            let udp = guest_client::UdpSocket::bind(&lp, "127.0.0.1", 0).unwrap();
            udp.send_to(b"datagram", "127.0.0.1", udp_port)
                .await
                .unwrap();
            let n = udp.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"datagram");
        });
        let (server, client) = (server.join().unwrap(), client.join().unwrap());
        if poll {
            assert!(server.polls > 0 && client.polls > 0);
            assert!(server.timer_wakes > 0, "the poll lane waits on its timer");
        } else {
            assert_eq!(server.timer_wakes + client.timer_wakes, 0);
            assert_eq!(server.polls + client.polls, 0);
        }
    }
}

#[test]
fn push_mode_traffic_of_every_kind_has_no_timer_origin_wake_and_loses_nothing() {
    let (sidecar, _dir, _socket) = sidecar_with_socket();
    const TOTAL: usize = 8 << 20;
    let (tx, rx) = std::sync::mpsc::channel();
    // A reader consuming 16 KiB at a time behind a credit window: the writer must meet
    // back-pressure (synchronous writes), and every byte must arrive in order.
    let reader = spawn_loop(&sidecar, false, move |lp| async move {
        let listener = UnixListener::bind(&lp, "/bulk").unwrap();
        tx.send(()).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = 0usize;
        while got < TOTAL {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((got + i) % 253) as u8, "byte {} corrupted", got + i);
            }
            got += n;
        }
    });
    rx.recv().unwrap();
    let writer = spawn_loop(&sidecar, false, move |lp| async move {
        let stream = UnixStream::connect(&lp, "/bulk").await.unwrap();
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
        stream.write_all(&data).await.unwrap();
    });
    let (writer, reader) = (writer.join().unwrap(), reader.join().unwrap());
    assert!(
        writer.sync_writes > 0,
        "write_all never checked the sidecar's buffer"
    );
    assert_eq!(writer.timer_wakes + reader.timer_wakes, 0);
    let stats = sidecar.stats().unwrap();
    assert_eq!(stats["timer_origin_wakes"], 0);
    assert_eq!(stats["fallback_found_work"], 0);
}
