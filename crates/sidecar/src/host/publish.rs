//! Published ports: a host address:port that forwards to a VM's in-VM listener, like
//! `docker -p`. A host client (curl, a native socket) connects to the host port; the
//! guest's server gets `accept` pushed for a socket that is a host connection from then
//! on ([`HostTcp`]: data both ways under the usual credit and write limits, handled on the
//! readiness thread).
//!
//! The host listener is bound when the configuration is applied (a port already taken
//! fails the start, or the reload). Accepting runs on the RPC loop, woken by the
//! listener's readiness; it is not on the data path. An accepted connection counts
//! against its listener's backlog and its VM's pending connections until the guest takes
//! it, as an in-VM one does. A connection that finds no listener in the VM on the
//! published port, a listener whose backlog is full, or the VM at its pending
//! connections limit is closed at once and counted (`published_refused`; the last also
//! `pending_refused`), as a host with nobody listening would refuse it. So is one the
//! sidecar's fd budget cannot hold (`fd_budget_refused`, [`crate::fds`]). When accept
//! itself fails for want of fds, the port sheds one connection with the spare fd and
//! backs off on a timer (counted: `accept_shed`, `accept_backoff`) instead of spinning
//! on a readiness that stays true.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use readiness::{Action, Interest, Registration};
use sidecar_protocol::{Address, ErrorCode, EventBody, SocketId, WireError};

use super::tcp::HostTcp;
use crate::core::{Core, Handle};
use crate::fds::{self, Backoff};
use crate::metrics::bump;
use crate::policy::Proto;

/// A host socket bound for a publication, before the RPC loop serves it.
pub struct BoundPublication {
    pub host: SocketAddr,
    pub socket: BoundSocket,
}

pub enum BoundSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Binds the host sockets of `hosts`. All or nothing: on an error none stays bound.
pub fn bind_all(
    hosts: impl IntoIterator<Item = (SocketAddr, Proto)>,
) -> io::Result<Vec<BoundPublication>> {
    hosts
        .into_iter()
        .map(|(host, proto)| {
            let named =
                |e: io::Error| io::Error::new(e.kind(), format!("cannot publish {host}: {e}"));
            let socket = match proto {
                Proto::Tcp => BoundSocket::Tcp(TcpListener::bind(host).map_err(named)?),
                Proto::Udp => BoundSocket::Udp(UdpSocket::bind(host).map_err(named)?),
            };
            Ok(BoundPublication { host, socket })
        })
        .collect()
}

impl BoundPublication {
    pub fn proto(&self) -> Proto {
        match self.socket {
            BoundSocket::Tcp(_) => Proto::Tcp,
            BoundSocket::Udp(_) => Proto::Udp,
        }
    }
}

/// Serves one bound publication until its task is aborted.
pub async fn serve_bound(core_rc: Rc<RefCell<Core>>, bound: BoundPublication) {
    match bound.socket {
        BoundSocket::Tcp(listener) => serve(core_rc, bound.host, listener).await,
        BoundSocket::Udp(socket) => super::publish_udp::serve(core_rc, bound.host, socket).await,
    }
}

/// Where a published host port leads now (a reload may change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub vm: String,
    pub port: u16,
}

