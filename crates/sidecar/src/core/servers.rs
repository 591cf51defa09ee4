//! Servers: `net.listen`, `net.server_close`, and the backlog.
//!
//! In push mode a connection is accepted at once and pushed as an `accept` event; it then
//! counts against its server's backlog until the guest *acknowledges* it (any call naming
//! the accepted socket; the guest client sends a zero-byte `net.credit` when its program
//! takes the connection). A connect that finds the backlog full is parked on the server's
//! [`Key::ServerRoom`] until an acknowledgement frees a slot, the server closes, or the
//! connect's timeout passes (`ETIMEDOUT`). A connect that finds the server's VM at its
//! pending connections limit waits the same way on the VM's key ([`super::pending`]).

use std::net::{IpAddr, SocketAddr};

use sidecar_protocol::{
    Address, Endpoint, ErrorCode, EventBody, ListenParams, ListenResult, ServerId, WireError,
    DEFAULT_LISTEN_HOST,
};

use super::{Core, Handle, Key, ServerKey, SessionId, StreamKey};
use crate::addr::{bindable, normalize_unix_path};
use crate::host::HostKey;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Tcp(IpAddr, u16),
    Unix(String),
}

pub struct Server {
    pub session: SessionId,
    pub id: ServerId,
    pub vm: String,
    pub bound: Bound,
    pub local: Address,
    pub backlog: u32,
    /// Accepted connections the guest has not acknowledged yet.
    pub pending: u32,
}

impl Server {
    pub fn has_room(&self) -> bool {
        self.pending < self.backlog
    }
}

/// Resolves a host inside a VM: `localhost` (both loopbacks, IPv4 first), or an IP literal.
pub fn resolve_in_vm(host: &str) -> Result<Vec<IpAddr>, WireError> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ]);
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal.parse::<IpAddr>().map(|ip| vec![ip]).map_err(|_| {
        WireError::new(
            ErrorCode::Enotfound,
            format!("getaddrinfo ENOTFOUND {host}"),
        )
    })
}

impl Core {
    pub fn listen(
        &mut self,
        sid: SessionId,
        params: &ListenParams,
    ) -> Result<ListenResult, WireError> {
        self.check_room(sid, 1)?;
        let vm = self.vm_of(sid)?;
        let (limit, listening) = (vm.limits.listeners_per_vm, vm.listener_count());
        if listening >= limit {
            return Err(WireError::new(
                ErrorCode::Emfile,
                format!("the VM has {listening} listeners (limit {limit})"),
            ));
        }
        let backlog = params.backlog().max(1);
        let key = ServerKey(self.next_key());
        let (bound, local) = match &params.endpoint {
            Endpoint::Inet { host, port } => {
                let host = host.as_deref().unwrap_or(DEFAULT_LISTEN_HOST);
                let ip = *resolve_in_vm(host)?
                    .first()
                    .expect("resolve returns one or more");
                if !bindable(ip) {
                    return Err(WireError::new(
                        ErrorCode::Eaddrnotavail,
                        format!("{ip} is not an address of this VM (it has loopback only)"),
                    ));
                }
                let vm = self.vm_of(sid)?;
                let port = match *port {
                    0 => vm.free_port().ok_or_else(|| {
                        WireError::new(ErrorCode::Eaddrinuse, "no ephemeral port is free")
                    })?,
                    port => port,
                };
                if vm.tcp_bind_conflicts(ip, port) {
                    return Err(WireError::new(
                        ErrorCode::Eaddrinuse,
                        format!("listen EADDRINUSE: address already in use {ip}:{port}"),
                    ));
                }
                vm.add_tcp(ip, port, key);
                (
                    Bound::Tcp(ip, port),
                    Address::Inet(SocketAddr::new(ip, port)),
                )
            }
            Endpoint::Unix { path } => {
                let cwd = self.session_mut(sid)?.cwd.clone();
                let path = normalize_unix_path(path, &cwd).ok_or_else(|| {
                    WireError::invalid("a Unix path must be non-empty, without NUL")
                })?;
                if !self.vm_of(sid)?.add_unix(path.clone(), key) {
                    return Err(WireError::new(
                        ErrorCode::Eaddrinuse,
                        format!("listen EADDRINUSE: address already in use {path}"),
                    ));
                }
                (Bound::Unix(path.clone()), Address::Unix(path))
            }
        };
        let session = self.session_mut(sid)?;
        let vm = session.vm.clone();
        let id = ServerId(session.insert(Handle::Server(key)));
        self.vm_of(sid)?.open += 1;
        self.servers.insert(
            key,
            Server {
                session: sid,
                id,
                vm,
                bound,
                local: local.clone(),
                backlog,
                pending: 0,
            },
        );
        Ok(ListenResult { server: id, local })
    }

    /// Stops a server. Connections its guest has taken are not affected; connects parked
    /// on its backlog are woken and find no listener. Connections accepted but not taken
    /// yet (their `accept` pushed, not acknowledged) are reset, as a kernel resets what
    /// is left in a closed listener's accept queue: the client gets `error ECONNRESET`
    /// and `close`, this guest `close` for the accepted id (before the server's).
    /// `notify_guest` pushes the `close` events (not when the session itself is ending).
    pub fn close_server(&mut self, key: ServerKey, notify_guest: bool) {
        let untaken: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, end)| end.unacked == Some(key))
            .map(|(k, _)| *k)
            .collect();
        for stream in untaken {
            let id = self.streams[&stream].id;
            let session = self.streams[&stream].session;
            self.abort_stream_with(stream, true);
            if notify_guest {
                if let Some(session) = self.sessions.get(&session) {
                    let closed = EventBody::socket_closed(id, false);
                    session.out.deliver(closed, &[]);
                }
            }
        }
        let untaken_hosts: Vec<HostKey> = self
            .hosts
            .iter()
            .filter(|(_, tcp)| tcp.unacked == Some(key))
            .map(|(k, _)| *k)
            .collect();
        for host in untaken_hosts {
            if let Some(tcp) = self.hosts.get(&host) {
                tcp.reset_on_close();
            }
            self.close_host(host, notify_guest, false);
        }
        let Some(server) = self.servers.remove(&key) else {
            return;
        };
        if let Some(vm) = self.vms.get_mut(&server.vm) {
            match &server.bound {
                Bound::Tcp(_, port) => vm.remove_tcp(*port, key),
                Bound::Unix(path) => vm.remove_unix(path),
            }
            vm.open -= 1;
            // Connects waiting for the VM's pending room may now find no listener.
            self.fabric.notify_all(&Key::VmRoom(vm.key));
        }
        if let Some(session) = self.sessions.get_mut(&server.session) {
            session.remove(server.id.0);
            if notify_guest {
                session
                    .out
                    .deliver(EventBody::server_closed(server.id), &[]);
            }
        }
        self.fabric.notify_all(&Key::ServerRoom(key));
    }

    /// A guest of `vm` took (or closed) a connection accepted at server `key`: it no
    /// longer counts against that server's backlog, nor as pending in the VM.
    pub(crate) fn acknowledge(&mut self, vm: &str, key: ServerKey) {
        if let Some(server) = self.servers.get_mut(&key) {
            server.pending = server.pending.saturating_sub(1);
            self.fabric.notify_all(&Key::ServerRoom(key));
        }
        self.accept_taken(vm);
    }
}
