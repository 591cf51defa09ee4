//! The `*_ext` latency rows: `udp_echo_ext` (64 B), `tcp_echo_ext` (64 B) and
//! `http_get_ext` (keep-alive GET). The client is a guest (or a native client in the
//! `host` lane) and the server a native one in another process ([`crate::ext_server`]),
//! so a guest goes out through the sidecar's host kernel sockets: the readiness path,
//! where the in-VM rows pair two guests inside the sidecar. One guest endpoint per
//! round trip (`guest_endpoints` = 1), hence a hop floor of host p50 + 1 × `pipe_rtt`.
//!
//! Each guest lane first makes one round trip on a throw-away guest, with a deadline, so
//! a sidecar that cannot reach the host (no allow rule, no host sockets yet) costs that
//! lane, reported as a set-up failure, instead of hanging or aborting the run.

use std::io::{self, Read, Write};
use std::net::{TcpStream as StdTcpStream, UdpSocket as StdUdp};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use guest_client::{LoopHandle, TcpStream, UdpSocket};

use super::http::{response_len, REQUEST};
use super::{Budget, Lane, Runner};
use crate::env::Connector;
use crate::ext_server::ExtPorts;

/// The rows, in table order.
pub const ROWS: [&str; 3] = ["udp_echo_ext", "tcp_echo_ext", "http_get_ext"];

/// Guests per round trip: only the client is a guest.
pub const GUEST_ENDPOINTS: u32 = 1;

const SIZE: usize = 64;
const HOST: &str = "127.0.0.1";
/// How long a guest lane's first round trip may take before the lane is given up.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy)]
enum Proto {
    Udp,
    Tcp,
    Http,
}

fn proto(row: &str) -> Proto {
    match row {
        "udp_echo_ext" => Proto::Udp,
        "tcp_echo_ext" => Proto::Tcp,
        "http_get_ext" => Proto::Http,
        other => unreachable!("not an ext row: {other}"),
    }
}

/// The row's lanes: host always; each guest lane only if its first round trip worked
/// (else its error goes to `failures`).
pub fn lanes(
    connector: &Connector,
    ports: &ExtPorts,
    row: &str,
    budget: Budget,
    failures: &mut Vec<String>,
) -> Vec<Lane> {
    let proto = proto(row);
    let ports = *ports;
    let mut lanes = vec![Lane {
        name: "host",
        run: host(proto, &ports),
        per_block: budget.fast,
    }];
    for (name, poll, per_block) in [
        ("guest-poll", true, budget.slow),
        ("guest-push", false, budget.fast),
    ] {
        match probe(connector, poll, proto, ports) {
            Ok(()) => lanes.push(Lane {
                name,
                run: guest(connector, poll, proto, ports),
                per_block,
            }),
            Err(e) => failures.push(format!("{row} {name}: {e}")),
        }
    }
    lanes
}

/// One round trip on a guest of its own, within [`PROBE_DEADLINE`].
fn probe(connector: &Connector, poll: bool, proto: Proto, ports: ExtPorts) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let guest = connector.spawn("ext-probe", poll, move |lp| async move {
        let result = match GuestConn::open(&lp, proto, &ports).await {
            Ok(mut conn) => conn.round_trip().await,
            Err(e) => Err(e),
        };
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(PROBE_DEADLINE)
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_DEADLINE:?}")));
    drop(guest); // Stops it if it is still waiting.
    result
}

