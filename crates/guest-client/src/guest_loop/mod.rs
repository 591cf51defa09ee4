//! The guest loop: a non-blocking, single-thread runtime whose socket operations resolve
//! off events the sidecar pushes.
//!
//! # Why
//!
//! A guest program wants many sockets at once (a server and its clients) but has one
//! thread and cannot block on host sockets. The old polyfill re-polled every socket on a
//! 2–4 ms timer, so every event waited for a tick. Here the loop sleeps in one place only:
//! a blocking receive of the next pushed event. An event wakes exactly the task waiting on
//! the socket it names. No timer exists in push mode.
//!
//! The loop also runs over a **poll-mode** session, reproducing the old polyfill as the
//! baseline the project is measured against: the same handles and program, only the event
//! source differs (it polls the waited-on ids and sleeps on a timer when nothing is
//! ready; see [`source`]). [`GuestLoop::with_poll_interval`] sets that timer.
//!
//! # How it runs
//!
//! [`GuestLoop::block_on`] repeats:
//!
//! 1. poll every task that was woken (the `block_on` future and [`LoopHandle::spawn`]ed
//!    tasks), in wake order;
//! 2. if none is ready any more, block until the next event, apply it to the socket table
//!    (which wakes the task waiting on that socket or server), and apply the events the
//!    client queued meanwhile; if tasks are still ready, take only the events already
//!    received, so a busy task cannot starve the sockets.
//!
//! Operations that need the sidecar's answer (`connect`, `bind`, `shutdown`, options)
//! are blocking calls, like an isolate's callSync; events that arrive during one are
//! queued by the client and applied after, in order. Writes are mostly `noreply`: the
//! guest does not wait a round trip per write, and a failed write is reported by the
//! socket's next operation; one write per 64 KiB is a blocking call, whose reply tells
//! whether the sidecar's buffer passed its high-water mark (then writing waits for
//! `drain`; see [`stream`]). In push mode a connect is sent `noreply` and resolves off
//! its `connect` event, so other tasks run meanwhile; in poll mode it is a blocking call
//! (its event could not be polled before the reply names the socket).
//!
//! If the connection to the sidecar is lost, every socket and server fails with
//! `ECONNRESET` (after the data it already received), so no task waits for an event that
//! cannot come.
//!
//! # Wakes from other threads
//!
//! Wakers are thread-safe, but while the transport is up the loop sleeps in the
//! transport, so a task woken by another thread runs at the next event. Guest code that
//! mixes in other threads' futures should expect that.

mod executor;
mod listener;
mod socket_state;
mod source;
mod stream;
mod table;
mod udp;
mod udp_state;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::ops::Deref;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use sidecar_protocol::{
    capability, CallParams, CreditParams, DestroyParams, DgramCloseParams, Event, Family,
    LookupParams, Mode, ServerCloseParams, SocketId,
};

use crate::client::Client;
use crate::error::ClientError;
use executor::{Executor, MAIN};
use source::{EventSource, Wait};
use table::{Followup, SocketTable};

pub use executor::JoinHandle;
pub use listener::{TcpListener, UnixListener};
pub use source::DEFAULT_POLL_INTERVAL;
pub use stream::{TcpStream, UnixStream};
pub use udp::UdpSocket;

/// Room left for the header of a `net.write` frame when splitting large writes.
const WRITE_HEADER_ROOM: usize = 256;
/// Largest payload of one `net.write` frame.
const MAX_WRITE_CHUNK: usize = 256 * 1024;
/// Events applied per round while tasks are ready (keeps a flood from starving them).
const EVENTS_PER_BUSY_ROUND: usize = 64;

