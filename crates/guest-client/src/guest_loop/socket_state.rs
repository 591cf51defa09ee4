//! The state machines of one stream socket and one listening server, as the guest sees
//! them.
//!
//! Events change the state (`on_*`); handle operations read it (`poll_read`,
//! `check_writable`, `poll_accept`). Keeping both here, with no I/O, makes the rules
//! testable on their own, and both event sources (push and poll) feed the very same
//! states:
//!
//! - **Read side**: bytes are buffered as `data` arrives and handed out in order. Once
//!   they are gone, a pending error is reported (one-shot for a failed `noreply` call,
//!   sticky for a socket error such as `ECONNRESET`), then end of stream (`0`) after the
//!   peer's FIN (`end`) or the socket's `close`. Data that arrived before an error is
//!   still delivered: it came first.
//! - **Write side**: refused locally with `EPIPE` after our own `shutdown` or once the
//!   socket is closed; a failed `noreply` write is reported by the next operation. Flow
//!   control (see [`super::stream`]) keeps two facts here: bytes sent `noreply` since the
//!   last blocking write (when the next write must be a blocking one), and whether a
//!   blocking write's reply said `need_drain` (writing then waits for `drain`).
//! - **Interest** (poll mode): a socket is worth polling while a task waits on it (a read
//!   or a drain), or while it lingers after its handle was dropped (its `close` must still
//!   be collected so the sidecar releases the id). Pushed-mode sockets ignore this.
//! - **Owner**: a socket accepted by the sidecar waits in its server's backlog until the
//!   program takes it; its handle owns it until dropped; after that the state lingers
//!   until the sidecar's `close` so late events are recognised, then is removed.
//! - **Credit**: bytes the program consumed are granted back in batches (at least
//!   `threshold`), and not at all while the program paused the socket.

use std::collections::VecDeque;
use std::task::{Poll, Waker};

use sidecar_protocol::{Address, ErrorCode, SocketId, WireError};

/// Who holds a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Accepted by the sidecar, waiting in the server's backlog for `accept()`.
    Backlog,
    /// A handle owns it.
    Handle,
    /// The handle was dropped (`net.destroy` sent); waiting for `close`.
    Gone,
}

/// One stream socket (TCP or Unix).
#[derive(Debug)]
pub(crate) struct StreamState {
    pub local: Address,
    pub remote: Address,
    pub owner: Owner,
    /// Received bytes not yet read, oldest first; `front_read` bytes of the front chunk
    /// are already consumed.
    inbound: VecDeque<Vec<u8>>,
    front_read: usize,
    /// The peer sent FIN: no more data.
    end_seen: bool,
    /// The sidecar sent `close`: the id is released, nothing follows.
    closed: bool,
    /// A socket-level error (`ECONNRESET`, a lost transport): every later operation.
    socket_error: Option<WireError>,
    /// A failed `noreply` call on this socket: reported once, by the next operation.
    request_error: Option<WireError>,
    /// We sent FIN.
    write_shut: bool,
    paused: bool,
    /// Bytes read by the program and not yet granted back with `net.credit`.
    ungranted: u64,
    /// Bytes sent with `noreply` since the last blocking `net.write`.
    unsynced: u64,
    /// A blocking write's reply said `need_drain`: more writes wait for `drain`.
    drain_pending: bool,
    readers: Vec<Waker>,
    drainers: Vec<Waker>,
}