fn guest(connector: &Connector, poll: bool, proto: Proto, ports: ExtPorts) -> Runner {
    let lp = connector.guest(poll);
    let mut conn = lp
        .block_on(GuestConn::open(&lp, proto, &ports))
        .expect("the probe got through");
    Box::new(move |n, hist| {
        lp.block_on(async {
            for _ in 0..n {
                let start = Instant::now();
                conn.round_trip().await.expect("round trip");
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    })
}

fn host(proto: Proto, ports: &ExtPorts) -> Runner {
    let mut conn = HostConn::open(proto, ports).expect("the native server");
    Box::new(move |n, hist| {
        for _ in 0..n {
            let start = Instant::now();
            conn.round_trip().expect("round trip");
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
    })
}

/// A guest's connection to the native server; what the guest lanes time.
enum GuestConn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Http(TcpStream, Vec<u8>),
}

impl GuestConn {
    async fn open(lp: &LoopHandle, proto: Proto, ports: &ExtPorts) -> io::Result<GuestConn> {
        Ok(match proto {
            Proto::Udp => GuestConn::Udp(connect_udp_apart(lp, ports.udp_echo)?),
            Proto::Tcp => {
                GuestConn::Tcp(nodelay(TcpStream::connect(lp, HOST, ports.tcp_echo).await?))
            }
            Proto::Http => GuestConn::Http(
                nodelay(TcpStream::connect(lp, HOST, ports.http).await?),
                Vec::new(),
            ),
        })
    }

    async fn round_trip(&mut self) -> io::Result<()> {
        let message = [7u8; SIZE];
        match self {
            GuestConn::Udp(socket) => {
                let mut buf = [0u8; 2048];
                socket.send(&message).await?;
                let got = socket.recv(&mut buf).await?;
                check_len(got)
            }
            GuestConn::Tcp(stream) => {
                let mut buf = [0u8; SIZE];
                stream.write_all(&message).await?;
                stream.read_exact(&mut buf).await
            }
            GuestConn::Http(stream, buf) => {
                let mut chunk = [0u8; 4096];
                stream.write_all(REQUEST).await?;
                let len = loop {
                    if let Some(len) = response_len(buf) {
                        break len;
                    }
                    match stream.read(&mut chunk).await? {
                        0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                        got => buf.extend_from_slice(&chunk[..got]),
                    }
                };
                buf.drain(..len);
                Ok(())
            }
        }
    }
}

/// A guest UDP socket connected to the native echo at `HOST:port`, bound to any other
/// port. A VM's own socket on the echo's port number would take the datagrams in memory
/// (a same-VM socket comes first, as DESIGN.md orders it) and the lane would time an
/// echo to itself: VM ports are allocated apart from the host's, so they can meet.
pub fn connect_udp_apart(lp: &LoopHandle, port: u16) -> io::Result<UdpSocket> {
    let first = UdpSocket::bind(lp, HOST, 0)?;
    let socket = match crate::rows::port_of(&first.local_addr()?) == port {
        // Bound while `first` still holds the clashing port, so it gets another.
        true => UdpSocket::bind(lp, HOST, 0)?,
        false => first,
    };
    socket.connect(HOST, port)?;
    Ok(socket)
}

/// Nagle off, as the native client has it (the guest API's `setNoDelay`).
fn nodelay(stream: TcpStream) -> TcpStream {
    if let Err(e) = stream.set_nodelay(true) {
        eprintln!("warning: guest set_nodelay: {e}");
    }
    stream
}

/// The native client of the `host` lane: the same round trips over std sockets.
enum HostConn {
    Udp(StdUdp),
    Tcp(StdTcpStream),
    Http(StdTcpStream, Vec<u8>),
}

impl HostConn {
    fn open(proto: Proto, ports: &ExtPorts) -> io::Result<HostConn> {
        let tcp = |port| {
            let stream = StdTcpStream::connect((HOST, port))?;
            stream.set_nodelay(true)?;
            io::Result::Ok(stream)
        };
        Ok(match proto {
            Proto::Udp => {
                let socket = StdUdp::bind((HOST, 0))?;
                socket.connect((HOST, ports.udp_echo))?;
                socket.set_read_timeout(Some(Duration::from_secs(10)))?;
                HostConn::Udp(socket)
            }
            Proto::Tcp => HostConn::Tcp(tcp(ports.tcp_echo)?),
            Proto::Http => HostConn::Http(tcp(ports.http)?, Vec::new()),
        })
    }

    fn round_trip(&mut self) -> io::Result<()> {
        let message = [7u8; SIZE];
        match self {
            HostConn::Udp(socket) => {
                let mut buf = [0u8; 2048];
                socket.send(&message)?;
                check_len(socket.recv(&mut buf)?)
            }
            HostConn::Tcp(stream) => {
                let mut buf = [0u8; SIZE];
                stream.write_all(&message)?;
                stream.read_exact(&mut buf)
            }
            HostConn::Http(stream, buf) => {
                let mut chunk = [0u8; 4096];
                stream.write_all(REQUEST)?;
                let len = loop {
                    if let Some(len) = response_len(buf) {
                        break len;
                    }
                    match stream.read(&mut chunk)? {
                        0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                        got => buf.extend_from_slice(&chunk[..got]),
                    }
                };
                buf.drain(..len);
                Ok(())
            }
        }
    }
}

fn check_len(got: usize) -> io::Result<()> {
    match got {
        SIZE => Ok(()),
        other => Err(io::Error::other(format!(
            "echoed {other} bytes, sent {SIZE}"
        ))),
    }
}
