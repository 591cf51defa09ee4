//! In-VM stream sockets (TCP and Unix): connect, write, shutdown, destroy.
//!
//! A connection is two [`StreamEnd`]s that name each other. Connect pairs them atomically
//! (no half-made connection is ever visible) and pushes `accept` to the server's guest. A
//! write is pushed to the peer's guest by this very loop iteration: one hop in, one out,
//! no other thread. Per end: `data`* then at most one `end` then `close`, nothing after.

use std::collections::VecDeque;
use std::net::SocketAddr;

use sidecar_protocol::{
    Address, Endpoint, ErrorCode, EventBody, SocketId, WireError, DEFAULT_CONNECT_HOST,
};

use super::servers::{resolve_in_vm, Bound};
use super::{Core, Handle, Key, ServerKey, SessionId, StreamKey};
use crate::addr::{
    as_seen_by_listener, effective_destination, is_vm_local, normalize_unix_path, source_for,
};
use crate::host::resolve::needs_host_resolver;
use crate::policy::Proto;

pub struct StreamEnd {
    pub session: SessionId,
    pub id: SocketId,
    pub vm: String,
    /// The other end; `None` once it is gone.
    pub peer: Option<StreamKey>,
    pub local: Address,
    pub remote: Address,
    /// This end may still write (no `net.shutdown` yet).
    pub write_open: bool,
    /// The peer may still write to this end (no `end` pushed yet).
    pub read_open: bool,
    pub no_delay: bool,
    pub keep_alive: bool,
    /// The ephemeral port this end holds in its VM.
    pub client_port: Option<u16>,
    /// The server whose backlog this (accepted) end still counts against.
    pub unacked: Option<ServerKey>,
    /// Bytes the peer wrote that this end's guest has not been given yet (bounded by the
    /// writer's hard limit), and their count.
    pub inbox: VecDeque<Vec<u8>>,
    pub inbox_bytes: usize,
    /// The VM whose buffer cap the inbox counts against: the peer's (the writer's).
    pub writer_vm: String,
    /// Receive window left (credit); `None` when credit was not negotiated.
    pub window: Option<u64>,
    /// `end` has been delivered to this end's guest.
    pub end_sent: bool,
    /// The peer is gone: close this end once its inbox and `end` are delivered.
    pub closing: bool,
    /// This end's writes passed the high-water mark: `drain` when the peer's inbox falls
    /// below it.
    pub drain_needed: bool,
}

/// Where a connect may go.
#[derive(Debug, Clone)]
pub enum Target {
    /// Candidate addresses, tried in order (`localhost` → 127.0.0.1 then ::1).
    Tcp(Vec<SocketAddr>),
    Unix(String),
    /// A name only the host's resolver knows (resolved off the loop, then `Tcp`).
    Name(String, u16),
}

/// The addresses of a new connection, as each end reports them, and the ephemeral port
/// the client end holds in its VM.
pub struct PairAddrs {
    pub client_local: Address,
    pub client_remote: Address,
    pub server_local: Address,
    pub server_remote: Address,
    pub client_port: Option<u16>,
}

/// What one connect attempt found.
#[derive(Debug)]
pub enum ConnectStep {
    Connected {
        socket: SocketId,
        local: Address,
        remote: Address,
    },
    /// The listener's backlog is full ([`Key::ServerRoom`]), or its VM is at its pending
    /// connections limit ([`Key::VmRoom`]): wait on that key for room (or the close).
    Full(Key),
    /// No listener in the VM; the policy allows these host destinations (in order).
    Outside(Vec<SocketAddr>),
    /// No listener at this path in the VM; a `unix:` rule allows this host socket file
    /// (the path as resolved on the host).
    OutsideUnix(std::path::PathBuf),
}

impl Core {
    /// Resolves a connect's endpoint: VM names and literals here, other names later by
    /// the host's resolver.
    pub fn connect_target(
        &mut self,
        sid: SessionId,
        endpoint: &Endpoint,
    ) -> Result<Target, WireError> {
        match endpoint {
            Endpoint::Inet { host, port } => {
                let host = host.as_deref().unwrap_or(DEFAULT_CONNECT_HOST);
                if *port == 0 {
                    return Err(WireError::new(ErrorCode::Econnrefused, "connect to port 0"));
                }
                if needs_host_resolver(host) {
                    return Ok(Target::Name(host.to_owned(), *port));
                }
                let ips = resolve_in_vm(host)?;
                Ok(Target::Tcp(
                    ips.into_iter()
                        .map(|ip| SocketAddr::new(ip, *port))
                        .collect(),
                ))
            }
            Endpoint::Unix { path } => {
                let cwd = self.session_mut(sid)?.cwd.clone();
                normalize_unix_path(path, &cwd)
                    .map(Target::Unix)
                    .ok_or_else(|| WireError::invalid("a Unix path must be non-empty, without NUL"))
            }
        }
    }

