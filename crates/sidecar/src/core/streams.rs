//! In-VM stream sockets (TCP and Unix): connect, write, shutdown, destroy.
//!
//! A connection is two [`StreamEnd`]s that name each other. Connect pairs them atomically
//! (no half-made connection is ever visible) and pushes `accept` to the server's guest. A
//! write is pushed to the peer's guest by this very loop iteration: one hop in, one out,
//! no other thread. Per end: `data`* then at most one `end` then `close`, nothing after.

use std::net::SocketAddr;

use sidecar_protocol::{
    Address, Endpoint, ErrorCode, EventBody, SocketId, WireError, WriteResult, DEFAULT_CONNECT_HOST,
};

use super::servers::{resolve_in_vm, Bound};
use super::{Core, Handle, ServerKey, SessionId, StreamKey};
use crate::addr::{
    as_seen_by_listener, effective_destination, is_vm_local, normalize_unix_path, source_for,
};

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
}

/// Where a connect may go, resolved inside the VM.
#[derive(Debug, Clone)]
pub enum Target {
    /// Candidate addresses, tried in order (`localhost` → 127.0.0.1 then ::1).
    Tcp(Vec<SocketAddr>),
    Unix(String),
}

/// What one connect attempt found.
#[derive(Debug)]
pub enum ConnectStep {
    Connected {
        socket: SocketId,
        local: Address,
        remote: Address,
    },
    /// The listener's backlog is full: wait for room (or its close).
    Full(ServerKey),
}

impl Core {
    /// Resolves a connect's endpoint inside the VM. Destinations outside the VM are
    /// `EACCES` until host sockets exist.
    pub fn connect_target(
        &mut self,
        sid: SessionId,
        endpoint: &Endpoint,
    ) -> Result<Target, WireError> {
        match endpoint {
            Endpoint::Inet { host, port } => {
                let host = host.as_deref().unwrap_or(DEFAULT_CONNECT_HOST);
                let ips = resolve_in_vm(host)?;
                let local: Vec<SocketAddr> = ips
                    .iter()
                    .filter(|ip| is_vm_local(**ip))
                    .map(|ip| SocketAddr::new(*ip, *port))
                    .collect();
                if local.is_empty() {
                    return Err(WireError::new(
                        ErrorCode::Eacces,
                        format!("connect EACCES {host}:{port}: outside the VM, not allowed"),
                    ));
                }
                if *port == 0 {
                    return Err(WireError::new(ErrorCode::Econnrefused, "connect to port 0"));
                }
                Ok(Target::Tcp(local))
            }
            Endpoint::Unix { path } => {
                let cwd = self.session_mut(sid)?.cwd.clone();
                normalize_unix_path(path, &cwd)
                    .map(Target::Unix)
                    .ok_or_else(|| WireError::invalid("a Unix path must be non-empty, without NUL"))
            }
        }
    }

