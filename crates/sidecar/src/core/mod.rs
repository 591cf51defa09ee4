//! The sidecar's state: sessions, VMs and their socket tables, in-VM stream sockets and
//! servers. It lives on the RPC loop thread only (one `Rc<RefCell<Core>>`), so it needs no
//! locks; no borrow of it is ever held across an `.await`.
//!
//! Split by subject (private modules): `session` (a guest's ids and push side), `vm` (a
//! VM's listener table and ports), `servers` (listen, accept, backlog), `streams`
//! (connect, write, shutdown, destroy), `lifecycle` (hello and session end). Host sockets (destinations
//! outside the VM) live in [`crate::host`]; their handles are here too.

mod flow;
mod lifecycle;
mod pending;
mod poll;
mod servers;
pub(crate) mod session;
mod streams;
mod udp;
pub(crate) mod udp_group;
mod vm;

use std::collections::HashMap;
use std::sync::Arc;

use notify_fabric::Fabric;
use sidecar_protocol::{ErrorCode, ServerId, SocketId, WireError};

use crate::config::{Limits, SidecarConfig};
use crate::host::publish::Published;
use crate::host::{HostKey, HostNet, HostTcp};
use crate::metrics::Metrics;
use crate::policy::Proto;

pub use lifecycle::HelloOutcome;
pub use pending::Connecting;
pub use poll::PollKind;
pub use servers::{resolve_in_vm, Server};
pub use session::{Handle, Session};
pub use streams::{ConnectStep, PairAddrs, StreamEnd, Target};
pub use udp::UdpSock;
pub use vm::{UdpDrops, Vm};

/// A session's id (sidecar-wide, never reused).
pub type SessionId = u64;

/// An in-VM stream end, sidecar-wide (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey(pub u64);

/// A UDP socket, sidecar-wide (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpKey(pub u64);

/// A server, sidecar-wide (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerKey(pub u64);

/// What the sidecar's internal waits wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// A server's backlog got room, or the server went away.
    ServerRoom(ServerKey),
    /// Poll mode: an event was queued for this id of this session.
    Poll(SessionId, u64),
    /// Peer pairing: the accept answered the pending pair of this client port.
    Paired(u16),
    /// A VM's pending connections fell (or a listener of it closed): by [`Vm::key`].
    VmRoom(u64),
}

pub struct Core {
    pub config: Arc<SidecarConfig>,
    pub fabric: Fabric<Key>,
    pub metrics: Arc<Metrics>,
    pub(crate) vms: HashMap<String, Vm>,
    pub(crate) sessions: HashMap<SessionId, Session>,
    pub(crate) streams: HashMap<StreamKey, StreamEnd>,
    pub(crate) servers: HashMap<ServerKey, Server>,
    pub(crate) udp: HashMap<UdpKey, UdpSock>,
    /// Connections to destinations outside the VMs (host kernel sockets).
    pub(crate) hosts: HashMap<HostKey, HostTcp>,
    /// The readiness thread and the channel host sockets report their end on.
    pub host: HostNet,
    /// Published host ports → where they lead, and the tasks serving them.
    pub(crate) published: HashMap<std::net::SocketAddr, Published>,
    pub(crate) publishers: HashMap<(std::net::SocketAddr, Proto), tokio::task::JoinHandle<()>>,
    /// Published UDP addresses → where they lead, and (once served) their sockets.
    pub(crate) published_udp_targets: HashMap<std::net::SocketAddr, Published>,
    pub(crate) udp_publications:
        HashMap<std::net::SocketAddr, crate::host::publish_udp::UdpPublication>,
    /// Connects to our own published ports waiting for their accept, by client port.
    pub(crate) pairing: HashMap<u16, crate::host::pairing::PendingPair>,
    /// One-time event-channel tokens → their session.
    pub(crate) event_tokens: HashMap<String, SessionId>,
    /// The byte-stream transports' writer tasks, awaited by a shutdown so that what is
    /// queued reaches the guests ([`crate::shutdown`]).
    pub(crate) writers: tokio::task::JoinSet<()>,
    /// Sessions whose in-VM stream data was held back at their outbound cap, for
    /// [`crate::transport::turn::resume_held`] (woken by `held_notify`).
    pub(crate) held: Vec<SessionId>,
    pub(crate) held_notify: std::rc::Rc<tokio::sync::Notify>,
    /// Set once a shutdown has told every session: connections still waiting for their
    /// hello close then instead of holding the flush up ([`crate::shutdown`]).
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Connections waiting for their hello (the hello gate's cap and eviction).
    pub(crate) waiting_room: std::rc::Rc<crate::transport::WaitingRoom>,
    next_key: u64,
}

impl Core {
    pub fn new(config: Arc<SidecarConfig>, metrics: Arc<Metrics>, host: HostNet) -> Self {
        let mut core = Core {
            config: Arc::new(SidecarConfig::default()),
            fabric: Fabric::new(),
            metrics,
            vms: HashMap::new(),
            sessions: HashMap::new(),
            streams: HashMap::new(),
            servers: HashMap::new(),
            udp: HashMap::new(),
            hosts: HashMap::new(),
            host,
            published: HashMap::new(),
            publishers: HashMap::new(),
            published_udp_targets: HashMap::new(),
            udp_publications: HashMap::new(),
            pairing: HashMap::new(),
            event_tokens: HashMap::new(),
            writers: tokio::task::JoinSet::new(),
            held: Vec::new(),
            held_notify: std::rc::Rc::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            waiting_room: std::rc::Rc::default(),
            next_key: 1,
        };
        core.add_vms(&config);
        core.config = config;
        core
    }

