//! A guest's TCP connection to a destination outside its VM: a real kernel socket,
//! registered with the readiness thread with an **inline handler**.
//!
//! On readable the handler reads, up to the guest's credit, and pushes `data` straight to
//! the session from the readiness thread: one sidecar thread wake from kernel to guest,
//! no hop through the RPC loop. With no credit left, or with its guest not taking what is
//! queued for it (the session at `session_outbound_bytes`: held until there is room,
//! as in-VM stream data is), it stops reading, so the kernel's receive buffer fills and
//! the remote sender's TCP window closes: back-pressure reaches the sender instead of a
//! buffer here growing. On writable it flushes what the guest
//! wrote past what the kernel took at once, and pushes `drain` once that falls below the
//! high-water mark (the write that passed it pushed `pressure`, if negotiated, under the
//! same lock, so the two are always in that order). End of stream → `end`; an error (a reset…) → `error`; either way, once
//! nothing more can flow, the RPC loop is told to free the socket and push `close`.
//!
//! The state is shared by the RPC loop (writes, credit, shutdown, options) and the
//! handler, under one mutex per socket. Interest changes made by the RPC loop go through
//! [`Registration::set_interest`], which is serialised with the handler, so a "resume
//! reading" can never be overwritten by a handler's stale "stop".

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use parking_lot::Mutex;
use readiness::{Action, Interest, Next, Readiness, Registration};
use sidecar_protocol::{Address, ErrorCode, EventBody, SocketId, WireError, WriteResult};
use tokio::sync::mpsc::UnboundedSender;

use super::stream::HostStream;
use super::{io_wire_error, with_read_buffer, HostKey, HostNotice};
use crate::core::{Core, SessionId};
use crate::outbound::{Gate, Outbound};

/// Largest single read (and so largest `data` event) from a host socket.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes one handler run reads at most before letting the readiness thread serve the
/// other sources (it runs again right after them: [`Next::again`]).
const READ_BUDGET: usize = 256 * 1024;

/// What the RPC loop and the readiness thread share about one connection.
pub(crate) struct TcpShared {
    key: HostKey,
    session: SessionId,
    id: SocketId,
    out: Arc<Outbound>,
    high_water: usize,
    hard_limit: usize,
    notices: UnboundedSender<HostNotice>,
    state: Mutex<TcpState>,
}

struct TcpState {
    /// Connected and announced to the guest: the handler may read and push.
    open: bool,
    /// Receive window left (credit); `None` when credit was not negotiated.
    window: Option<u64>,
    /// The peer may still send (no end of stream or error yet).
    read_open: bool,
    /// Guest writes the kernel has not taken yet, in order; `offset` into the front.
    pending: VecDeque<Vec<u8>>,
    offset: usize,
    pending_bytes: usize,
    /// A write passed the high-water mark (`pressure` pushed): `drain` once below it.
    drain_needed: bool,
    /// The guest shut its side down: FIN once `pending` is flushed.
    shutdown_requested: bool,
    write_closed: bool,
    /// An error was reported; nothing more flows.
    failed: bool,
    /// The RPC loop has been told to free the socket (or the guest destroyed it):
    /// nothing more is pushed.
    finished: bool,
    /// Reading stopped because the guest has not taken what is queued for it (its
    /// session at `session_outbound_bytes`); resumed by [`HostTcp::resume_reading`].
    held: bool,
    /// The interest last asked of the reactor.
    armed: Interest,
}

impl TcpState {
    fn wanted(&self) -> Interest {
        let live = self.open && !self.failed && !self.finished;
        Interest {
            readable: live && self.read_open && !self.held && self.window != Some(0),
            writable: live && (self.pending_bytes > 0 || self.shutdown_due()),
        }
    }

    fn shutdown_due(&self) -> bool {
        self.shutdown_requested && !self.write_closed && self.pending_bytes == 0
    }
}

/// What a failed `shutdown(2)` stands for. Once the peer has reset the connection,
/// `shutdown` fails with `ENOTCONN` while the socket's pending error (`SO_ERROR`) still
/// holds the `ECONNRESET` the guest must be told (reading it clears it, and a read after
/// that sees a clean end of stream).
fn pending_error_or(stream: &HostStream, e: io::Error) -> io::Error {
    match stream.take_error() {
        Ok(Some(pending)) => pending,
        _ => e,
    }
}

