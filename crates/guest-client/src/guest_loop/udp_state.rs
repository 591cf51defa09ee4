//! The state machine of one UDP socket, as the guest sees it.
//!
//! UDP differs from a stream in the three ways that shape this state:
//!
//! - **Boundaries**: each `message` event is one datagram, queued whole with its sender;
//!   a receive takes exactly one (truncated to the caller's buffer, the rest discarded,
//!   as std's `recv_from` does). Empty datagrams are datagrams too.
//! - **Errors are one-shot**: a failed `noreply` send, or `ECONNREFUSED` after a datagram
//!   to the connected peer found nobody, is reported once by the next operation and the
//!   socket stays usable, as on Linux. Only a lost connection to the sidecar sticks.
//! - **No credit**: UDP is lossy by nature; the sidecar drops (and counts) what finds no
//!   room, so nothing here grants anything back.
//!
//! As for streams, a dropped handle's state lingers until the sidecar's `close`, so late
//! events are recognised, and in poll mode the loop polls it to collect that `close`.

use std::collections::VecDeque;
use std::task::{Poll, Waker};

use sidecar_protocol::{Address, ErrorCode, WireError};

/// One UDP socket.
#[derive(Debug, Default)]
pub(crate) struct UdpState {
    /// Bound address, once known (a bind or connect reply; an auto-bind by a `noreply`
    /// send is not reported back).
    pub local: Option<Address>,
    /// The connected peer.
    pub remote: Option<Address>,
    /// Datagrams not yet received, oldest first, with their senders.
    inbound: VecDeque<(Address, Vec<u8>)>,
    /// The sidecar sent `close`: the id is released, nothing follows.
    closed: bool,
    /// Reported once by the next operation (a failed send, `ECONNREFUSED`).
    pending_error: Option<WireError>,
    /// The connection to the sidecar is gone: every operation.
    broken: Option<WireError>,
    /// The handle was dropped (`dgram.close` sent); waiting for `close`.
    pub handle_dropped: bool,
    receivers: Vec<Waker>,
}

impl UdpState {
    pub fn new() -> UdpState {
        UdpState::default()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `message`: queues the datagram (dropped if nobody can receive it any more).
    pub fn on_message(&mut self, remote: Address, bytes: Vec<u8>) {
        if self.closed || self.handle_dropped {
            return;
        }
        self.inbound.push_back((remote, bytes));
        self.wake();
    }

    /// `error`: reported once by the next operation.
    pub fn on_error(&mut self, error: WireError) {
        self.pending_error.get_or_insert(error);
        self.wake();
    }

    /// `close`: returns whether the state can be forgotten.
    pub fn on_close(&mut self) -> bool {
        self.closed = true;
        self.wake();
        self.handle_dropped
    }

    /// The connection to the sidecar is gone.
    pub fn fail(&mut self, error: WireError) {
        self.broken.get_or_insert(error);
        self.wake();
    }

    /// Whether the poll-mode source should poll this socket.
    pub fn wants_events(&self) -> bool {
        !self.closed && (!self.receivers.is_empty() || self.handle_dropped)
    }

    /// One datagram into `buf` (truncated if larger) and its sender; or the error the
    /// socket has to report; or `Pending` with `waker` registered.
    pub fn poll_recv(
        &mut self,
        buf: &mut [u8],
        waker: &Waker,
    ) -> Poll<Result<(usize, Address), WireError>> {
        if let Some((remote, bytes)) = self.inbound.pop_front() {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            return Poll::Ready(Ok((n, remote)));
        }
        if let Err(error) = self.check_op() {
            return Poll::Ready(Err(error));
        }
        if !self.receivers.iter().any(|w| w.will_wake(waker)) {
            self.receivers.push(waker.clone());
        }
        Poll::Pending
    }

    /// Whether an operation (send, connect) may go ahead; else the error it reports.
    pub fn check_op(&mut self) -> Result<(), WireError> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        if self.closed {
            return Err(WireError::new(ErrorCode::Ebadf, "the socket is closed"));
        }
        Ok(())
    }

    fn wake(&mut self) {
        for waker in self.receivers.drain(..) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(port: u16) -> Address {
        Address::Inet(([127, 0, 0, 1], port).into())
    }

    fn recv(st: &mut UdpState, n: usize) -> Poll<Result<(Vec<u8>, Address), WireError>> {
        let mut buf = vec![0; n];
        st.poll_recv(&mut buf, Waker::noop()).map(|r| {
            r.map(|(got, remote)| {
                buf.truncate(got);
                (buf, remote)
            })
        })
    }

    #[test]
    fn one_datagram_per_receive_truncated_to_the_buffer() {
        let mut st = UdpState::new();
        assert!(recv(&mut st, 8).is_pending());
        assert!(st.wants_events());
        st.on_message(from(1), b"hello world".to_vec());
        st.on_message(from(2), Vec::new());
        st.on_message(from(3), b"abc".to_vec());
        assert!(!st.wants_events(), "the receiver was woken");
        assert_eq!(
            recv(&mut st, 5),
            Poll::Ready(Ok((b"hello".to_vec(), from(1))))
        );
        assert_eq!(recv(&mut st, 5), Poll::Ready(Ok((Vec::new(), from(2)))));
        assert_eq!(
            recv(&mut st, 5),
            Poll::Ready(Ok((b"abc".to_vec(), from(3))))
        );
        assert!(recv(&mut st, 5).is_pending(), "the truncated rest is gone");
    }

    #[test]
    fn errors_are_reported_once_and_the_socket_goes_on() {
        let mut st = UdpState::new();
        st.on_error(WireError::from_code(ErrorCode::Econnrefused));
        let got = recv(&mut st, 4);
        assert!(matches!(got, Poll::Ready(Err(e)) if e.code == ErrorCode::Econnrefused));
        assert!(st.check_op().is_ok());
        st.on_error(WireError::from_code(ErrorCode::Econnrefused));
        assert_eq!(st.check_op().unwrap_err().code, ErrorCode::Econnrefused);
        st.on_message(from(9), b"still".to_vec());
        assert!(matches!(recv(&mut st, 8), Poll::Ready(Ok(_))));
    }

    #[test]
    fn close_and_a_lost_sidecar_end_everything() {
        let mut st = UdpState::new();
        st.fail(WireError::from_code(ErrorCode::Econnreset));
        for _ in 0..2 {
            assert_eq!(st.check_op().unwrap_err().code, ErrorCode::Econnreset);
        }
        let mut st = UdpState::new();
        st.handle_dropped = true;
        assert!(st.wants_events(), "its close is still to be collected");
        st.on_message(from(1), b"late".to_vec());
        assert!(st.on_close(), "can be forgotten");
        assert!(!st.wants_events());
        assert_eq!(st.check_op().unwrap_err().code, ErrorCode::Ebadf);
    }
}