    /// One connect attempt: connected in the VM, backlog full, outside the VM (allowed),
    /// or an error (`ECONNREFUSED`, `EACCES`, `ENOENT`…).
    pub fn try_connect(
        &mut self,
        sid: SessionId,
        target: &Target,
    ) -> Result<ConnectStep, WireError> {
        let (server, dest) = match target {
            Target::Tcp(candidates) => {
                let vm = self.vm_of(sid)?;
                let found = candidates
                    .iter()
                    .filter(|addr| is_vm_local(addr.ip()))
                    .find_map(|addr| vm.find_tcp(addr.ip(), addr.port()).map(|k| (k, *addr)));
                match found {
                    Some((key, addr)) => (key, Some(addr)),
                    None => {
                        let vm = self.session_mut(sid)?.vm.clone();
                        return self
                            .outside(&vm, Proto::Tcp, candidates, "connect")
                            .map(ConnectStep::Outside);
                    }
                }
            }
            Target::Unix(path) => match self.vm_of(sid)?.find_unix(path) {
                Some(key) => (key, None),
                None => {
                    let vm = self.session_mut(sid)?.vm.clone();
                    return self.outside_unix(&vm, path).map(ConnectStep::OutsideUnix);
                }
            },
            Target::Name(host, _) => {
                return Err(WireError::new(
                    ErrorCode::Enotfound,
                    format!("getaddrinfo ENOTFOUND {host} (not resolved yet)"),
                ))
            }
        };
        let server_end = &self.servers[&server];
        if !server_end.has_room() {
            return Ok(ConnectStep::Full(Key::ServerRoom(server)));
        }
        if self.pending_refusal(&server_end.vm).is_some() {
            let vm = &self.vms[&server_end.vm];
            return Ok(ConnectStep::Full(Key::VmRoom(vm.key)));
        }
        self.pair(sid, server, dest)
    }

    /// Makes the two ends of a connection at once and pushes `accept` to the server's guest.
    fn pair(
        &mut self,
        client_sid: SessionId,
        server_key: ServerKey,
        dest: Option<SocketAddr>,
    ) -> Result<ConnectStep, WireError> {
        self.check_room(client_sid, 2)?;
        let bound = self.servers[&server_key].bound.clone();
        let addrs = match bound {
            Bound::Tcp(bound_ip, bound_port) => {
                let dest = dest.expect("a TCP listener is reached by address");
                let port = self.vm_of(client_sid)?.claim_client_port().ok_or_else(|| {
                    WireError::new(ErrorCode::Eaddrnotavail, "no ephemeral port is free")
                })?;
                let local = SocketAddr::new(source_for(dest.ip()), port);
                let remote = SocketAddr::new(effective_destination(dest.ip()), bound_port);
                PairAddrs {
                    client_local: Address::Inet(local),
                    client_remote: Address::Inet(remote),
                    server_local: Address::Inet(as_seen_by_listener(bound_ip, remote)),
                    server_remote: Address::Inet(as_seen_by_listener(bound_ip, local)),
                    client_port: Some(port),
                }
            }
            Bound::Unix(path) => PairAddrs {
                client_local: Address::Unix(String::new()),
                client_remote: Address::Unix(path.clone()),
                server_local: Address::Unix(path),
                server_remote: Address::Unix(String::new()),
                client_port: None,
            },
        };
        let client_id = SocketId(self.session_mut(client_sid)?.mint_id());
        let (local, remote) = (addrs.client_local.clone(), addrs.client_remote.clone());
        self.link(client_sid, client_id, server_key, addrs)?;
        Ok(ConnectStep::Connected {
            socket: client_id,
            local,
            remote,
        })
    }