/// What the loop did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Events applied to the socket table.
    pub events: u64,
    /// Events that named no socket or server the loop knows.
    pub unrouted_events: u64,
    /// Times the loop had no task to run and went to its event source (push mode: a
    /// blocking receive; poll mode: polls, then a timer sleep if none found an event).
    pub idle_waits: u64,
    /// Idle waits that ended on a timer instead of an event (always 0 in push mode;
    /// in poll mode, each re-poll tick).
    pub timer_wakes: u64,
    /// `net.credit` calls sent (acknowledgements of accepted sockets included).
    pub credit_calls: u64,
    /// Poll calls sent (`net.poll`, `net.server_poll`, `dgram.poll`; poll mode only).
    pub polls: u64,
    /// Poll calls answered `null`.
    pub empty_polls: u64,
    /// `net.write`s sent as blocking calls (one per 64 KiB written: flow control).
    pub sync_writes: u64,
    /// Times a write waited for `drain` (a blocking write's reply said `need_drain`).
    pub drain_waits: u64,
}

/// Credit granting, from hello: grant in batches of half the initial window.
#[derive(Debug, Clone, Copy)]
struct CreditPolicy {
    enabled: bool,
    threshold: u64,
}

/// Everything the loop and its handles share (one thread).
pub(crate) struct Shared {
    client: RefCell<Client>,
    table: RefCell<SocketTable>,
    source: RefCell<EventSource>,
    executor: Executor,
    credit: CreditPolicy,
    mode: Mode,
    /// Connects are sent `noreply` and resolve off their `connect` / `error` event, so
    /// the loop runs on while the sidecar establishes them (push mode with `noreply`).
    nonblocking_connect: bool,
    write_chunk: usize,
    counters: Cell<LoopCounters>,
}

/// A cheap, cloneable reference to a guest loop: what handles and tasks hold.
///
/// Handle constructors take `&LoopHandle`; a `&GuestLoop` works too (it derefs to one).
/// Inside a spawned task, use a clone: `let lp = lp.handle(); lp.spawn(async move { .. })`.
#[derive(Clone)]
pub struct LoopHandle {
    shared: Rc<Shared>,
}

/// The guest loop. Owns the session ([`Client`]) and the tasks; not `Send` (one thread).
///
/// Dropping it drops every unfinished task (their sockets are destroyed); handles kept
/// elsewhere stay usable for blocking calls but no longer receive events.
pub struct GuestLoop {
    handle: LoopHandle,
}

impl GuestLoop {
    /// A loop over a connected client, push or poll mode (poll mode re-polls on
    /// [`DEFAULT_POLL_INTERVAL`]). A session whose events go to a separate event channel
    /// is `ENOTSUP` (this loop reads them from the client's own stream).
    pub fn new(client: Client) -> Result<GuestLoop, ClientError> {
        GuestLoop::with_poll_interval(client, DEFAULT_POLL_INTERVAL)
    }

    /// As [`GuestLoop::new`], with poll mode's re-poll timer set to `interval` (ignored
    /// in push mode, which has no timer). `Duration::ZERO` re-polls without sleeping:
    /// a busy loop, useful only to measure the cost of polling itself.
    pub fn with_poll_interval(
        client: Client,
        interval: Duration,
    ) -> Result<GuestLoop, ClientError> {
        if client.has_capability(capability::EVENT_CHANNEL) {
            return Err(ClientError::Unsupported(
                "the session's events go to a separate event channel".into(),
            ));
        }
        let mode = client.mode();
        let source = EventSource::for_mode(mode, interval);
        let nonblocking_connect = mode == Mode::Push && client.has_capability(capability::NOREPLY);
        let credit = CreditPolicy {
            enabled: client.has_capability(capability::CREDIT),
            threshold: (client.credit_window() / 2).max(1),
        };
        let write_chunk = client
            .max_frame()
            .saturating_sub(WRITE_HEADER_ROOM)
            .clamp(1, MAX_WRITE_CHUNK);
        let shared = Shared {
            client: RefCell::new(client),
            table: RefCell::default(),
            source: RefCell::new(source),
            executor: Executor::new(),
            credit,
            mode,
            nonblocking_connect,
            write_chunk,
            counters: Cell::default(),
        };
        Ok(GuestLoop {
            handle: LoopHandle {
                shared: Rc::new(shared),
            },
        })
    }

