//! Where the loop's events come from.
//!
//! The handles and the socket table do not care how an event reached the guest; only
//! this module does. Both sources hand out events of the one pushed shape, so the table's
//! dispatch, the handles and the guest program are the same in both modes.
//!
//! **Push** mode: the sidecar sends events as they happen, so the loop's idle wait is a
//! blocking receive on the transport: the guest sleeps until the sidecar has something,
//! and no timer exists anywhere.
//!
//! **Poll** mode is the legacy baseline the project is measured against (the bench's
//! `guest-poll` lane), so it reproduces the old polyfill faithfully, neither helped nor
//! handicapped:
//!
//! - the ids worth polling are those a task waits on (a read, an accept, a receive, a
//!   drain) plus dropped handles whose `close` is still to be collected
//!   ([`SocketTable::poll_targets`]);
//! - each is asked with `wait_ms = 0` (`net.poll`, `net.server_poll`, `dgram.poll`); an
//!   id whose poll returned an event is polled again at once, before any other (the
//!   polyfill's "event → poll again immediately");
//! - the loop sleeps only once **every** waited-on id has answered `null` since the last
//!   event (a *pass* that found nothing): then it waits out the timer (default 4 ms) and
//!   counts a timer wake. An event anywhere starts the pass over, so ids polled before it
//!   are asked again before sleeping; an id is never asked twice in a row for nothing.
//!
//! The timer is a timed receive on the transport rather than a bare sleep: it lasts the
//! same when nothing comes, and it still collects the only frames a poll-mode sidecar
//! sends unasked (`error` events that name no id), so those are not held for a tick.
//!
//! A poll that fails without breaking the session (`EBADF`: the sidecar no longer knows
//! the id) is turned into that id's `error` then `close`, so its waiters wake with the
//! error and the id is not polled again.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use sidecar_protocol::{
    DgramPollParams, Event, EventBody, Mode, PollParams, ServerPollParams, WireError,
};

use super::table::{PollTarget, SocketTable};
use crate::client::{Client, EventFrame, LOCAL_SEQ};
use crate::error::ClientError;

/// The old polyfill's re-poll timer.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(4);

/// How long the loop may wait for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Until one arrives (the loop has nothing else to do). In poll mode: until one is
    /// found, or one pass found nothing and the timer ran out.
    Block,
    /// Only what is already there (tasks are ready; don't starve events meanwhile). In
    /// poll mode: polls, but never sleeps.
    Poll,
}

/// The loop's event source, chosen from the session's mode.
#[derive(Debug)]
pub(crate) enum EventSource {
    /// Events pushed by the sidecar, received from the client's stream.
    Push,
    /// Events asked for with poll calls.
    Poll(PollSource),
}

impl EventSource {
    pub fn for_mode(mode: Mode, interval: Duration) -> EventSource {
        match mode {
            Mode::Push => EventSource::Push,
            Mode::Poll => EventSource::Poll(PollSource::new(interval)),
        }
    }

    /// The next event, if any arrives within `wait`.
    pub fn next(
        &mut self,
        client: &mut Client,
        interest: &SocketTable,
        wait: Wait,
    ) -> Result<Option<EventFrame>, ClientError> {
        match self {
            EventSource::Push => match wait {
                Wait::Block => client.next_event(None),
                Wait::Poll => client.try_next_event(),
            },
            EventSource::Poll(source) => source.next(client, interest, wait),
        }
    }

    /// Whether waiting for an event can involve a timer (never in push mode; the loop
    /// counts such wakes so a test can assert there are none).
    pub fn uses_timer(&self) -> bool {
        matches!(self, EventSource::Poll(_))
    }

    /// Poll calls sent and how many answered `null` (0 in push mode).
    pub fn poll_counts(&self) -> (u64, u64) {
        match self {
            EventSource::Push => (0, 0),
            EventSource::Poll(source) => (source.polls, source.empty_polls),
        }
    }
}

/// Poll mode's state between two requests for an event.
#[derive(Debug)]
pub(crate) struct PollSource {
    interval: Duration,
    /// The id whose last poll returned an event: asked again first.
    hot: Option<PollTarget>,
    /// Ids of the current pass not asked yet.
    pass: VecDeque<PollTarget>,
    /// A pass is under way (`pass` holds its rest).
    in_pass: bool,
    /// The current pass found an event, so another pass follows before any sleep.
    pass_found: bool,
    /// Ids that answered `null` since the last event: not asked again before a sleep.
    quiet: HashSet<PollTarget>,
    /// Events made up locally (a failed poll's `error` + `close`), handed out first.
    synthetic: VecDeque<EventFrame>,
    polls: u64,
    empty_polls: u64,
}