    /// Gives every VM of `config` a socket table (new VMs an empty one), and every VM
    /// there its effective limits from `config`.
    fn add_vms(&mut self, config: &SidecarConfig) {
        for name in config.vms.keys() {
            let limits = config.limits_for(name);
            match self.vms.get_mut(name) {
                Some(vm) => vm.limits = limits,
                None => {
                    let vm = Vm::new(name.clone(), self.next_key(), limits);
                    self.vms.insert(name.clone(), vm);
                }
            }
        }
    }

    /// The effective limits of VM `vm` (the global ones for a VM that is gone).
    pub fn vm_limits(&self, vm: &str) -> &Limits {
        self.vms
            .get(vm)
            .map_or(&self.config.limits, |vm| &vm.limits)
    }

    /// The effective limits of session `sid`'s VM.
    pub fn session_limits(&self, sid: SessionId) -> &Limits {
        match self.sessions.get(&sid) {
            Some(session) => self.vm_limits(&session.vm),
            None => &self.config.limits,
        }
    }

    /// A reloaded operator configuration: new VMs get their (empty) socket tables; VMs
    /// that are gone keep theirs while sessions remain (they can no longer be attached
    /// to, as their secret is gone with them). Every configured VM's limits are
    /// replaced: new calls see the new values (what a live connection captured, its
    /// write limits, stays). A VM whose pending limit grew lets its waiting connects retry.
    ///
    /// Returns the tasks of publications removed: aborted, they close their listeners
    /// once the loop drops them, which awaiting them waits for.
    #[must_use = "await the removed publications' tasks: their listeners close when they end"]
    pub fn apply_config(&mut self, config: SidecarConfig) -> Vec<tokio::task::JoinHandle<()>> {
        self.add_vms(&config);
        for vm in self.vms.values() {
            self.fabric.notify_all(&Key::VmRoom(vm.key));
        }
        let (added, total) = (
            config
                .vms
                .keys()
                .filter(|n| !self.config.vms.contains_key(*n))
                .count(),
            config.vms.len(),
        );
        tracing::info!(
            vms = total,
            added,
            rules = config.policy.rules.len(),
            "configuration applied"
        );
        // Publications: where each published host port leads now; ports no longer
        // published stop being served (their listener closes with its task).
        let targets = |proto: Proto| {
            config
                .publications()
                .filter(move |(_, p, ..)| *p == proto)
                .map(|(host, _, vm, port)| {
                    let vm = vm.to_owned();
                    (host, Published { vm, port })
                })
                .collect::<HashMap<_, _>>()
        };
        self.published = targets(Proto::Tcp);
        self.published_udp_targets = targets(Proto::Udp);
        let (tcp, udp) = (&self.published, &self.published_udp_targets);
        let removed: Vec<_> = self
            .publishers
            .keys()
            .filter(|(host, proto)| match proto {
                Proto::Tcp => !tcp.contains_key(host),
                Proto::Udp => !udp.contains_key(host),
            })
            .copied()
            .collect();
        let stopping: Vec<_> = removed
            .iter()
            .filter_map(|key| self.publishers.remove(key))
            .inspect(|task| task.abort())
            .collect();
        // A UDP publication that stays may lead elsewhere now; one that goes, goes.
        self.udp_publications
            .retain(|host, publication| match udp.get(host) {
                Some(target) => {
                    publication.vm.clone_from(&target.vm);
                    publication.port = target.port;
                    true
                }
                None => false,
            });
        self.config = Arc::new(config);
        // Targets, VMs and their limits may all have changed.
        self.refresh_udp_routes(None);
        stopping
    }

