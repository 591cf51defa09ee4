//! Where the loop's events come from.
//!
//! The handles and the socket table do not care how an event reached the guest; only
//! this module does. In **push** mode the sidecar sends events as they happen, so the
//! loop's idle wait is a blocking receive on the transport: the guest sleeps until the
//! sidecar has something, and no timer exists anywhere.
//!
//! The next issue adds **poll** mode (the legacy baseline): a second variant that, when
//! asked for the next event, re-polls each socket and server with a waiter
//! (`net.poll {socket, wait_ms: 0}`, `net.server_poll`) and, when all answer `null`,
//! sleeps until the next tick of a 4 ms timer, exactly as the old polyfill did. It needs
//! only what [`EventSource::next`] already receives: the client to call with, and the
//! table to learn which ids have waiters. Poll replies carry events of the pushed shape,
//! so the table's dispatch stays the same.

use sidecar_protocol::Mode;

use super::table::SocketTable;
use crate::client::{Client, EventFrame};
use crate::error::ClientError;

/// How long the loop may wait for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Until one arrives (the loop has nothing else to do).
    Block,
    /// Only what is already there (tasks are ready; don't starve events meanwhile).
    Poll,
}

/// The loop's event source, chosen from the session's mode.
#[derive(Debug)]
pub(crate) enum EventSource {
    /// Events pushed by the sidecar, received from the client's stream.
    Push,
}

impl EventSource {
    pub fn for_mode(mode: Mode) -> Result<EventSource, ClientError> {
        match mode {
            Mode::Push => Ok(EventSource::Push),
            Mode::Poll => Err(ClientError::Unsupported(
                "the guest loop runs in push mode only for now (poll mode arrives with the \
                 next issue)"
                    .into(),
            )),
        }
    }

    /// The next event, if any arrives within `wait`.
    pub fn next(
        &mut self,
        client: &mut Client,
        _interest: &SocketTable,
        wait: Wait,
    ) -> Result<Option<EventFrame>, ClientError> {
        match self {
            EventSource::Push => match wait {
                Wait::Block => client.next_event(None),
                Wait::Poll => client.try_next_event(),
            },
        }
    }

    /// Whether waiting for an event can involve a timer (never in push mode; the loop
    /// counts such wakes so a test can assert there are none).
    pub fn uses_timer(&self) -> bool {
        match self {
            EventSource::Push => false,
        }
    }
}
