//! The guest's socket table: which state an event belongs to.
//!
//! Every event names a socket or a server; the table finds its state and applies the
//! event (see [`super::socket_state`] and [`super::udp_state`]), which wakes whichever
//! task waits on it. The table also owns the lifetime rules that span two states (an
//! `accept` creates a socket state in a server's backlog; dropping a listener orphans its
//! backlog), and the one rule that spans all of them: when the connection to the sidecar
//! is lost, every socket and server fails with the same error, so no task waits for an
//! event that cannot come.
//!
//! In poll mode the table also answers the event source's one question, *which ids are
//! worth polling* ([`SocketTable::poll_targets`]): those a task waits on, and those whose
//! handle is gone but whose `close` is still to be collected.

use std::collections::HashMap;
use std::task::{Poll, Waker};

use sidecar_protocol::{Address, ErrorCode, Event, EventBody, ServerId, SocketId, WireError};

use super::socket_state::{Owner, ServerState, StreamState};
use super::udp_state::UdpState;

/// An id the poll-mode source can poll, with the call that polls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PollTarget {
    /// `net.poll`
    Stream(SocketId),
    /// `net.server_poll`
    Server(ServerId),
    /// `dgram.poll`
    Udp(SocketId),
}

/// What the loop must do after an event, beyond updating state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Followup {
    Nothing,
    /// An `accept` for a server nobody listens on any more: destroy the new socket.
    DestroyOrphan(SocketId),
}

/// A non-blocking `net.connect` (sent `noreply`) waiting for its `connect` or `error`
/// event, which carries the call's id as `request`.
#[derive(Debug, Default)]
struct PendingConnect {
    outcome: Option<Result<SocketId, WireError>>,
    waker: Option<Waker>,
    /// The program stopped waiting: a socket that still arrives is destroyed.
    abandoned: bool,
}

/// What to send when a listener handle is dropped.
#[derive(Debug, Default)]
pub(crate) struct ServerRelease {
    /// Send `net.server_close` (the server is still open at the sidecar).
    pub close: bool,
    /// Accepted sockets nobody took: destroy them.
    pub orphans: Vec<SocketId>,
}

#[derive(Debug, Default)]
pub(crate) struct SocketTable {
    streams: HashMap<SocketId, StreamState>,
    servers: HashMap<ServerId, ServerState>,
    udp: HashMap<SocketId, UdpState>,
    /// Non-blocking connects in flight, by request id.
    connects: HashMap<u64, PendingConnect>,
    /// The connection to the sidecar is gone, and why.
    broken: Option<WireError>,
    /// Events that named nothing this table knows.
    pub unrouted: u64,
}

impl SocketTable {
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    pub fn stream_mut(&mut self, id: SocketId) -> Result<&mut StreamState, WireError> {
        self.streams
            .get_mut(&id)
            .ok_or_else(|| WireError::new(ErrorCode::Ebadf, format!("unknown {id}")))
    }

    pub fn server_mut(&mut self, id: ServerId) -> Result<&mut ServerState, WireError> {
        self.servers
            .get_mut(&id)
            .ok_or_else(|| WireError::new(ErrorCode::Ebadf, format!("unknown {id}")))
    }

    pub fn udp_mut(&mut self, id: SocketId) -> Result<&mut UdpState, WireError> {
        self.udp
            .get_mut(&id)
            .ok_or_else(|| WireError::new(ErrorCode::Ebadf, format!("unknown UDP {id}")))
    }

    /// A UDP socket the program just created.
    pub fn insert_udp(&mut self, id: SocketId) {
        let mut state = UdpState::new();
        if let Some(error) = &self.broken {
            state.fail(error.clone());
        }
        self.udp.insert(id, state);
    }

    /// A UDP handle was dropped. Returns whether `dgram.close` must be sent.
    pub fn release_udp(&mut self, id: SocketId) -> bool {
        let Some(state) = self.udp.get_mut(&id) else {
            return false;
        };
        state.handle_dropped = true;
        if state.is_closed() || self.broken.is_some() {
            self.udp.remove(&id);
            return false;
        }
        true
    }

    /// The ids worth polling (poll mode), in a stable order: those a task waits on, and
    /// those whose handle is gone but whose `close` is still to be collected.
    pub fn poll_targets(&self) -> Vec<PollTarget> {
        if self.broken.is_some() {
            return Vec::new();
        }
        let mut targets: Vec<PollTarget> = self
            .streams
            .iter()
            .filter(|(_, s)| s.wants_events())
            .map(|(id, _)| PollTarget::Stream(*id))
            .chain(
                self.servers
                    .iter()
                    .filter(|(_, s)| s.wants_events())
                    .map(|(id, _)| PollTarget::Server(*id)),
            )
            .chain(
                self.udp
                    .iter()
                    .filter(|(_, s)| s.wants_events())
                    .map(|(id, _)| PollTarget::Udp(*id)),
            )
            .collect();
        targets.sort_unstable();
        targets
    }