    /// A fresh sidecar-wide key (sessions, streams, servers share the counter).
    pub(crate) fn next_key(&mut self) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        key
    }

    pub fn session(&self, sid: SessionId) -> Option<&Session> {
        self.sessions.get(&sid)
    }

    pub(crate) fn session_mut(&mut self, sid: SessionId) -> Result<&mut Session, WireError> {
        self.sessions
            .get_mut(&sid)
            .ok_or_else(|| WireError::new(ErrorCode::Ebadf, "the session has ended"))
    }

    /// The stream a guest's socket id names, or `EBADF`.
    pub(crate) fn stream_of(
        &self,
        sid: SessionId,
        socket: SocketId,
    ) -> Result<StreamKey, WireError> {
        match self.sessions.get(&sid).and_then(|s| s.handle(socket.0)) {
            Some(Handle::Stream(key)) => Ok(key),
            _ => Err(WireError::new(
                ErrorCode::Ebadf,
                format!("no such socket: {socket}"),
            )),
        }
    }

    /// The UDP socket a guest's socket id names, or `EBADF`.
    pub(crate) fn udp_of(&self, sid: SessionId, socket: SocketId) -> Result<UdpKey, WireError> {
        match self.sessions.get(&sid).and_then(|s| s.handle(socket.0)) {
            Some(Handle::Udp(key)) => Ok(key),
            _ => Err(WireError::new(
                ErrorCode::Ebadf,
                format!("no such UDP socket: {socket}"),
            )),
        }
    }

    /// The server a guest's server id names, or `EBADF`.
    pub(crate) fn server_of(
        &self,
        sid: SessionId,
        server: ServerId,
    ) -> Result<ServerKey, WireError> {
        match self.sessions.get(&sid).and_then(|s| s.handle(server.0)) {
            Some(Handle::Server(key)) => Ok(key),
            _ => Err(WireError::new(
                ErrorCode::Ebadf,
                format!("no such server: {server}"),
            )),
        }
    }

    /// The VM a session belongs to.
    pub(crate) fn vm_of(&mut self, sid: SessionId) -> Result<&mut Vm, WireError> {
        let name = self.session_mut(sid)?.vm.clone();
        self.vms
            .get_mut(&name)
            .ok_or_else(|| WireError::new(ErrorCode::Eacces, "the VM no longer exists"))
    }

    /// Refuses a new socket or server past the VM's limit.
    pub(crate) fn check_room(&mut self, sid: SessionId, count: usize) -> Result<(), WireError> {
        let vm = self.vm_of(sid)?;
        let limit = vm.limits.sockets_per_vm;
        if vm.open + count > limit {
            return Err(WireError::new(
                ErrorCode::Emfile,
                format!("the VM has {} sockets open (limit {limit})", vm.open),
            ));
        }
        Ok(())
    }
}