    /// Links a client end (session `client_sid`, its id already minted) to a new accepted
    /// end at `server_key`'s server, and pushes `accept` to the server's guest. Each end
    /// counts in its own session's VM (a paired connection joins two VMs).
    pub(crate) fn link(
        &mut self,
        client_sid: SessionId,
        client_id: SocketId,
        server_key: ServerKey,
        addrs: PairAddrs,
    ) -> Result<(), WireError> {
        let server = &self.servers[&server_key];
        let (server_sid, server_id, server_vm) = (server.session, server.id, server.vm.clone());
        let client_vm = self.session_mut(client_sid)?.vm.clone();
        let (client_key, server_end_key) = (StreamKey(self.next_key()), StreamKey(self.next_key()));
        self.session_mut(client_sid)?
            .insert_at(client_id.0, Handle::Stream(client_key));
        let accepted_id = SocketId(
            self.session_mut(server_sid)?
                .insert(Handle::Stream(server_end_key)),
        );
        let window_of = |core: &Core, session: SessionId| core.sessions[&session].stream_window();
        let (client_window, server_window) =
            (window_of(self, client_sid), window_of(self, server_sid));
        let end =
            |session, id, vm: &str, peer, local: &Address, remote: &Address, window| StreamEnd {
                session,
                id,
                vm: vm.to_owned(),
                writer_vm: String::new(),
                peer: Some(peer),
                local: local.clone(),
                remote: remote.clone(),
                write_open: true,
                read_open: true,
                no_delay: false,
                keep_alive: false,
                client_port: None,
                unacked: None,
                inbox: VecDeque::new(),
                inbox_bytes: 0,
                window,
                end_sent: false,
                closing: false,
                drain_needed: false,
            };
        let mut client_end = end(
            client_sid,
            client_id,
            &client_vm,
            server_end_key,
            &addrs.client_local,
            &addrs.client_remote,
            client_window,
        );
        client_end.client_port = addrs.client_port;
        // Each inbox counts against the VM of the end that writes into it.
        client_end.writer_vm = server_vm.clone();
        let mut server_end = end(
            server_sid,
            accepted_id,
            &server_vm,
            client_key,
            &addrs.server_local,
            &addrs.server_remote,
            server_window,
        );
        server_end.unacked = Some(server_key);
        server_end.writer_vm = client_vm.clone();
        self.streams.insert(client_key, client_end);
        self.streams.insert(server_end_key, server_end);
        for vm in [&client_vm, &server_vm] {
            if let Some(vm) = self.vms.get_mut(vm) {
                vm.open += 1;
            }
        }
        if let Some(server) = self.servers.get_mut(&server_key) {
            server.pending += 1;
        }
        self.queue_accept(&server_vm);
        let accept = EventBody::Accept {
            server: server_id,
            socket: accepted_id,
            local: addrs.server_local,
            remote: addrs.server_remote,
        };
        self.sessions[&server_sid].out.deliver(accept, &[]);
        Ok(())
    }

    /// Any call naming an accepted socket acknowledges its accept.
    pub(crate) fn touch(&mut self, key: StreamKey) {
        let Some(end) = self.streams.get_mut(&key) else {
            return;
        };
        if let Some(server) = end.unacked.take() {
            let vm = end.vm.clone();
            self.acknowledge(&vm, server);
        }
    }

    /// Frees one end: ports, backlog slot, id; pushes its `close` if `notify_guest`.
    pub(crate) fn close_end(&mut self, key: StreamKey, notify_guest: bool) -> Option<StreamEnd> {
        self.close_end_with(key, notify_guest, false)
    }

    /// As [`Core::close_end`]; `had_error` when an `error` event preceded the `close`.
    pub(crate) fn close_end_with(
        &mut self,
        key: StreamKey,
        notify_guest: bool,
        had_error: bool,
    ) -> Option<StreamEnd> {
        let end = self.streams.remove(&key)?;
        self.unbuffer(&end.writer_vm, end.inbox_bytes);
        if let Some(peer) = end.peer.and_then(|p| self.streams.get_mut(&p)) {
            peer.peer = None;
        }
        if let Some(vm) = self.vms.get_mut(&end.vm) {
            if let Some(port) = end.client_port {
                vm.release_client_port(port);
            }
            vm.open -= 1;
        }
        if let Some(server) = end.unacked {
            self.acknowledge(&end.vm, server);
        }
        if let Some(session) = self.sessions.get_mut(&end.session) {
            session.remove(end.id.0);
            if notify_guest {
                session
                    .out
                    .deliver(EventBody::socket_closed(end.id, had_error), &[]);
            }
        }
        Some(end)
    }

    /// `net.socket_set_no_delay` / `net.socket_set_keep_alive`: recorded for in-VM sockets.
    pub fn set_option(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        apply: impl FnOnce(&mut StreamEnd),
    ) -> Result<(), WireError> {
        let key = self.stream_of(sid, socket)?;
        self.touch(key);
        apply(self.streams.get_mut(&key).expect("looked up"));
        Ok(())
    }
}