    /// Whether `target` is still worth polling (tasks ran since the list was made).
    pub fn wants(&self, target: PollTarget) -> bool {
        self.broken.is_none()
            && match target {
                PollTarget::Stream(id) => self.streams.get(&id).is_some_and(|s| s.wants_events()),
                PollTarget::Server(id) => self.servers.get(&id).is_some_and(|s| s.wants_events()),
                PollTarget::Udp(id) => self.udp.get(&id).is_some_and(|s| s.wants_events()),
            }
    }

    /// A socket the program owns from the start (a connect).
    pub fn insert_stream(&mut self, id: SocketId, local: Address, remote: Address) {
        self.insert_owned(id, local, remote, Owner::Handle);
    }

    fn insert_owned(&mut self, id: SocketId, local: Address, remote: Address, owner: Owner) {
        let mut state = StreamState::new(local, remote, owner);
        if let Some(error) = &self.broken {
            state.fail(error.clone());
        }
        self.streams.insert(id, state);
    }

    pub fn insert_server(&mut self, id: ServerId) {
        let mut state = ServerState::new();
        if let Some(error) = &self.broken {
            state.on_error(error.clone());
        }
        self.servers.insert(id, state);
    }

    /// A `noreply` connect was sent as `request`.
    pub fn start_connect(&mut self, request: u64) {
        let mut pending = PendingConnect::default();
        if let Some(error) = &self.broken {
            pending.outcome = Some(Err(error.clone()));
        }
        self.connects.insert(request, pending);
    }

    /// The connect's outcome (the socket's state then exists, owned by a handle), or
    /// `Pending` with `waker` registered.
    pub fn poll_connect(
        &mut self,
        request: u64,
        waker: &Waker,
    ) -> Poll<Result<SocketId, WireError>> {
        let Some(pending) = self.connects.get_mut(&request) else {
            return Poll::Ready(Err(WireError::new(
                ErrorCode::Einval,
                format!("no connect in flight as request {request}"),
            )));
        };
        if let Some(outcome) = pending.outcome.take() {
            self.connects.remove(&request);
            return Poll::Ready(outcome);
        }
        pending.waker = Some(waker.clone());
        Poll::Pending
    }

    /// The program dropped a connect before it resolved. Returns a socket to destroy if
    /// the connect had succeeded meanwhile.
    pub fn abandon_connect(&mut self, request: u64) -> Option<SocketId> {
        let pending = self.connects.get_mut(&request)?;
        match pending.outcome.take() {
            Some(Ok(socket)) => {
                self.connects.remove(&request);
                self.release_stream(socket).then_some(socket)
            }
            Some(Err(_)) => {
                self.connects.remove(&request);
                None
            }
            None => {
                pending.abandoned = true;
                pending.waker = None;
                None
            }
        }
    }

    /// Settles a pending connect; a socket whose connect was abandoned must be destroyed.
    fn settle_connect(&mut self, request: u64, outcome: Result<SocketId, WireError>) -> Followup {
        let Some(pending) = self.connects.get_mut(&request) else {
            return Followup::Nothing;
        };
        if pending.abandoned {
            self.connects.remove(&request);
            return match outcome {
                Ok(socket) => Followup::DestroyOrphan(socket),
                Err(_) => Followup::Nothing,
            };
        }
        pending.outcome = Some(outcome);
        if let Some(waker) = pending.waker.take() {
            waker.wake();
        }
        Followup::Nothing
    }

    /// The program took an accepted socket from its server's backlog.
    pub fn claim(&mut self, id: SocketId) -> Option<(Address, Address)> {
        let state = self.streams.get_mut(&id)?;
        state.owner = Owner::Handle;
        Some((state.local.clone(), state.remote.clone()))
    }

    /// A stream handle was dropped. Returns whether `net.destroy` must be sent.
    pub fn release_stream(&mut self, id: SocketId) -> bool {
        let Some(state) = self.streams.get_mut(&id) else {
            return false;
        };
        state.owner = Owner::Gone;
        if state.is_closed() || self.broken.is_some() {
            self.streams.remove(&id);
            return false;
        }
        true
    }

    /// A listener handle was dropped.
    pub fn release_server(&mut self, id: ServerId) -> ServerRelease {
        let Some(server) = self.servers.get_mut(&id) else {
            return ServerRelease::default();
        };
        server.handle_dropped = true;
        let orphans = server.drain_backlog();
        let closed = server.is_closed();
        if closed || self.broken.is_some() {
            self.servers.remove(&id);
        }
        let mut release = ServerRelease {
            close: !closed && self.broken.is_none(),
            orphans: Vec::new(),
        };
        for socket in orphans {
            if self.release_stream(socket) {
                release.orphans.push(socket);
            }
        }
        release
    }