    /// A handle to pass to tasks.
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// Runs `future` to completion, together with the spawned tasks, on this thread.
    /// Spawned tasks still pending when it returns keep their state and run again at the
    /// next `block_on`.
    ///
    /// # Panics
    ///
    /// When called from inside the loop (a task calling `block_on`).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let shared = &*self.handle.shared;
        let _entered = shared.executor.enter();
        let mut future = pin!(future);
        let (flag, waker) = shared.executor.main_waker();
        loop {
            let mut batch = shared.executor.take_ready();
            while let Some(id) = batch.pop_front() {
                if id != MAIN {
                    shared.executor.poll_task(id);
                    continue;
                }
                if let Poll::Ready(output) =
                    shared.executor.poll_main(&flag, &waker, future.as_mut())
                {
                    shared.executor.requeue(batch);
                    return output;
                }
            }
            if shared.executor.has_ready() {
                shared.apply_available_events();
            } else {
                shared.wait_for_event();
            }
        }
    }
}

impl Deref for GuestLoop {
    type Target = LoopHandle;

    fn deref(&self) -> &LoopHandle {
        &self.handle
    }
}

impl Drop for GuestLoop {
    fn drop(&mut self) {
        self.handle.shared.executor.clear();
    }
}

impl LoopHandle {
    /// Runs `future` as a task of the loop (polled by `block_on`).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.shared.executor.spawn(future)
    }

    /// A blocking call on the loop's session (e.g. `stats`). Events that arrive
    /// meanwhile are applied afterwards, in order.
    pub fn call<P: CallParams>(&self, params: &P) -> Result<P::Result, ClientError> {
        self.shared.call(params)
    }

    /// `dns.lookup` inside the VM: every address, preferred first.
    pub fn lookup_host(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let params = LookupParams {
            host: host.to_owned(),
            family: Family::Any,
        };
        let result = self.shared.call(&params)?;
        Ok(result.addresses.into_iter().map(|a| a.address).collect())
    }

    /// What the loop did so far.
    pub fn counters(&self) -> LoopCounters {
        let mut counters = self.shared.counters.get();
        counters.unrouted_events = self.shared.table.borrow().unrouted;
        (counters.polls, counters.empty_polls) = self.shared.source.borrow().poll_counts();
        counters
    }

    /// The session's mode (push, or the poll baseline).
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// Spawned tasks not finished yet.
    pub fn task_count(&self) -> usize {
        self.shared.executor.task_count()
    }

    /// Why the session is gone, if it is.
    pub fn broken(&self) -> Option<ClientError> {
        self.shared.client.borrow().broken().cloned()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Shared {
    pub(crate) fn count(&self, update: impl FnOnce(&mut LoopCounters)) {
        let mut counters = self.counters.get();
        update(&mut counters);
        self.counters.set(counters);
    }

    /// A blocking call. A fatal error fails every socket too. Events received while it
    /// waited are applied before it returns, so the program sees state at least as new
    /// as the reply. (None of them can concern an id the reply creates: on one stream the
    /// sidecar writes a reply before any event about the id it created.)
    pub(crate) fn call<P: CallParams>(&self, params: &P) -> Result<P::Result, ClientError> {
        self.call_with_payload(params, &[])
            .map(|(result, _)| result)
    }

    /// As [`Shared::call`], sending `payload` (a blocking `net.write`).
    pub(crate) fn call_with_payload<P: CallParams>(
        &self,
        params: &P,
        payload: &[u8],
    ) -> Result<(P::Result, Vec<u8>), ClientError> {
        let result = self.client.borrow_mut().call_with_payload(params, payload);
        let result = self.check(result);
        self.apply_queued_events();
        result
    }

    /// A `noreply` call. A fatal error fails every socket too.
    pub(crate) fn send_noreply<P: CallParams>(
        &self,
        params: &P,
        payload: &[u8],
    ) -> Result<u64, ClientError> {
        let result = self.client.borrow_mut().send_noreply(params, payload);
        self.check(result)
    }

    fn check<T>(&self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(err) = &result {
            if err.is_fatal() {
                self.table.borrow_mut().fail_all(err.to_wire_error());
            }
        }
        result
    }

    /// `net.credit` (noreply), when negotiated. `bytes: 0` acknowledges an accepted
    /// socket (it stops counting against its server's backlog).
    pub(crate) fn grant(&self, socket: SocketId, bytes: u64) -> Result<(), ClientError> {
        if !self.credit.enabled {
            return Ok(());
        }
        self.count(|c| c.credit_calls += 1);
        self.send_noreply(&CreditParams { socket, bytes }, &[])
            .map(drop)
    }

    pub(crate) fn credit_threshold(&self) -> u64 {
        self.credit.threshold
    }

    pub(crate) fn nonblocking_connect(&self) -> bool {
        self.nonblocking_connect
    }

    /// Whether taking an accepted socket must be acknowledged (push mode: it counts
    /// against the server's backlog until then; a polled `accept` counts as taken).
    pub(crate) fn acknowledges_accepts(&self) -> bool {
        self.mode == Mode::Push
    }

    pub(crate) fn write_chunk(&self) -> usize {
        self.write_chunk
    }

    pub(crate) fn table(&self) -> std::cell::RefMut<'_, SocketTable> {
        self.table.borrow_mut()
    }

    /// Sends what a dropped listener leaves to clean up (errors: nothing more to do).
    pub(crate) fn release_server(&self, server: sidecar_protocol::ServerId) {
        let release = self.table.borrow_mut().release_server(server);
        if release.close {
            let _ = self.send_noreply(&ServerCloseParams { server }, &[]);
        }
        for socket in release.orphans {
            let _ = self.send_noreply(&DestroyParams::new(socket), &[]);
        }
    }

    /// Sends `dgram.close` for a dropped UDP handle, unless it is closed already.
    pub(crate) fn release_udp(&self, socket: SocketId) {
        let close = self.table.borrow_mut().release_udp(socket);
        if close {
            let _ = self.send_noreply(&DgramCloseParams { socket }, &[]);
        }
    }

    /// Sends `net.destroy` for a dropped stream handle, unless it is closed already.
    pub(crate) fn release_stream(&self, socket: SocketId) {
        let destroy = self.table.borrow_mut().release_stream(socket);
        if destroy {
            let _ = self.send_noreply(&DestroyParams::new(socket), &[]);
        }
    }

    /// Nothing is ready: sleep until the next event and apply it (plus what the client
    /// queued meanwhile). With the session gone, sleep until a task is woken instead.
    fn wait_for_event(&self) {
        self.count(|c| c.idle_waits += 1);
        if self.table.borrow().is_broken() {
            self.executor.wait_for_wake();
            return;
        }
        match self.next_event(Wait::Block) {
            Some(true) => self.apply_queued_events(),
            Some(false) if self.source.borrow().uses_timer() => {
                self.count(|c| c.timer_wakes += 1);
            }
            Some(false) | None => {}
        }
    }

    /// Tasks are ready: apply only events already received.
    fn apply_available_events(&self) {
        for _ in 0..EVENTS_PER_BUSY_ROUND {
            if self.table.borrow().is_broken() || self.next_event(Wait::Poll) != Some(true) {
                return;
            }
        }
    }

    fn apply_queued_events(&self) {
        loop {
            let next = self.client.borrow_mut().next_queued_event();
            let Some((event, payload)) = next else {
                return;
            };
            self.apply(event, payload);
        }
    }

    /// Gets one event from the source and applies it: `Some(true)` if one was applied,
    /// `Some(false)` if none came, `None` if the session broke.
    fn next_event(&self, wait: Wait) -> Option<bool> {
        let next = {
            let mut client = self.client.borrow_mut();
            let table = self.table.borrow();
            self.source.borrow_mut().next(&mut client, &table, wait)
        };
        match next {
            Ok(Some((event, payload))) => {
                self.apply(event, payload);
                Some(true)
            }
            Ok(None) => Some(false),
            Err(err) => {
                self.table.borrow_mut().fail_all(err.to_wire_error());
                None
            }
        }
    }

    fn apply(&self, event: Event, payload: Vec<u8>) {
        self.count(|c| c.events += 1);
        let followup = self.table.borrow_mut().dispatch(event, payload);
        match followup {
            Followup::Nothing => {}
            Followup::DestroyOrphan(socket) => {
                let _ = self.send_noreply(&DestroyParams::new(socket), &[]);
            }
        }
    }
}
