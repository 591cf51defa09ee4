//! What carries frames between the guest and the sidecar.
//!
//! The sidecar's core does not know what carries its frames, and neither does the client:
//! a [`Transport`] moves whole encoded frames (`u32 total | u32 header_len | JSON |
//! payload`) and nothing else. Three kinds exist:
//!
//! - [`InProcTransport`]: the guest end of an [`inproc_pipe::duplex`] (an embedder running
//!   guests on threads of the sidecar's process; tests and benches);
//! - [`StreamTransport`]: any byte stream: a Unix socket ([`connect_unix`]), a child's
//!   stdio (a sidecar started with `serve --stdio`), or any `Read` + `Write` pair.
//!
//! Receiving **blocks**, by design: the guest thread is frozen while it waits, like an
//! isolate's callSync, and in push mode the guest loop sleeps here until the sidecar
//! pushes an event. A wait may carry a deadline (for [`crate::Client::next_event`] and poll
//! mode's re-poll tick); without one it waits for as long as it takes.

mod inproc;
mod stream;

use std::io;
use std::time::Instant;

use sidecar_protocol::{FrameError, RawFrame};

pub use inproc::InProcTransport;
pub use stream::StreamTransport;
#[cfg(unix)]
pub use stream::{connect_unix, inherited_session};

/// Moves encoded frames to and from the sidecar. Blocking; one thread at a time.
pub trait Transport: Send {
    /// Sends one complete encoded frame (prefix included).
    fn send(&mut self, frame: Vec<u8>) -> Result<(), TransportError>;

    /// Sends one frame given as its prefix and header (`head`), then its payload. A byte
    /// stream writes both with vectored writes, so a large payload is not copied into a
    /// frame first; by default the parts are joined and sent.
    fn send_parts(&mut self, mut head: Vec<u8>, payload: &[u8]) -> Result<(), TransportError> {
        head.extend_from_slice(payload);
        self.send(head)
    }

    /// The next frame from the sidecar. Blocks until one arrives, the stream ends
    /// ([`TransportError::Closed`]), or `deadline` passes (`Ok(None)`; a deadline already
    /// past makes this a non-blocking check). `None` waits without limit.
    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<RawFrame>, TransportError>;

    /// The largest incoming frame to accept (as frames count `total`); larger ones are a
    /// [`FrameError::TooLarge`]. The client sets it to what it announced in hello.
    fn set_max_frame(&mut self, max_frame: usize);
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, frame: Vec<u8>) -> Result<(), TransportError> {
        (**self).send(frame)
    }

    fn send_parts(&mut self, head: Vec<u8>, payload: &[u8]) -> Result<(), TransportError> {
        (**self).send_parts(head, payload)
    }

    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<RawFrame>, TransportError> {
        (**self).recv(deadline)
    }

    fn set_max_frame(&mut self, max_frame: usize) {
        (**self).set_max_frame(max_frame)
    }
}

/// Why a transport could not move a frame. All of them end the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The sidecar closed the stream (cleanly, between frames).
    #[error("the sidecar closed the stream")]
    Closed,
    /// An I/O error on the stream.
    #[error("I/O error on the sidecar stream: {0}")]
    Io(#[from] io::Error),
    /// The byte stream is out of sync (oversized or inconsistent frame, or the stream
    /// ended inside a frame).
    #[error("framing error on the sidecar stream: {0}")]
    Frame(#[from] FrameError),
}

impl TransportError {
    /// Whether the sidecar sent bytes that are not a valid frame (rather than the stream
    /// ending or failing).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            TransportError::Frame(
                FrameError::TooLarge { .. }
                    | FrameError::TooSmall { .. }
                    | FrameError::Inconsistent { .. }
            )
        )
    }
}