impl StreamState {
    pub fn new(local: Address, remote: Address, owner: Owner) -> StreamState {
        StreamState {
            local,
            remote,
            owner,
            inbound: VecDeque::new(),
            front_read: 0,
            end_seen: false,
            closed: false,
            socket_error: None,
            request_error: None,
            write_shut: false,
            paused: false,
            ungranted: 0,
            unsynced: 0,
            drain_pending: false,
            readers: Vec::new(),
            drainers: Vec::new(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `data`: buffers the bytes (dropped if nobody can read them any more).
    pub fn on_data(&mut self, bytes: Vec<u8>) {
        if self.closed || self.owner == Owner::Gone || bytes.is_empty() {
            return;
        }
        self.inbound.push_back(bytes);
        self.wake_readers();
    }

    /// `end`: the peer's FIN.
    pub fn on_end(&mut self) {
        self.end_seen = true;
        self.wake_readers();
    }

    /// `close`: the id is released. Returns whether the state can be forgotten.
    pub fn on_close(&mut self) -> bool {
        self.closed = true;
        self.wake_all();
        self.owner == Owner::Gone
    }

    /// `drain`: the sidecar's buffer for this socket fell below its high-water mark.
    /// (A `drain` nobody waits for, after `noreply` writes crossed the mark, is ignored.)
    pub fn on_drain(&mut self) {
        self.drain_pending = false;
        for waker in self.drainers.drain(..) {
            waker.wake();
        }
    }

    /// `error`: for a failed `noreply` call (`from_request`) or the socket itself.
    pub fn on_error(&mut self, error: WireError, from_request: bool) {
        let slot = if from_request {
            &mut self.request_error
        } else {
            &mut self.socket_error
        };
        slot.get_or_insert(error);
        self.wake_all();
    }

    /// The connection to the sidecar is gone: every later operation fails with `error`.
    pub fn fail(&mut self, error: WireError) {
        self.socket_error.get_or_insert(error);
        self.wake_all();
    }

    /// Whether the poll-mode source should poll this socket: a task waits on it, or it
    /// lingers after its handle was dropped and its `close` is still to be collected.
    pub fn wants_events(&self) -> bool {
        !self.closed
            && (!self.readers.is_empty() || !self.drainers.is_empty() || self.owner == Owner::Gone)
    }

    /// Reads buffered bytes into `buf`, or says why there are none: `Ok(0)` at end of
    /// stream, an error, or `Pending` (with `waker` registered for the next event).
    pub fn poll_read(&mut self, buf: &mut [u8], waker: &Waker) -> Poll<Result<usize, WireError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !self.inbound.is_empty() {
            return Poll::Ready(Ok(self.copy_out(buf)));
        }
        if let Some(error) = self.request_error.take() {
            return Poll::Ready(Err(error));
        }
        if let Some(error) = &self.socket_error {
            return Poll::Ready(Err(error.clone()));
        }
        if self.end_seen || self.closed {
            return Poll::Ready(Ok(0));
        }
        if !self.readers.iter().any(|w| w.will_wake(waker)) {
            self.readers.push(waker.clone());
        }
        Poll::Pending
    }

    fn copy_out(&mut self, buf: &mut [u8]) -> usize {
        let mut copied = 0;
        while copied < buf.len() {
            let Some(front) = self.inbound.front() else {
                break;
            };
            let available = &front[self.front_read..];
            let n = available.len().min(buf.len() - copied);
            buf[copied..copied + n].copy_from_slice(&available[..n]);
            copied += n;
            self.front_read += n;
            if self.front_read == front.len() {
                self.inbound.pop_front();
                self.front_read = 0;
            }
        }
        self.ungranted += copied as u64;
        copied
    }

    /// Whether a write may be sent now; else the error it gets.
    pub fn check_writable(&mut self) -> Result<(), WireError> {
        if let Some(error) = self.request_error.take() {
            return Err(error);
        }
        if let Some(error) = &self.socket_error {
            return Err(error.clone());
        }
        if self.write_shut {
            return Err(WireError::new(ErrorCode::Epipe, "write after shutdown"));
        }
        if self.closed {
            return Err(WireError::new(ErrorCode::Epipe, "the socket is closed"));
        }
        Ok(())
    }

    /// Counts a write of `len` bytes and says whether it must be a blocking call: the
    /// first write after `every` bytes went out `noreply` since the last blocking one.
    pub fn sync_due(&mut self, len: usize, every: u64) -> bool {
        if self.unsynced >= every {
            self.unsynced = 0;
            return true;
        }
        self.unsynced += len as u64;
        false
    }

    /// A blocking write's reply said `need_drain`.
    pub fn set_need_drain(&mut self) {
        self.drain_pending = true;
    }

    /// Ready once no `drain` is awaited; an error if the socket can no longer be
    /// written (the wait would never end); else `Pending` with `waker` registered.
    pub fn poll_drained(&mut self, waker: &Waker) -> Poll<Result<(), WireError>> {
        if !self.drain_pending {
            return Poll::Ready(Ok(()));
        }
        if let Err(error) = self.check_writable() {
            return Poll::Ready(Err(error));
        }
        if !self.drainers.iter().any(|w| w.will_wake(waker)) {
            self.drainers.push(waker.clone());
        }
        Poll::Pending
    }

    /// Whether a shutdown needs sending (`Ok(false)`: already done), else its error.
    pub fn check_shutdown(&mut self) -> Result<bool, WireError> {
        if self.write_shut {
            return Ok(false);
        }
        if let Some(error) = self.request_error.take() {
            return Err(error);
        }
        if let Some(error) = &self.socket_error {
            return Err(error.clone());
        }
        if self.closed {
            return Err(WireError::new(ErrorCode::Enotconn, "the socket is closed"));
        }
        Ok(true)
    }

    pub fn set_write_shut(&mut self) {
        self.write_shut = true;
    }

    /// Bytes to grant back now, if the batch is big enough and the socket not paused.
    pub fn take_grant(&mut self, threshold: u64) -> Option<u64> {
        if self.paused || self.ungranted == 0 || self.ungranted < threshold || self.closed {
            return None;
        }
        Some(std::mem::take(&mut self.ungranted))
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn wake_readers(&mut self) {
        for waker in self.readers.drain(..) {
            waker.wake();
        }
    }

    /// Wakes readers and writers waiting for `drain` (the socket failed or closed).
    fn wake_all(&mut self) {
        self.wake_readers();
        for waker in self.drainers.drain(..) {
            waker.wake();
        }
    }
}

/// One listening server.
#[derive(Debug)]
pub(crate) struct ServerState {
    /// Accepted by the sidecar, not yet taken by the program (their states live in the
    /// table with [`Owner::Backlog`]).
    backlog: VecDeque<SocketId>,
    closed: bool,
    error: Option<WireError>,
    pub handle_dropped: bool,
    acceptors: Vec<Waker>,
}

impl ServerState {
    pub fn new() -> ServerState {
        ServerState {
            backlog: VecDeque::new(),
            closed: false,
            error: None,
            handle_dropped: false,
            acceptors: Vec::new(),
        }
    }

    /// Whether the server can still take connections.
    pub fn is_open(&self) -> bool {
        !self.closed && !self.handle_dropped
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `accept`: a new connection waits for the program.
    pub fn on_accept(&mut self, socket: SocketId) {
        self.backlog.push_back(socket);
        self.wake();
    }

    /// `close` of the server.
    pub fn on_close(&mut self) {
        self.closed = true;
        self.wake();
    }

    /// `error` of the server, or the connection to the sidecar is gone.
    pub fn on_error(&mut self, error: WireError) {
        self.error.get_or_insert(error);
        self.wake();
    }

    /// The sockets nobody will take any more (the handle is gone).
    pub fn drain_backlog(&mut self) -> Vec<SocketId> {
        self.backlog.drain(..).collect()
    }

    /// Whether the poll-mode source should poll this server: a task waits in `accept`,
    /// or the handle is gone and the server's `close` is still to be collected.
    pub fn wants_events(&self) -> bool {
        !self.closed && (!self.acceptors.is_empty() || self.handle_dropped)
    }

    /// The next accepted connection, or why there is none, or `Pending`.
    pub fn poll_accept(&mut self, waker: &Waker) -> Poll<Result<SocketId, WireError>> {
        if let Some(socket) = self.backlog.pop_front() {
            return Poll::Ready(Ok(socket));
        }
        if let Some(error) = &self.error {
            return Poll::Ready(Err(error.clone()));
        }
        if self.closed {
            return Poll::Ready(Err(WireError::new(
                ErrorCode::Ebadf,
                "the server is closed",
            )));
        }
        if !self.acceptors.iter().any(|w| w.will_wake(waker)) {
            self.acceptors.push(waker.clone());
        }
        Poll::Pending
    }

    fn wake(&mut self) {
        for waker in self.acceptors.drain(..) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    fn stream() -> StreamState {
        let addr = Address::Unix("/s".into());
        StreamState::new(addr.clone(), addr, Owner::Handle)
    }

    fn read(st: &mut StreamState, n: usize) -> Poll<Result<Vec<u8>, WireError>> {
        let (_, w) = waker();
        let mut buf = vec![0; n];
        st.poll_read(&mut buf, &w).map(|r| {
            r.map(|got| {
                buf.truncate(got);
                buf
            })
        })
    }

    #[test]
    fn data_then_end_then_zero() {
        let mut st = stream();
        let (count, w) = waker();
        assert!(st.poll_read(&mut [0; 4], &w).is_pending());
        st.on_data(b"hello".to_vec());
        st.on_data(b"!".to_vec());
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the pending reader was woken"
        );
        st.on_end();
        assert_eq!(read(&mut st, 3), Poll::Ready(Ok(b"hel".to_vec())));
        assert_eq!(read(&mut st, 10), Poll::Ready(Ok(b"lo!".to_vec())));
        assert_eq!(read(&mut st, 10), Poll::Ready(Ok(Vec::new())));
        assert_eq!(
            read(&mut st, 10),
            Poll::Ready(Ok(Vec::new())),
            "EOF stays EOF"
        );
    }

    #[test]
    fn data_before_an_error_is_delivered_first_and_socket_errors_stick() {
        let mut st = stream();
        st.on_data(b"abc".to_vec());
        st.on_error(WireError::from_code(ErrorCode::Econnreset), false);
        assert_eq!(read(&mut st, 10), Poll::Ready(Ok(b"abc".to_vec())));
        for _ in 0..2 {
            let err = read(&mut st, 10);
            assert!(matches!(err, Poll::Ready(Err(e)) if e.code == ErrorCode::Econnreset));
        }
        assert_eq!(st.check_writable().unwrap_err().code, ErrorCode::Econnreset);
    }

    #[test]
    fn a_failed_noreply_write_is_reported_once() {
        let mut st = stream();
        st.on_error(WireError::from_code(ErrorCode::Epipe), true);
        assert_eq!(st.check_writable().unwrap_err().code, ErrorCode::Epipe);
        assert!(st.check_writable().is_ok());
    }

    #[test]
    fn writes_after_shutdown_or_close_are_epipe() {
        let mut st = stream();
        assert_eq!(st.check_shutdown(), Ok(true));
        st.set_write_shut();
        assert_eq!(st.check_shutdown(), Ok(false));
        assert_eq!(st.check_writable().unwrap_err().code, ErrorCode::Epipe);
        let mut st = stream();
        assert!(!st.on_close(), "a handle still owns it");
        assert_eq!(st.check_writable().unwrap_err().code, ErrorCode::Epipe);
        assert_eq!(read(&mut st, 1), Poll::Ready(Ok(Vec::new())));
    }

    #[test]
    fn grants_are_batched_and_paused() {
        let mut st = stream();
        st.on_data(vec![1; 300]);
        let _ = read(&mut st, 100);
        assert_eq!(st.take_grant(250), None);
        let _ = read(&mut st, 100);
        st.set_paused(true);
        let _ = read(&mut st, 100);
        assert_eq!(st.take_grant(250), None, "paused");
        st.set_paused(false);
        assert_eq!(st.take_grant(250), Some(300));
        assert_eq!(st.take_grant(250), None);
    }

    #[test]
    fn writes_sync_every_so_many_bytes_and_wait_for_drain() {
        let mut st = stream();
        let due: Vec<bool> = [40, 40, 10, 100, 64, 1]
            .map(|n| st.sync_due(n, 64))
            .to_vec();
        assert_eq!(due, [false, false, true, false, true, false]);
        assert_eq!(st.poll_drained(Waker::noop()), Poll::Ready(Ok(())));
        st.set_need_drain();
        let (count, w) = waker();
        assert!(st.poll_drained(&w).is_pending());
        assert!(st.wants_events(), "a drain waiter is poll interest");
        st.on_drain();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!st.wants_events());
        assert_eq!(st.poll_drained(&w), Poll::Ready(Ok(())));
        // A socket that fails while a writer waits ends the wait with the error.
        st.set_need_drain();
        assert!(st.poll_drained(&w).is_pending());
        st.on_error(WireError::from_code(ErrorCode::Econnreset), false);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        let got = st.poll_drained(&w);
        assert!(matches!(got, Poll::Ready(Err(e)) if e.code == ErrorCode::Econnreset));
    }

    #[test]
    fn poll_interest_follows_waiters_and_lingering() {
        let mut st = stream();
        assert!(!st.wants_events());
        assert!(st.poll_read(&mut [0; 4], Waker::noop()).is_pending());
        assert!(st.wants_events());
        st.on_data(b"x".to_vec());
        assert!(!st.wants_events(), "the reader was woken");
        st.owner = Owner::Gone;
        assert!(st.wants_events(), "its close is still to be collected");
        st.on_close();
        assert!(!st.wants_events());
        let mut sv = ServerState::new();
        assert!(!sv.wants_events());
        assert!(sv.poll_accept(Waker::noop()).is_pending());
        assert!(sv.wants_events());
    }

    #[test]
    fn data_for_a_dropped_handle_is_discarded() {
        let mut st = stream();
        st.owner = Owner::Gone;
        st.on_data(b"late".to_vec());
        assert!(st.on_close(), "can be forgotten");
        assert_eq!(read(&mut st, 4), Poll::Ready(Ok(Vec::new())));
    }

    #[test]
    fn server_backlog_then_close() {
        let mut sv = ServerState::new();
        let (count, w) = waker();
        assert!(sv.poll_accept(&w).is_pending());
        sv.on_accept(SocketId(5));
        sv.on_accept(SocketId(6));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(sv.poll_accept(&w), Poll::Ready(Ok(SocketId(5))));
        sv.on_close();
        assert_eq!(sv.poll_accept(&w), Poll::Ready(Ok(SocketId(6))));
        assert!(matches!(sv.poll_accept(&w), Poll::Ready(Err(e)) if e.code == ErrorCode::Ebadf));
    }
}