/// Serves one published host port until its task is aborted (the publication was
/// removed, or the sidecar stops): accepts whatever is pending, then waits for the
/// listener's readiness.
async fn serve(core_rc: Rc<RefCell<Core>>, host: SocketAddr, listener: TcpListener) {
    let registration =
        core_rc
            .borrow()
            .host
            .reactor
            .register(listener, Interest::READABLE, Action::Wait);
    let listener: Registration<TcpListener> = match registration {
        Ok(reg) => reg,
        Err(e) => {
            tracing::error!(%e, %host, "cannot watch a published port");
            return;
        }
    };
    let metrics = Arc::clone(&core_rc.borrow().metrics);
    let mut backoff = Backoff::new();
    let mut accepted = 0u32;
    loop {
        match listener.try_read_with(|l| l.accept()) {
            Ok((stream, peer)) => {
                backoff.reset();
                core_rc.borrow_mut().accept_published(host, stream, peer);
                // A client that connects as fast as it is closed must not hold the loop.
                accepted = accepted.wrapping_add(1);
                if accepted % ACCEPTS_PER_TURN == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Woken by readiness; the day-long deadline only bounds the wait.
                let far = Instant::now() + Duration::from_secs(86_400);
                if listener.readable_until(far).await.is_err() {
                    return; // the readiness thread is gone: the sidecar is stopping
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of fds (the listener stays readable: waiting on its readiness would
                // return at once): shed one connection with the spare fd, then back off
                // on a timer, so the loop serves everything else meanwhile.
                let shed = fds::is_exhaustion(&e)
                    && metrics
                        .fds
                        .shed(|| listener.try_read_with(|l| l.accept()).map(drop));
                if shed {
                    bump(&metrics.accept_shed);
                }
                bump(&metrics.accept_backoff);
                let wait = backoff.step();
                let total_shed = crate::metrics::get(&metrics.accept_shed);
                crate::warn_limited!(%e, %host, shed = total_shed, ?wait,
                    "accept on a published port failed; shedding and backing off");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Accepts in a row before a published port's task lets the rest of the loop run.
const ACCEPTS_PER_TURN: u32 = 64;

impl Core {
    /// A host client connected to a published port: hand the connection to the VM's
    /// listener on the published port, as a host connection.
    pub fn accept_published(&mut self, host: SocketAddr, stream: TcpStream, peer: SocketAddr) {
        let Some(Published { vm: vm_name, port }) = self.published.get(&host).cloned() else {
            return;
        };
        let vm_name = vm_name.as_str();
        let server_key = self.vms.get(vm_name).and_then(|vm| {
            vm.find_tcp(std::net::Ipv4Addr::LOCALHOST.into(), port)
                .or_else(|| vm.find_tcp(std::net::Ipv6Addr::LOCALHOST.into(), port))
        });
        // The VM at its pending connections limit takes no more, paired or not.
        let at_limit = server_key.is_some() && self.pending_refusal(vm_name).is_some();
        let target = match server_key {
            None => Err(WireError::new(
                ErrorCode::Econnrefused,
                format!("connect ECONNREFUSED {host}: nothing listens on the published port"),
            )),
            Some(_) if at_limit => Err(WireError::new(
                ErrorCode::Econnrefused,
                format!(
                    "connect ECONNREFUSED {host}: the VM's pending connections are at its limit"
                ),
            )),
            Some(key) => Ok(key),
        };
        if at_limit {
            self.count_pending_refusal();
        }
        if self.pair_on_accept(host, peer, target) {
            return; // paired in memory: the kernel socket closes unused
        }
        let Some(server) = server_key
            .filter(|_| !at_limit)
            .and_then(|k| self.servers.get(&k))
        else {
            bump(&self.metrics.published_refused);
            return; // dropping the stream closes it: the client sees a reset
        };
        let (sid, server_id, server_local) = (server.session, server.id, server.local.clone());
        if !server.has_room() || self.check_room(sid, 1).is_err() {
            bump(&self.metrics.published_refused);
            return;
        }
        // The process's fds, less those reserved, hold it, or it is closed.
        if let Err(e) = self.check_fd_room(1) {
            bump(&self.metrics.published_refused);
            crate::warn_limited!(%host, %peer, "published connection closed: {}", e.message);
            return;
        }
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let out = Arc::clone(&session.out);
        let id = SocketId(session.mint_id());
        let remote = Address::Inet(peer);
        let mut tcp = match HostTcp::register(self, sid, id, stream.into(), Interest::NONE, remote)
        {
            Ok(tcp) => tcp,
            Err(e) => {
                crate::warn_limited!(%e, "cannot register a published connection");
                bump(&self.metrics.published_refused);
                return;
            }
        };
        tcp.local = server_local.clone();
        // It counts against the backlog and the VM's pending connections until the
        // guest takes it (any call naming it).
        let server_key = server_key.expect("a server was found");
        tcp.unacked = Some(server_key);
        if let Some(server) = self.servers.get_mut(&server_key) {
            server.pending += 1;
        }
        self.queue_accept(vm_name);
        let key = tcp.key();
        let session = self.sessions.get_mut(&sid).expect("looked up");
        session.insert_at(id.0, Handle::Host(key));
        if let Some(vm) = self.vms.get_mut(vm_name) {
            vm.open += 1;
        }
        out.deliver(
            EventBody::Accept {
                server: server_id,
                socket: id,
                local: server_local,
                remote: Address::Inet(peer),
            },
            &[],
        );
        tcp.open();
        self.hosts.insert(key, tcp);
    }
}
