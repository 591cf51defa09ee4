//! The in-process transport: the guest end of an [`inproc_pipe`] duplex.
//!
//! The pipe already carries complete encoded frames, one `Vec<u8>` each, so sending is a
//! move and receiving only validates the prefix and splits header from payload, keeping
//! the message's buffer as the payload (with the same checks a byte-stream reader
//! applies, so an embedder's bug cannot smuggle in a frame a socket reader would reject).

use std::time::{Duration, Instant};

use inproc_pipe::{Closed, End};
use sidecar_protocol::{split_frame, FrameError, RawFrame, Split, DEFAULT_MAX_FRAME};
use stage_trace::Stage;

use super::{Transport, TransportError};

/// How long one blocking wait lasts when the caller gave no deadline. The wait simply
/// starts again afterwards; it only bounds the `Instant` arithmetic (no wake-up happens
/// unless nothing at all arrives for this long).
const FOREVER_SLICE: Duration = Duration::from_secs(24 * 60 * 60);

/// The guest end of an in-process pipe.
pub struct InProcTransport {
    end: End,
    max_frame: usize,
}

impl InProcTransport {
    /// Wraps the guest end of [`inproc_pipe::duplex`].
    pub fn new(end: End) -> InProcTransport {
        InProcTransport {
            end,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    fn decode(&self, bytes: Vec<u8>) -> Result<RawFrame, TransportError> {
        match split_frame(bytes, self.max_frame)? {
            Split::One(frame) => Ok(frame),
            // Not one frame: the pipe's contract (one frame per message) is broken.
            Split::Several(bytes) => Err(FrameError::Inconsistent {
                total: u32::try_from(bytes.len().saturating_sub(4)).unwrap_or(u32::MAX),
                header_len: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            }
            .into()),
        }
    }
}

impl From<End> for InProcTransport {
    fn from(end: End) -> Self {
        InProcTransport::new(end)
    }
}

impl Transport for InProcTransport {
    fn send(&mut self, frame: Vec<u8>) -> Result<(), TransportError> {
        stage_trace::mark(Stage::GuestSend);
        self.end
            .tx
            .send(frame)
            .map_err(|Closed| TransportError::Closed)
    }

    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<RawFrame>, TransportError> {
        loop {
            let until = deadline.unwrap_or_else(|| Instant::now() + FOREVER_SLICE);
            match self.end.rx.recv_until(until) {
                Ok(Some(bytes)) => {
                    stage_trace::mark(Stage::GuestWoken);
                    return self.decode(bytes).map(Some);
                }
                Ok(None) if deadline.is_some() => return Ok(None),
                Ok(None) => continue,
                Err(Closed) => return Err(TransportError::Closed),
            }
        }
    }

    fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecar_protocol::encode_raw_frame;

    #[test]
    fn frames_pass_and_garbage_is_a_framing_error() {
        let (guest, sidecar) = inproc_pipe::duplex();
        let mut t = InProcTransport::new(guest);
        let mut frame = Vec::new();
        encode_raw_frame(b"{}", b"payload", DEFAULT_MAX_FRAME, &mut frame).unwrap();
        sidecar.tx.send(frame.clone()).unwrap();
        let got = t.recv(Some(Instant::now())).unwrap().unwrap();
        assert_eq!(got.header, b"{}");
        assert_eq!(got.payload, b"payload");
        // Two frames glued together in one pipe message.
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        sidecar.tx.send(two).unwrap();
        assert!(t.recv(None).unwrap_err().is_protocol_violation());
        // A frame over the announced limit.
        t.set_max_frame(8);
        sidecar.tx.send(frame).unwrap();
        assert!(t.recv(None).unwrap_err().is_protocol_violation());
        // Nothing there: a past deadline is a non-blocking check.
        assert!(t.recv(Some(Instant::now())).unwrap().is_none());
        drop(sidecar);
        assert!(matches!(t.recv(None), Err(TransportError::Closed)));
    }
}
