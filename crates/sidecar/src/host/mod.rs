//! Host sockets: a guest's connections and datagrams to destinations outside its VM,
//! carried by real kernel sockets whose readiness comes from the one readiness thread.
//!
//! Where a connect or a datagram goes (DESIGN.md, "Isolation and policy"), in order:
//! 1. a listener (or bound UDP socket) of the same VM at that address → in memory;
//! 2. otherwise a host kernel socket, if the operator's [`Policy`](crate::policy::Policy)
//!    allows the destination (the host's own loopback counts as outside the VM);
//! 3. otherwise `ECONNREFUSED` for a loopback destination (what an empty kernel answers)
//!    and `EACCES`, naming the policy, for any other.
//!
//! Each host socket is registered with the readiness thread with an inline handler
//! ([`tcp`], [`udp`], and a published UDP port's [`udp_route`]) that pushes to the
//! guest's session directly. Waiting (a connect's
//! completion, a host name's resolution on the [`dns_pool`]) is a parked call on the RPC loop, never a block.
//! A connection that can carry nothing more is reported to the RPC loop through a
//! [`HostNotice`], which frees it and pushes its `close`.

pub mod connect;
pub mod connect_unix;
pub mod dns_pool;
pub mod pairing;
pub mod publish;
pub mod publish_udp;
pub mod resolve;
pub mod resolver;
pub mod stream;
pub mod tcp;
pub mod udp;
pub mod udp_route;

use std::net::SocketAddr;
use std::sync::Arc;

use readiness::Reactor;
use sidecar_protocol::{ErrorCode, EventBody, SocketId, WireError};
use tokio::sync::mpsc::UnboundedSender;

use crate::addr::{canonical, is_vm_local};
use crate::core::{Core, Handle, SessionId};
use crate::policy::Proto;
pub use tcp::HostTcp;
pub use udp::HostUdp;

/// A host connection, sidecar-wide (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostKey(pub u64);

/// From a host socket's handler to the RPC loop.
#[derive(Debug, Clone, Copy)]
pub enum HostNotice {
    /// Nothing more can flow on `key`: free it.
    Finished { key: HostKey, had_error: bool },
    /// A socket of this session stopped reading because its guest has not taken what is
    /// queued for it (`session_outbound_bytes`): resume it once there is room.
    Held(SessionId),
}

/// What host sockets need from the running sidecar.
pub struct HostNet {
    pub reactor: Arc<Reactor>,
    pub notices: UnboundedSender<HostNotice>,
    /// Host name lookups' worker threads ([`resolve`], [`dns_pool`]).
    pub dns: dns_pool::DnsPool,
}

impl Core {
    /// Steps 2 and 3 of the routing order, for destinations with no in-VM receiver: the
    /// candidates the policy lets VM `vm` reach over `proto` (in the order given), or the
    /// error the guest gets.
    pub fn outside(
        &self,
        vm: &str,
        proto: Proto,
        candidates: &[SocketAddr],
        verb: &str,
    ) -> Result<Vec<SocketAddr>, WireError> {
        let allowed: Vec<SocketAddr> = candidates
            .iter()
            .filter(|addr| self.config.allowing(vm, **addr, proto).is_some())
            .map(|addr| SocketAddr::new(canonical(addr.ip()), addr.port()))
            .collect();
        if !allowed.is_empty() {
            return Ok(allowed);
        }
        let first = candidates[0];
        if candidates.iter().any(|addr| is_vm_local(addr.ip())) {
            return Err(WireError::new(
                ErrorCode::Econnrefused,
                format!("{verb} ECONNREFUSED {first}"),
            ));
        }
        Err(WireError::new(
            ErrorCode::Eacces,
            format!("{verb} EACCES: {}", self.config.denial(vm, first)),
        ))
    }

    /// A Unix path with no listener in VM `vm`: the host socket file its `unix:` rules
    /// allow (resolved), or the error the guest gets: `ENOENT` where no rule covers the
    /// path (as the VM's own namespace answers) or it does not exist on the host,
    /// `EACCES` where it resolves through a symlink outside every rule.
    pub fn outside_unix(&self, vm: &str, path: &str) -> Result<std::path::PathBuf, WireError> {
        use crate::policy::unix::UnixVerdict;
        match self.config.unix_verdict(vm, path) {
            UnixVerdict::Allowed(resolved) => Ok(resolved),
            UnixVerdict::NotCovered => Err(WireError::new(
                ErrorCode::Enoent,
                format!(
                    "connect ENOENT {path} (no listener in this VM, and no unix: allow rule \
                     covers it on the host)"
                ),
            )),
            UnixVerdict::Missing(kind) => {
                let e = std::io::Error::from(kind);
                Err(io_wire_error(&format!("connect {path}"), &e))
            }
            UnixVerdict::Escapes => Err(WireError::new(
                ErrorCode::Eacces,
                format!(
                    "connect EACCES {path}: it resolves (through a symlink) outside the \
                     host paths the policy allows"
                ),
            )),
        }
    }

