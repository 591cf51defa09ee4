//! The host side of a guest's UDP socket: one kernel socket, opened the first time the
//! guest sends to (or connects to) an allowed destination outside its VM.
//!
//! It is dual-stack (`[::]:0`, IPv4 peers as v4-mapped), non-blocking, and registered with
//! the readiness thread with an inline handler that reads every datagram waiting and
//! pushes `message` with its sender: one sidecar thread wake per burst. The guest keeps
//! its in-VM address; the kernel socket's own port is the host's business. UDP is lossy,
//! never silently: a datagram that finds no room (a poll-mode guest's receive buffer, a
//! full kernel send buffer) is dropped and counted (`udp_host_dropped`).

use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use readiness::{Action, Interest, Reactor, Readiness, Registration};
use sidecar_protocol::{Address, ErrorCode, EventBody, SocketId, WireError, MAX_UDP_PAYLOAD};
use socket2::{Domain, Protocol, Socket, Type};

use super::{io_wire_error, with_read_buffer};
use crate::addr::canonical;
use crate::metrics::{bump, Metrics};
use crate::outbound::Outbound;

struct UdpShared {
    id: SocketId,
    out: Arc<Outbound>,
    metrics: Arc<Metrics>,
    /// Poll mode: payload bytes the guest may leave unpolled.
    room: usize,
    /// A connected socket only hears from its peer.
    peer: Mutex<Option<SocketAddr>>,
    /// The kernel reported the connected peer unreachable: the next operation says so.
    refused: AtomicBool,
}

impl UdpShared {
    fn on_ready(&self, socket: &UdpSocket, _ready: Readiness) -> Interest {
        with_read_buffer(MAX_UDP_PAYLOAD, |buf| loop {
            match socket.recv_from(buf) {
                Ok((n, from)) => self.received(&buf[..n], from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    self.refused.store(true, Ordering::Relaxed);
                }
                // Other per-datagram errors (ICMP reports…): keep reading.
                Err(_) => {}
            }
        });
        Interest::READABLE
    }

    fn received(&self, payload: &[u8], from: SocketAddr) {
        let from = SocketAddr::new(canonical(from.ip()), from.port());
        if self.peer.lock().is_some_and(|peer| peer != from) {
            return;
        }
        if self.out.polled_bytes(self.id.0) + payload.len() > self.room {
            bump(&self.metrics.udp_host_dropped);
            return;
        }
        let message = EventBody::Message {
            socket: self.id,
            remote: Address::Inet(from),
        };
        self.out.deliver(message, payload);
    }
}

/// The kernel socket behind a guest UDP socket's outside traffic.
pub struct HostUdp {
    reg: Registration<UdpSocket>,
    shared: Arc<UdpShared>,
}

impl HostUdp {
    /// Opens and registers the kernel socket for guest socket `id`.
    pub fn open(
        reactor: &Reactor,
        id: SocketId,
        out: Arc<Outbound>,
        metrics: Arc<Metrics>,
        room: usize,
    ) -> io::Result<HostUdp> {
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_only_v6(false)?;
        socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
        let shared = Arc::new(UdpShared {
            id,
            out,
            metrics,
            room,
            peer: Mutex::new(None),
            refused: AtomicBool::new(false),
        });
        let handler = Arc::clone(&shared);
        let reg = reactor.register(
            UdpSocket::from(socket),
            Interest::READABLE,
            Action::handler(move |socket: &UdpSocket, ready| handler.on_ready(socket, ready)),
        )?;
        Ok(HostUdp { reg, shared })
    }

    /// Only datagrams from `peer` are delivered from now on.
    pub fn connect(&self, peer: SocketAddr) {
        *self.shared.peer.lock() = Some(SocketAddr::new(canonical(peer.ip()), peer.port()));
    }

    /// Sends one datagram to `dest` (allowed by the caller). A full kernel buffer drops
    /// it, counted, as UDP does.
    pub fn send(&self, payload: &[u8], dest: SocketAddr) -> Result<(), WireError> {
        self.take_refused()?;
        let dest = match dest {
            SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
            v6 => v6,
        };
        loop {
            return match self.reg.get_ref().send_to(payload, dest) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    bump(&self.shared.metrics.udp_host_dropped);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(io_wire_error(&format!("send {dest}"), &e)),
            };
        }
    }

    /// `ECONNREFUSED` once if the kernel reported the connected peer unreachable.
    pub fn take_refused(&self) -> Result<(), WireError> {
        if self.shared.refused.swap(false, Ordering::Relaxed) {
            return Err(WireError::new(
                ErrorCode::Econnrefused,
                "a datagram to the connected peer was refused (ICMP port unreachable)",
            ));
        }
        Ok(())
    }
}
