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
use readiness::{Action, Interest, Next, Reactor, Readiness, Registration};
use sidecar_protocol::{Address, ErrorCode, EventBody, SocketId, WireError};
use socket2::{Domain, Protocol, Socket, Type};
use stage_trace::Stage;

use super::{io_wire_error, read_datagrams};
use crate::addr::canonical;
use crate::metrics::{bump, Metrics};
use crate::outbound::Outbound;

struct UdpShared {
    id: SocketId,
    out: Arc<Outbound>,
    metrics: Arc<Metrics>,
    /// Room for datagrams not taken yet: (poll mode per socket, push mode per session).
    room: (usize, usize),
    /// A udp6 guest socket sees IPv4 senders as v4-mapped IPv6, as Linux reports them.
    udp6: bool,
    /// Who may be heard, and whether the guest socket is still open. Held while a
    /// datagram is checked and pushed, so [`HostUdp::close`], which takes it, orders every
    /// `message` before the socket's `close` event.
    filter: Mutex<Filter>,
    /// The kernel reported the connected peer unreachable: the next operation says so.
    refused: AtomicBool,
}

struct Filter {
    /// A connected socket only hears from its peer.
    peer: Option<SocketAddr>,
    /// The guest socket closed: nothing more is pushed (nothing may follow its `close`).
    closed: bool,
}

impl UdpShared {
    fn on_ready(&self, socket: &UdpSocket, _ready: Readiness) -> Next {
        stage_trace::mark(Stage::ReadinessWoken);
        // A `false` from `received`: closed; stop reading now (the registration is about
        // to go) rather than drain a sender that keeps sending.
        read_datagrams(
            socket,
            |payload, from| self.received(payload, from),
            |e| {
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    self.refused.store(true, Ordering::Relaxed);
                }
            },
        )
    }

    /// Pushes one datagram (if its sender may be heard and there is room). Returns
    /// `false` once the guest socket has closed.
    fn received(&self, payload: &[u8], from: SocketAddr) -> bool {
        let from = SocketAddr::new(canonical(from.ip()), from.port());
        // Held until the `message` is pushed: see `filter`.
        let filter = self.filter.lock();
        if filter.closed {
            return false;
        }
        if filter.peer.is_some_and(|peer| peer != from) {
            return true;
        }
        let (poll_room, push_room) = self.room;
        if !self
            .out
            .has_datagram_room(self.id.0, payload.len(), poll_room, push_room)
        {
            bump(&self.metrics.udp_host_dropped);
            return true;
        }
        let remote = match (self.udp6, from) {
            (true, SocketAddr::V4(v4)) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
            _ => from,
        };
        let message = EventBody::Message {
            socket: self.id,
            remote: Address::Inet(remote),
        };
        self.out.deliver(message, payload);
        true
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
        room: (usize, usize),
        udp6: bool,
    ) -> io::Result<HostUdp> {
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_only_v6(false)?;
        socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
        let shared = Arc::new(UdpShared {
            id,
            out,
            metrics,
            room,
            udp6,
            filter: Mutex::new(Filter {
                peer: None,
                closed: false,
            }),
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
        self.shared.filter.lock().peer = Some(SocketAddr::new(canonical(peer.ip()), peer.port()));
    }

    /// Datagrams from anyone are delivered again; a pending `ECONNREFUSED` is forgotten.
    pub fn disconnect(&self) {
        self.shared.filter.lock().peer = None;
        self.shared.refused.store(false, Ordering::Relaxed);
    }

    /// The guest socket is closing: no `message` is pushed from now on. Returns once a
    /// `message` being pushed by the handler (if any) is out, so a `close` event the
    /// caller pushes next comes after every `message`. (Dropping the registration would
    /// wait for the handler's whole run, which a sender that keeps sending can prolong.)
    pub fn close(&self) {
        self.shared.filter.lock().closed = true;
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
            let sent = self.reg.get_ref().send_to(payload, dest);
            stage_trace::mark(Stage::KernelSent);
            return match sent {
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