/// One host TCP connection as the core holds it.
pub struct HostTcp {
    pub(crate) reg: Registration<HostStream>,
    pub(crate) shared: Arc<TcpShared>,
    pub local: Address,
    pub remote: Address,
    /// Accepted on a published port: the server whose backlog (and VM's pending count)
    /// this connection still counts against, until its guest takes it.
    pub unacked: Option<crate::core::ServerKey>,
}

impl TcpShared {
    pub(crate) fn new(
        key: HostKey,
        session: SessionId,
        id: SocketId,
        out: Arc<Outbound>,
        window: Option<u64>,
        limits: (usize, usize),
        notices: UnboundedSender<HostNotice>,
    ) -> Arc<TcpShared> {
        Arc::new(TcpShared {
            key,
            session,
            id,
            out,
            high_water: limits.0,
            hard_limit: limits.1,
            notices,
            state: Mutex::new(TcpState {
                open: false,
                window,
                read_open: true,
                pending: VecDeque::new(),
                offset: 0,
                pending_bytes: 0,
                drain_needed: false,
                shutdown_requested: false,
                write_closed: false,
                failed: false,
                finished: false,
                held: false,
                armed: Interest::WRITABLE,
            }),
        })
    }

    /// The readiness handler: runs on the readiness thread for each event.
    pub(crate) fn on_ready(&self, stream: &HostStream, ready: Readiness) -> Next {
        let mut st = self.state.lock();
        if !st.open || st.finished {
            // Connecting (the parked connect waits on the registration itself, which this
            // event has woken) or done: nothing to do, and nothing more to hear.
            st.armed = Interest::NONE;
            return st.armed.into();
        }
        if ready.writable {
            self.flush(stream, &mut st);
        }
        let more = ready.readable && self.read(stream, &mut st);
        self.finish_if_done(&mut st);
        st.armed = st.wanted();
        match more && st.armed.readable {
            true => Next::again(st.armed),
            false => st.armed.into(),
        }
    }

    /// Reads while credit lasts, pushing `data`; `end` at end of stream. Returns true if
    /// it stopped at its budget with more perhaps waiting.
    fn read(&self, stream: &HostStream, st: &mut TcpState) -> bool {
        with_read_buffer(READ_CHUNK, |buf| self.read_into(stream, st, buf))
    }