impl PollSource {
    fn new(interval: Duration) -> PollSource {
        PollSource {
            interval,
            hot: None,
            pass: VecDeque::new(),
            in_pass: false,
            pass_found: false,
            quiet: HashSet::new(),
            synthetic: VecDeque::new(),
            polls: 0,
            empty_polls: 0,
        }
    }

    fn next(
        &mut self,
        client: &mut Client,
        table: &SocketTable,
        wait: Wait,
    ) -> Result<Option<EventFrame>, ClientError> {
        if let Some(event) = self.synthetic.pop_front() {
            return Ok(Some(event));
        }
        if let Some(event) = client.next_queued_event() {
            return Ok(Some(event));
        }
        while let Some(target) = self.next_target(table) {
            if let Some(event) = self.poll(client, target)? {
                self.quiet.clear();
                self.pass_found = true;
                self.hot = Some(target);
                return Ok(Some(event));
            }
            self.quiet.insert(target);
        }
        // Every waited-on id answered `null` since the last event.
        self.quiet.clear();
        match wait {
            Wait::Poll => Ok(None),
            Wait::Block => client.next_event(Some(Instant::now() + self.interval)),
        }
    }

    /// The next id to ask, or `None` when a pass found nothing (time to sleep).
    fn next_target(&mut self, table: &SocketTable) -> Option<PollTarget> {
        let askable =
            |quiet: &HashSet<PollTarget>, t: PollTarget| table.wants(t) && !quiet.contains(&t);
        if let Some(hot) = self.hot.take() {
            if askable(&self.quiet, hot) {
                return Some(hot);
            }
        }
        loop {
            while let Some(target) = self.pass.pop_front() {
                if askable(&self.quiet, target) {
                    return Some(target);
                }
            }
            let again = !self.in_pass || self.pass_found;
            self.in_pass = false;
            if !again {
                return None;
            }
            let quiet = &self.quiet;
            self.pass = table
                .poll_targets()
                .into_iter()
                .filter(|t| !quiet.contains(t))
                .collect();
            if self.pass.is_empty() {
                return None;
            }
            self.in_pass = true;
            self.pass_found = false;
        }
    }

    /// One poll call (`wait_ms = 0`). A non-fatal failure becomes the id's `error` and
    /// `close`; a fatal one is returned (the session is gone).
    fn poll(
        &mut self,
        client: &mut Client,
        target: PollTarget,
    ) -> Result<Option<EventFrame>, ClientError> {
        self.polls += 1;
        let result = match target {
            PollTarget::Stream(socket) => client.poll(&PollParams { socket, wait_ms: 0 }),
            PollTarget::Server(server) => client.poll(&ServerPollParams { server, wait_ms: 0 }),
            PollTarget::Udp(socket) => client.poll(&DgramPollParams { socket, wait_ms: 0 }),
        };
        match result {
            Ok(None) => {
                self.empty_polls += 1;
                Ok(None)
            }
            Ok(Some(event)) => Ok(Some(event)),
            Err(err) if err.is_fatal() => Err(err),
            Err(err) => {
                self.synthetic
                    .extend(failed_poll(target, err.to_wire_error()));
                Ok(self.synthetic.pop_front())
            }
        }
    }
}

/// What a failed poll means for its id: an `error`, then `close` (the id cannot be
/// polled any more, so nothing else will come for it).
fn failed_poll(target: PollTarget, error: WireError) -> [EventFrame; 2] {
    let (socket, server) = match target {
        PollTarget::Stream(id) | PollTarget::Udp(id) => (Some(id), None),
        PollTarget::Server(id) => (None, Some(id)),
    };
    let error = EventBody::Error {
        socket,
        server,
        request: None,
        code: error.code,
        message: format!("poll failed: {}", error.message),
    };
    let close = EventBody::Close {
        socket,
        server,
        had_error: true,
    };
    [
        (Event::new(LOCAL_SEQ, error), Vec::new()),
        (Event::new(LOCAL_SEQ, close), Vec::new()),
    ]
}
