//! The in-process transport: the sidecar end of an [`inproc_pipe`] duplex pipe.

use inproc_pipe::{Receiver, Sender};
use sidecar_protocol::{read_frame, split_frame, RawFrame, Split};
use stage_trace::Stage;

use super::{FrameSource, SourceEnd};
use crate::outbound::{FrameSink, SinkClosed};

/// Frames from the guest: each pipe message is one complete encoded frame.
pub struct PipeSource {
    rx: Receiver,
    max_frame: usize,
    encoded: Vec<Vec<u8>>,
}

impl PipeSource {
    pub fn new(rx: Receiver, max_frame: usize) -> Self {
        PipeSource {
            rx,
            max_frame,
            encoded: Vec::new(),
        }
    }
}

impl FrameSource for PipeSource {
    async fn next_batch(&mut self, out: &mut Vec<RawFrame>) -> Result<(), SourceEnd> {
        self.encoded.clear();
        if self.rx.recv_all(&mut self.encoded).await.is_err() {
            return Err(SourceEnd::Closed);
        }
        stage_trace::mark(Stage::LoopWoken);
        for bytes in self.encoded.drain(..) {
            // Normally one frame per message: its buffer becomes the payload. Several back
            // to back are fine too.
            let bytes = match split_frame(bytes, self.max_frame) {
                Ok(Split::One(frame)) => {
                    out.push(frame);
                    continue;
                }
                Ok(Split::Several(bytes)) => bytes,
                Err(e) => return Err(SourceEnd::Framing(e)),
            };
            let mut reader = bytes.as_slice();
            while !reader.is_empty() {
                match read_frame(&mut reader, self.max_frame) {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => break,
                    Err(e) => return Err(SourceEnd::Framing(e)),
                }
            }
        }
        Ok(())
    }
}

/// Pushes to the guest: queued in the pipe, never blocking.
pub struct PipeSink(pub Sender);

impl FrameSink for PipeSink {
    fn send(&self, frame: Vec<u8>) -> Result<(), SinkClosed> {
        stage_trace::mark(Stage::PushQueued);
        self.0.send(frame).map_err(|_| SinkClosed)
    }

    fn close(&self) {
        self.0.close();
    }

    fn queued_bytes(&self) -> usize {
        self.0.queued_bytes()
    }
}
