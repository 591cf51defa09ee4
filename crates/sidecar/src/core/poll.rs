//! Poll mode's side of the core: which ids may be polled, and taking an event (a polled
//! `accept` counts as the guest taking the connection).

use sidecar_protocol::{ErrorCode, EventBody, Mode, WireError};

use super::{Core, Handle, SessionId};
use crate::outbound::Polled;

/// What a poll call may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollKind {
    /// `net.poll`: a stream socket.
    Stream,
    /// `net.server_poll`: a server.
    Server,
    /// `dgram.poll`: a UDP socket.
    Udp,
}

impl Core {
    /// A poll is valid in poll mode, on a live id of the right kind, or on a closed id
    /// whose `close` has not been polled yet.
    pub fn check_poll(&self, sid: SessionId, id: u64, kind: PollKind) -> Result<(), WireError> {
        let Some(session) = self.session(sid) else {
            return Err(WireError::new(ErrorCode::Ebadf, "the session has ended"));
        };
        if session.mode != Mode::Poll {
            return Err(WireError::invalid(
                "poll calls need a poll-mode session (hello mode \"poll\")",
            ));
        }
        let live_kind = match session.handle(id) {
            Some(Handle::Stream(_) | Handle::Host(_)) => Some(PollKind::Stream),
            Some(Handle::Server(_)) => Some(PollKind::Server),
            Some(Handle::Udp(_)) => Some(PollKind::Udp),
            None => None,
        };
        match live_kind {
            Some(k) if k == kind => Ok(()),
            None if session.out.has_poll_queue(id) => Ok(()),
            _ => Err(WireError::new(
                ErrorCode::Ebadf,
                format!("nothing to poll with id {id}"),
            )),
        }
    }

    /// Takes `id`'s next queued event, if any.
    pub fn take_polled(&mut self, sid: SessionId, id: u64) -> Option<Polled> {
        let session = self.sessions.get(&sid)?;
        let refills = session.window_refills_on_poll();
        let polled = session.out.take_polled(id)?;
        if let (EventBody::Data { socket }, true) = (&polled.0, refills) {
            let _ = self.credit(sid, *socket, polled.1.len() as u64);
        }
        if let EventBody::Accept { socket, .. } = &polled.0 {
            match self.stream_of(sid, *socket) {
                Ok(key) => self.touch(key),
                // A connection accepted on a published port.
                Err(_) => self.touch_host(sid, *socket),
            }
        }
        Some(polled)
    }
}