    fn read_into(&self, mut stream: &HostStream, st: &mut TcpState, buf: &mut [u8]) -> bool {
        let mut budget = READ_BUDGET;
        while st.read_open && !st.failed {
            if budget == 0 {
                return true;
            }
            if !self.out.has_room(Gate::All) {
                // The guest is not reading what it was sent: leave the data in the
                // kernel (the sender's window closes) until it has taken some.
                st.held = true;
                if self.out.room.hold() {
                    let _ = self.notices.send(HostNotice::Held(self.session));
                }
                return false;
            }
            let room = match st.window {
                Some(0) => return false,
                Some(w) => usize::try_from(w).unwrap_or(usize::MAX).min(READ_CHUNK),
                None => READ_CHUNK,
            };
            let room = room.min(self.out.max_data_payload()).min(budget);
            match stream.read(&mut buf[..room]) {
                Ok(0) => {
                    st.read_open = false;
                    self.out.deliver(EventBody::End { socket: self.id }, &[]);
                }
                Ok(n) => {
                    budget -= n;
                    if let Some(w) = st.window.as_mut() {
                        *w -= n as u64;
                    }
                    self.out
                        .deliver(EventBody::Data { socket: self.id }, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(st, &e);
                    return false;
                }
            }
        }
        false
    }

    /// Writes pending guest bytes until done or the kernel's buffer is full; then a due
    /// FIN, and `drain` if a writer waits for one.
    fn flush(&self, mut stream: &HostStream, st: &mut TcpState) {
        while let Some(front) = st.pending.front() {
            match stream.write(&front[st.offset..]) {
                Ok(n) => {
                    st.offset += n;
                    st.pending_bytes -= n;
                    if st.offset == front.len() {
                        st.pending.pop_front();
                        st.offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(st, &e),
            }
        }
        if st.shutdown_due() {
            match stream.shutdown(Shutdown::Write) {
                Ok(()) => st.write_closed = true,
                Err(e) => return self.fail(st, &pending_error_or(stream, e)),
            }
        }
        if st.drain_needed && st.pending_bytes < self.high_water {
            st.drain_needed = false;
            self.out.deliver(EventBody::Drain { socket: self.id }, &[]);
        }
    }

    /// Reports an I/O error (`error`), after which nothing more flows.
    fn fail(&self, st: &mut TcpState, e: &io::Error) {
        if st.failed || st.finished {
            return;
        }
        st.failed = true;
        st.pending.clear();
        st.pending_bytes = 0;
        let error = io_wire_error("read", e);
        self.out
            .deliver(EventBody::socket_error(self.id, error), &[]);
    }

    /// Nothing more can flow (both directions ended, or an error): the RPC loop frees the
    /// socket and pushes `close`.
    fn finish_if_done(&self, st: &mut TcpState) {
        let done = st.failed || (!st.read_open && st.write_closed);
        if done && !st.finished {
            st.finished = true;
            let _ = self.notices.send(HostNotice::Finished {
                key: self.key,
                had_error: st.failed,
            });
        }
    }
}

impl HostTcp {
    /// A host connection for guest socket `id` of session `sid` (its id minted already),
    /// registered with the readiness thread with its inline handler and `interest`; not
    /// open yet ([`HostTcp::open`] starts the data flow).
    pub(crate) fn register(
        core: &mut Core,
        sid: SessionId,
        id: SocketId,
        stream: HostStream,
        interest: Interest,
        remote: Address,
    ) -> io::Result<HostTcp> {
        let session = core
            .sessions
            .get(&sid)
            .ok_or_else(|| io::Error::other("the session has ended"))?;
        let window = session.stream_window();
        let out = Arc::clone(&session.out);
        let limits = core.vm_limits(&session.vm);
        let limits = (limits.write_high_water, limits.write_hard_limit);
        let key = HostKey(core.next_key());
        let notices = core.host.notices.clone();
        let shared = TcpShared::new(key, sid, id, out, window, limits, notices);
        let handler = Arc::clone(&shared);
        let reg = core.host.reactor.register(
            stream,
            interest,
            Action::handler(move |stream: &HostStream, ready| handler.on_ready(stream, ready)),
        )?;
        let local = reg
            .get_ref()
            .local_address()
            .unwrap_or_else(|| Address::Unix(String::new()));
        Ok(HostTcp {
            reg,
            shared,
            local,
            remote,
            unacked: None,
        })
    }

    /// The connect completed and was announced: start reading (and pushing).
    pub(crate) fn open(&self) {
        let wanted = {
            let mut st = self.shared.state.lock();
            st.open = true;
            st.armed = st.wanted();
            st.armed
        };
        let _ = self.reg.set_interest(wanted);
    }

    /// `net.write`: straight to the kernel if nothing is queued; the rest is queued and
    /// flushed by the handler when the socket turns writable.
    pub fn write(&self, payload: &[u8]) -> Result<WriteResult, WireError> {
        let shared = &self.shared;
        let mut st = shared.state.lock();
        if st.failed || st.finished {
            return Err(WireError::new(
                ErrorCode::Epipe,
                "the connection has failed or closed",
            ));
        }
        if st.shutdown_requested {
            return Err(WireError::new(ErrorCode::Epipe, "write after end"));
        }
        if st.pending_bytes + payload.len() > shared.hard_limit {
            return Err(WireError::new(
                ErrorCode::Enobufs,
                format!(
                    "{} bytes already buffered for this socket; a write of {} would pass the limit of {}",
                    st.pending_bytes,
                    payload.len(),
                    shared.hard_limit
                ),
            ));
        }
        let mut written = 0;
        if st.pending_bytes == 0 {
            // The kernel write wakes the peer; the lock is released first, so that the
            // handler (woken by the peer's answer) never finds it taken and sleeps again.
            // Only this loop adds to `pending`, so nothing can slip in front meanwhile.
            drop(st);
            let outcome = self.write_now(payload, &mut written);
            st = shared.state.lock();
            if let Err(e) = outcome {
                shared.fail(&mut st, &e);
                shared.finish_if_done(&mut st);
                return Err(io_wire_error("write", &e));
            }
            if st.failed || st.finished {
                // The handler saw the connection fail meanwhile (after the kernel took
                // these bytes, or some of them) and has pushed the error that reports it.
                return Ok(WriteResult {
                    buffered: 0,
                    need_drain: false,
                });
            }
        }
        if written < payload.len() {
            st.pending.push_back(payload[written..].to_vec());
            st.pending_bytes += payload.len() - written;
        }
        let need_drain = st.pending_bytes >= shared.high_water;
        if need_drain && !st.drain_needed {
            st.drain_needed = true;
            // Under the lock: the handler's `drain` for this crossing comes after it.
            shared.out.pressure(shared.id, st.pending_bytes);
        }
        let result = WriteResult {
            buffered: st.pending_bytes as u64,
            need_drain,
        };
        self.rearm(st);
        Ok(result)
    }

    /// Writes `payload` to the kernel until done or it would block, counting into
    /// `written`.
    fn write_now(&self, payload: &[u8], written: &mut usize) -> io::Result<()> {
        let mut stream = self.reg.get_ref();
        while *written < payload.len() {
            match stream.write(&payload[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `net.credit`: the guest consumed `bytes`; reading resumes if it had stopped.
    pub fn credit(&self, bytes: u64, max: u64) {
        let mut st = self.shared.state.lock();
        if let Some(w) = st.window.as_mut() {
            *w = w.saturating_add(bytes).min(max);
        }
        self.rearm(st);
    }

    /// Reading resumes after a hold: the session's guest has taken what was queued.
    pub fn resume_reading(&self) {
        let mut st = self.shared.state.lock();
        if std::mem::take(&mut st.held) {
            self.rearm(st);
        }
    }

    /// `net.shutdown`: FIN after what is queued. Returns whether it was already requested.
    pub fn shutdown(&self) -> Result<(), WireError> {
        let mut st = self.shared.state.lock();
        if st.failed || st.finished {
            return Err(WireError::new(
                ErrorCode::Enotconn,
                "the connection has failed or closed",
            ));
        }
        if !st.shutdown_requested {
            st.shutdown_requested = true;
            if st.shutdown_due() {
                let stream = self.reg.get_ref();
                match stream.shutdown(Shutdown::Write) {
                    Ok(()) => st.write_closed = true,
                    Err(e) => self.shared.fail(&mut st, &pending_error_or(stream, e)),
                }
            }
            self.shared.finish_if_done(&mut st);
        }
        self.rearm(st);
        Ok(())
    }

    /// The coming close is a reset (`net.destroy {reset: true}`): RST, not FIN.
    pub fn reset_on_close(&self) {
        if let Err(e) = self.reg.get_ref().set_reset_on_close() {
            tracing::debug!(error = %e, "SO_LINGER 0 before a reset close");
        }
    }

    /// The guest destroyed the socket: nothing more is pushed for it.
    pub fn forget(&self) {
        self.shared.state.lock().finished = true;
    }

    pub fn key(&self) -> HostKey {
        self.shared.key
    }

    pub fn session(&self) -> SessionId {
        self.shared.session
    }

    pub fn id(&self) -> SocketId {
        self.shared.id
    }

    /// `net.socket_set_no_delay` / `net.socket_set_keep_alive` on the real socket.
    pub fn set_option(
        &self,
        no_delay: Option<bool>,
        keep_alive: Option<bool>,
    ) -> Result<(), WireError> {
        let stream = self.reg.get_ref();
        let applied = match (no_delay, keep_alive) {
            (Some(on), _) => stream.set_nodelay(on),
            (None, Some(on)) => stream.set_keepalive(on),
            (None, None) => Ok(()),
        };
        applied.map_err(|e| io_wire_error("setsockopt", &e))
    }

    /// Bytes queued toward the kernel (for stats).
    pub fn pending_bytes(&self) -> usize {
        self.shared.state.lock().pending_bytes
    }

    /// Asks the reactor for what the state now wants, if that changed. The lock is
    /// released first: `set_interest` waits for a handler run in progress, and that run
    /// may be waiting for this very lock.
    fn rearm(&self, mut st: parking_lot::MutexGuard<'_, TcpState>) {
        let wanted = st.wanted();
        if wanted == st.armed {
            return;
        }
        st.armed = wanted;
        drop(st);
        if self.reg.set_interest(wanted).is_err() {
            tracing::warn!("the readiness thread is gone; host socket stalls");
        }
    }
}
