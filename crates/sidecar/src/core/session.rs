//! One guest's session: its VM, mode, the ids it holds, its parked calls, its push side.

use std::collections::HashMap;
use std::sync::Arc;

use sidecar_protocol::{capability, Mode};
use tokio::task::AbortHandle;

use super::{ServerKey, SessionId, StreamKey, UdpKey};
use crate::host::HostKey;
use crate::metrics::CallCounts;
use crate::outbound::Outbound;

/// What a guest-visible id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    Stream(StreamKey),
    Server(ServerKey),
    Udp(UdpKey),
    /// A TCP connection to a destination outside the VM.
    Host(HostKey),
}

pub struct Session {
    pub id: SessionId,
    pub vm: String,
    pub mode: Mode,
    /// Initial per-socket credit window (enforced with flow control).
    pub credit: u64,
    /// Directory for relative Unix paths.
    pub cwd: String,
    /// The negotiated capabilities.
    pub capabilities: Vec<String>,
    pub out: Arc<Outbound>,
    handles: HashMap<u64, Handle>,
    next_id: u64,
    /// Parked calls, so they can be dropped with the session.
    parked: HashMap<u64, AbortHandle>,
    next_park: u64,
    pub calls: CallCounts,
}

impl Session {
    pub fn new(
        id: SessionId,
        vm: String,
        mode: Mode,
        credit: u64,
        cwd: String,
        capabilities: Vec<String>,
        out: Arc<Outbound>,
    ) -> Self {
        Session {
            id,
            vm,
            mode,
            credit,
            cwd,
            capabilities,
            out,
            handles: HashMap::new(),
            next_id: 1,
            parked: HashMap::new(),
            next_park: 1,
            calls: CallCounts::default(),
        }
    }

    pub fn has(&self, cap: &str) -> bool {
        capability::has(&self.capabilities, cap)
    }

    /// A new stream socket's receive window: the session's `credit` where it negotiated
    /// `credit`. A poll-mode session that did not gets the same window, refilled by what
    /// its `net.poll` takes ([`Session::window_refills_on_poll`]): its data waits in the
    /// sidecar until polled, so without a window one socket it never polls would hold
    /// all a writer sends. A push-mode session without credit has no window; what it
    /// does not read is bounded by `session_outbound_bytes` instead.
    pub fn stream_window(&self) -> Option<u64> {
        (self.has(capability::CREDIT) || self.window_refills_on_poll()).then_some(self.credit)
    }

    /// A poll-mode session without the `credit` capability: each `data` its `net.poll`
    /// takes is a grant of that many bytes.
    pub fn window_refills_on_poll(&self) -> bool {
        self.mode == Mode::Poll && !self.has(capability::CREDIT)
    }

    pub fn handle(&self, id: u64) -> Option<Handle> {
        self.handles.get(&id).copied()
    }

    /// Mints the next id (ids are never reused within a session).
    pub fn insert(&mut self, handle: Handle) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.handles.insert(id, handle);
        id
    }

    /// Mints an id to hand out later with [`Session::insert_at`] (a host connect needs
    /// its id before it completes).
    pub fn mint_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Hands out a minted id.
    pub fn insert_at(&mut self, id: u64, handle: Handle) {
        debug_assert!(self.was_issued(id) && !self.handles.contains_key(&id));
        self.handles.insert(id, handle);
    }

    /// Whether `id` was ever handed out (a closed id stays "issued": ids are not reused).
    pub fn was_issued(&self, id: u64) -> bool {
        id >= 1 && id < self.next_id
    }

    pub fn remove(&mut self, id: u64) -> Option<Handle> {
        self.handles.remove(&id)
    }

    pub fn handles(&self) -> impl Iterator<Item = (u64, Handle)> + '_ {
        self.handles.iter().map(|(id, h)| (*id, *h))
    }

    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    pub fn parked_count(&self) -> usize {
        self.parked.len()
    }

    /// Records a parked call; returns its ticket for [`Session::unpark`].
    pub fn park(&mut self, abort: AbortHandle) -> u64 {
        let ticket = self.next_park;
        self.next_park += 1;
        self.parked.insert(ticket, abort);
        ticket
    }

    pub fn unpark(&mut self, ticket: u64) -> bool {
        self.parked.remove(&ticket).is_some()
    }

    /// Aborts every parked call (the session ended).
    pub fn drop_parked(&mut self) -> usize {
        let n = self.parked.len();
        for (_, abort) in self.parked.drain() {
            abort.abort();
        }
        n
    }
}