    /// One connect attempt: connected, backlog full, or an error (no listener…).
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
                    .find_map(|addr| vm.find_tcp(addr.ip(), addr.port()).map(|k| (k, *addr)));
                match found {
                    Some((key, addr)) => (key, Some(addr)),
                    None => {
                        let first = candidates[0];
                        return Err(WireError::new(
                            ErrorCode::Econnrefused,
                            format!("connect ECONNREFUSED {first}"),
                        ));
                    }
                }
            }
            Target::Unix(path) => match self.vm_of(sid)?.find_unix(path) {
                Some(key) => (key, None),
                None => {
                    return Err(WireError::new(
                        ErrorCode::Enoent,
                        format!("connect ENOENT {path}"),
                    ))
                }
            },
        };
        if !self.servers[&server].has_room() {
            return Ok(ConnectStep::Full(server));
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
        let server = &self.servers[&server_key];
        let (server_sid, server_id, bound, vm_name) = (
            server.session,
            server.id,
            server.bound.clone(),
            server.vm.clone(),
        );
        let (client_local, client_remote, server_local, server_remote, client_port) = match bound {
            Bound::Tcp(bound_ip, bound_port) => {
                let dest = dest.expect("a TCP listener is reached by address");
                let port = self.vm_of(client_sid)?.claim_client_port().ok_or_else(|| {
                    WireError::new(ErrorCode::Eaddrnotavail, "no ephemeral port is free")
                })?;
                let local = SocketAddr::new(source_for(dest.ip()), port);
                let remote = SocketAddr::new(effective_destination(dest.ip()), bound_port);
                (
                    Address::Inet(local),
                    Address::Inet(remote),
                    Address::Inet(as_seen_by_listener(bound_ip, remote)),
                    Address::Inet(as_seen_by_listener(bound_ip, local)),
                    Some(port),
                )
            }
            Bound::Unix(path) => (
                Address::Unix(String::new()),
                Address::Unix(path.clone()),
                Address::Unix(path),
                Address::Unix(String::new()),
                None,
            ),
        };
        let (client_key, server_end_key) = (StreamKey(self.next_key()), StreamKey(self.next_key()));
        let client_id = SocketId(
            self.session_mut(client_sid)?
                .insert(Handle::Stream(client_key)),
        );
        let accepted_id = SocketId(
            self.session_mut(server_sid)?
                .insert(Handle::Stream(server_end_key)),
        );
        let end = |session, id, peer, local: &Address, remote: &Address| StreamEnd {
            session,
            id,
            vm: vm_name.clone(),
            peer: Some(peer),
            local: local.clone(),
            remote: remote.clone(),
            write_open: true,
            read_open: true,
            no_delay: false,
            keep_alive: false,
            client_port: None,
            unacked: None,
        };
        let mut client_end = end(
            client_sid,
            client_id,
            server_end_key,
            &client_local,
            &client_remote,
        );
        client_end.client_port = client_port;
        let mut server_end = end(
            server_sid,
            accepted_id,
            client_key,
            &server_local,
            &server_remote,
        );
        server_end.unacked = Some(server_key);
        self.streams.insert(client_key, client_end);
        self.streams.insert(server_end_key, server_end);
        self.vm_of(client_sid)?.open += 2;
        if let Some(server) = self.servers.get_mut(&server_key) {
            server.pending += 1;
        }
        let accept = EventBody::Accept {
            server: server_id,
            socket: accepted_id,
            local: server_local,
            remote: server_remote,
        };
        self.sessions[&server_sid].out.event(accept, &[]);
        Ok(ConnectStep::Connected {
            socket: client_id,
            local: client_local,
            remote: client_remote,
        })
    }

    /// Any call naming an accepted socket acknowledges its accept.
    pub(crate) fn touch(&mut self, key: StreamKey) {
        let unacked = self
            .streams
            .get_mut(&key)
            .and_then(|end| end.unacked.take());
        self.acknowledge(unacked);
    }

    pub fn write(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        payload: &[u8],
    ) -> Result<WriteResult, WireError> {
        let key = self.stream_of(sid, socket)?;
        self.touch(key);
        let end = &self.streams[&key];
        if !end.write_open {
            return Err(WireError::new(ErrorCode::Epipe, "write after end"));
        }
        let Some(peer) = end.peer.and_then(|p| self.streams.get(&p)) else {
            return Err(WireError::new(
                ErrorCode::Epipe,
                "the peer has closed the connection",
            ));
        };
        let out = &self.sessions[&peer.session].out;
        for chunk in payload.chunks(out.max_data_payload()) {
            out.event(EventBody::Data { socket: peer.id }, chunk);
        }
        Ok(WriteResult::default())
    }

    /// FIN: the peer gets `end`. When both directions have ended, both ends close.
    pub fn shutdown(&mut self, sid: SessionId, socket: SocketId) -> Result<(), WireError> {
        let key = self.stream_of(sid, socket)?;
        self.touch(key);
        let end = self.streams.get_mut(&key).expect("looked up");
        if !end.write_open {
            return Ok(());
        }
        end.write_open = false;
        let (peer, read_open) = (end.peer, end.read_open);
        if let Some(peer_key) = peer {
            self.end_reading(peer_key);
        }
        if !read_open {
            if let Some(peer_key) = peer {
                self.close_end(peer_key, true);
            }
            self.close_end(key, true);
        }
        Ok(())
    }

    /// Pushes `end` to `key`'s guest (once).
    fn end_reading(&mut self, key: StreamKey) {
        if let Some(end) = self.streams.get_mut(&key) {
            if end.read_open {
                end.read_open = false;
                self.sessions[&end.session]
                    .out
                    .event(EventBody::End { socket: end.id }, &[]);
            }
        }
    }

    /// Closes a socket now. Its peer gets `end` then `close`. The caller pushes this
    /// socket's own `close` after its reply.
    pub fn destroy(&mut self, sid: SessionId, socket: SocketId) -> Result<(), WireError> {
        let key = self.stream_of(sid, socket)?;
        self.abort_stream(key);
        Ok(())
    }

    /// Tears a connection down from `key`'s side without telling `key`'s own guest.
    pub(crate) fn abort_stream(&mut self, key: StreamKey) {
        let Some(end) = self.close_end(key, false) else {
            return;
        };
        if let Some(peer) = end.peer {
            self.end_reading(peer);
            self.close_end(peer, true);
        }
    }

    /// Frees one end: ports, backlog slot, id; pushes its `close` if `notify_guest`.
    fn close_end(&mut self, key: StreamKey, notify_guest: bool) -> Option<StreamEnd> {
        let end = self.streams.remove(&key)?;
        if let Some(peer) = end.peer.and_then(|p| self.streams.get_mut(&p)) {
            peer.peer = None;
        }
        if let Some(vm) = self.vms.get_mut(&end.vm) {
            if let Some(port) = end.client_port {
                vm.release_client_port(port);
            }
            vm.open -= 1;
        }
        self.acknowledge(end.unacked);
        if let Some(session) = self.sessions.get_mut(&end.session) {
            session.remove(end.id.0);
            if notify_guest {
                session
                    .out
                    .event(EventBody::socket_closed(end.id, false), &[]);
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

    /// `net.credit`: acknowledges an accept; the window itself arrives with flow control.
    /// A grant for a socket that already closed is ignored (it races with `close`).
    pub fn credit(&mut self, sid: SessionId, socket: SocketId) -> Result<(), WireError> {
        match self.stream_of(sid, socket) {
            Ok(key) => {
                self.touch(key);
                Ok(())
            }
            Err(_) if self.session_mut(sid)?.was_issued(socket.0) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