    /// Applies one event to the state it names.
    pub fn dispatch(&mut self, event: Event, payload: Vec<u8>) -> Followup {
        match event.body {
            EventBody::Accept {
                server,
                socket,
                local,
                remote,
            } => {
                let Some(state) = self.servers.get_mut(&server).filter(|s| s.is_open()) else {
                    // Kept until its `close`, so its late events are recognised.
                    self.insert_owned(socket, local, remote, Owner::Gone);
                    return Followup::DestroyOrphan(socket);
                };
                state.on_accept(socket);
                self.insert_owned(socket, local, remote, Owner::Backlog);
            }
            // The `net.connect` reply already created the socket.
            EventBody::Connect { socket, .. } if self.streams.contains_key(&socket) => {}
            // A non-blocking connect succeeded.
            EventBody::Connect {
                socket,
                local,
                remote,
                request: Some(request),
            } if self.connects.contains_key(&request) => {
                let followup = self.settle_connect(request, Ok(socket));
                let owner = match followup {
                    Followup::Nothing => Owner::Handle,
                    Followup::DestroyOrphan(_) => Owner::Gone,
                };
                self.insert_owned(socket, local, remote, owner);
                return followup;
            }
            // A non-blocking connect failed.
            EventBody::Error {
                socket: None,
                request: Some(request),
                code,
                message,
                ..
            } if self.connects.contains_key(&request) => {
                return self.settle_connect(request, Err(WireError::new(code, message)));
            }
            EventBody::Data { socket } => self.on_stream(socket, |s| s.on_data(payload)),
            EventBody::End { socket } => self.on_stream(socket, StreamState::on_end),
            EventBody::Drain { socket } => self.on_stream(socket, StreamState::on_drain),
            EventBody::Message { socket, remote } => match self.udp.get_mut(&socket) {
                Some(state) => state.on_message(remote, payload),
                None => self.unrouted += 1,
            },
            EventBody::Close {
                socket: Some(socket),
                ..
            } => self.on_socket_close(socket),
            EventBody::Close {
                server: Some(server),
                ..
            } => match self.servers.get_mut(&server) {
                Some(state) => {
                    state.on_close();
                    if state.handle_dropped {
                        self.servers.remove(&server);
                    }
                }
                None => self.unrouted += 1,
            },
            EventBody::Error {
                socket: Some(socket),
                request,
                code,
                message,
                ..
            } => {
                let error = WireError::new(code, message);
                if let Some(state) = self.udp.get_mut(&socket) {
                    state.on_error(error);
                } else {
                    self.on_stream(socket, |s| s.on_error(error, request.is_some()));
                }
            }
            EventBody::Error {
                server: Some(server),
                code,
                message,
                ..
            } => match self.servers.get_mut(&server) {
                Some(state) => state.on_error(WireError::new(code, message)),
                None => self.unrouted += 1,
            },
            // Errors that name nothing, a `connect` for an unknown socket, kinds added
            // later: nobody here to tell.
            _ => self.unrouted += 1,
        }
        Followup::Nothing
    }

    /// `close` of a stream or UDP socket (ids are unique across kinds).
    fn on_socket_close(&mut self, socket: SocketId) {
        if let Some(state) = self.streams.get_mut(&socket) {
            if state.on_close() {
                self.streams.remove(&socket);
            }
        } else if let Some(state) = self.udp.get_mut(&socket) {
            if state.on_close() {
                self.udp.remove(&socket);
            }
        } else {
            self.unrouted += 1;
        }
    }

    fn on_stream(&mut self, id: SocketId, apply: impl FnOnce(&mut StreamState)) {
        match self.streams.get_mut(&id) {
            Some(state) => apply(state),
            None => self.unrouted += 1,
        }
    }

    /// The connection to the sidecar is gone: every socket and server fails with `error`
    /// (after the data they already have), and all their waiters are woken.
    pub fn fail_all(&mut self, error: WireError) {
        for state in self.streams.values_mut() {
            state.fail(error.clone());
        }
        for state in self.servers.values_mut() {
            state.on_error(error.clone());
        }
        for state in self.udp.values_mut() {
            state.fail(error.clone());
        }
        self.streams.retain(|_, s| s.owner != Owner::Gone);
        self.servers.retain(|_, s| !s.handle_dropped);
        self.udp.retain(|_, s| !s.handle_dropped);
        self.connects.retain(|_, pending| !pending.abandoned);
        for pending in self.connects.values_mut() {
            pending.outcome.get_or_insert(Err(error.clone()));
            if let Some(waker) = pending.waker.take() {
                waker.wake();
            }
        }
        self.broken.get_or_insert(error);
    }
}

#[cfg(test)]
mod tests;
