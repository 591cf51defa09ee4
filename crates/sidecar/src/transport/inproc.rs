//! The in-process transport: the sidecar end of an [`inproc_pipe`] duplex pipe.

use std::collections::VecDeque;

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
    /// Messages (or the rest of one) received but not served yet: before attach a batch
    /// holds one frame (see [`FrameSource::set_max_frame`]).
    held: VecDeque<Vec<u8>>,
    one_per_batch: bool,
}

impl PipeSource {
    pub fn new(rx: Receiver, max_frame: usize) -> Self {
        PipeSource {
            rx,
            max_frame,
            encoded: Vec::new(),
            held: VecDeque::new(),
            one_per_batch: false,
        }
    }
}

impl FrameSource for PipeSource {
    async fn next_batch(&mut self, out: &mut Vec<RawFrame>) -> Result<(), SourceEnd> {
        if self.held.is_empty() {
            self.encoded.clear();
            if self.rx.recv_all(&mut self.encoded).await.is_err() {
                return Err(SourceEnd::Closed);
            }
            stage_trace::mark(Stage::LoopWoken);
            self.held.extend(self.encoded.drain(..));
        }
        while let Some(bytes) = self.held.pop_front() {
            // Normally one frame per message: its buffer becomes the payload. Several back
            // to back are fine too, and an empty message is no frame at all.
            if bytes.is_empty() {
                continue;
            }
            let bytes = match split_frame(bytes, self.max_frame) {
                Ok(Split::One(frame)) => {
                    out.push(frame);
                    if self.one_per_batch {
                        return Ok(());
                    }
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
                if self.one_per_batch && !reader.is_empty() {
                    self.held.push_front(reader.to_vec());
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn set_max_frame(&mut self, max_frame: usize, one_per_batch: bool) {
        self.max_frame = max_frame;
        self.one_per_batch = one_per_batch;
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

    fn listen_drained(&self, target: usize) -> Option<event_listener::EventListener> {
        Some(self.0.listen_taken(target))
    }

    fn is_gone(&self) -> bool {
        self.0.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecar_protocol::{encode_raw_frame, DEFAULT_MAX_FRAME};

    fn frame(header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_raw_frame(header, payload, DEFAULT_MAX_FRAME, &mut out).unwrap();
        out
    }

    fn next_batch(source: &mut PipeSource) -> (Vec<RawFrame>, Result<(), SourceEnd>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        let ended = runtime.block_on(source.next_batch(&mut out));
        (out, ended)
    }

    /// One frame, several in one message, and an empty message (no frame: ignored, as
    /// a byte stream reader would see nothing), all in one batch and in order.
    #[test]
    fn messages_of_one_several_or_no_frames_are_all_served() {
        let (tx, rx) = inproc_pipe::pipe();
        let mut source = PipeSource::new(rx, DEFAULT_MAX_FRAME);
        tx.send(frame(b"{}", b"one")).unwrap();
        tx.send(Vec::new()).unwrap();
        let mut two = frame(b"{}", b"two");
        two.extend_from_slice(&frame(b"{}", b"three"));
        tx.send(two).unwrap();
        let (frames, ended) = next_batch(&mut source);
        assert!(ended.is_ok(), "{ended:?}");
        let payloads: Vec<&[u8]> = frames.iter().map(|f| f.payload.as_slice()).collect();
        assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn a_message_cut_inside_a_frame_is_a_framing_error() {
        let (tx, rx) = inproc_pipe::pipe();
        let mut source = PipeSource::new(rx, DEFAULT_MAX_FRAME);
        let whole = frame(b"{}", b"payload");
        tx.send(whole[..whole.len() - 1].to_vec()).unwrap();
        let (_, ended) = next_batch(&mut source);
        assert!(matches!(ended, Err(SourceEnd::Framing(_))), "{ended:?}");
    }
}