    /// The host connection a guest's socket id names, if it is one.
    pub(crate) fn host_of(&self, sid: SessionId, socket: SocketId) -> Option<&HostTcp> {
        match self.session(sid)?.handle(socket.0)? {
            Handle::Host(key) => self.hosts.get(&key),
            _ => None,
        }
    }

    /// A call of session `sid` names `socket`: if it is a host connection accepted on a
    /// published port and not taken yet, the guest has taken it now.
    pub(crate) fn touch_host(&mut self, sid: SessionId, socket: SocketId) {
        let Some(Handle::Host(key)) = self.session(sid).and_then(|s| s.handle(socket.0)) else {
            return;
        };
        let Some(server) = self.hosts.get_mut(&key).and_then(|tcp| tcp.unacked.take()) else {
            return;
        };
        let vm = self.sessions[&sid].vm.clone();
        self.acknowledge(&vm, server);
    }

    /// Frees a host connection: its id, its VM slot (and backlog slot), its kernel socket
    /// (deregistered, then closed). Pushes `close` if `notify_guest`.
    pub fn close_host(&mut self, key: HostKey, notify_guest: bool, had_error: bool) {
        let Some(tcp) = self.hosts.remove(&key) else {
            return;
        };
        tcp.forget();
        let (sid, id) = (tcp.session(), tcp.id());
        if let Some(session) = self.sessions.get_mut(&sid) {
            session.remove(id.0);
            let vm = session.vm.clone();
            if notify_guest {
                session
                    .out
                    .deliver(EventBody::socket_closed(id, had_error), &[]);
            }
            if let Some(vm) = self.vms.get_mut(&vm) {
                vm.open -= 1;
            }
            if let Some(server) = tcp.unacked {
                self.acknowledge(&vm, server);
            }
        }
    }
}

/// A host socket's I/O error as the guest sees it: the POSIX code, and a message
/// `"{what} {CODE}: {error}"` in Node's style.
pub(crate) fn io_wire_error(what: &str, e: &std::io::Error) -> WireError {
    let code = ErrorCode::from_io_error(e);
    let message = format!("{what} {}: {e}", code.as_str());
    WireError::new(code, message)
}

thread_local! {
    /// The read buffer of handlers: they all run on the readiness thread, one at a time,
    /// so one buffer serves every host socket (not 64 KiB per socket, nor a fresh one per
    /// event).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Datagrams one handler run reads at most before letting the readiness thread serve the
/// other sources (it runs again right after them).
const DATAGRAM_BUDGET: usize = 64;

/// A UDP handler's run: reads the datagrams waiting on `socket` (up to a budget) and
/// hands each to `received`, which returns `false` to stop reading for good (the guest
/// socket closed); other errors than "would block" go to `failed` (an ICMP report for
/// an earlier send, say) and reading goes on. Returns what the handler returns.
pub(crate) fn read_datagrams(
    socket: &std::net::UdpSocket,
    mut received: impl FnMut(&[u8], SocketAddr) -> bool,
    mut failed: impl FnMut(&std::io::Error),
) -> readiness::Next {
    use readiness::{Interest, Next};
    let mut budget = DATAGRAM_BUDGET;
    with_read_buffer(sidecar_protocol::MAX_UDP_PAYLOAD, |buf| loop {
        if budget == 0 {
            return Next::again(Interest::READABLE);
        }
        budget -= 1;
        match socket.recv_from(buf) {
            Ok((n, from)) if received(&buf[..n], from) => {}
            Ok(_) => return Interest::NONE.into(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Interest::READABLE.into()
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => failed(&e),
        }
    })
}

/// Runs `f` with this thread's read buffer, at least `len` bytes long.
pub(crate) fn with_read_buffer<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        f(&mut buf[..len])
    })
}

/// The RPC loop's side of [`HostNotice`]s: frees finished host connections, and hands
/// held sessions to [`crate::transport::turn::resume_held`].
pub async fn reap(
    core: std::rc::Rc<std::cell::RefCell<Core>>,
    mut notices: tokio::sync::mpsc::UnboundedReceiver<HostNotice>,
) {
    while let Some(notice) = notices.recv().await {
        let mut core = core.borrow_mut();
        match notice {
            HostNotice::Finished { key, had_error } => core.close_host(key, true, had_error),
            HostNotice::Held(sid) => {
                crate::metrics::bump(&core.metrics.outbound_held_back);
                core.held.push(sid);
                core.held_notify.notify_one();
            }
        }
    }
}
