//! The `frame_decoder` target: arbitrary bytes through both frame readers.
//!
//! Input: `[limit, seed_hi, seed_lo, pacing, stream...]`.
//! - `limit` picks the decoder's `max_frame` from [`LIMITS`];
//! - `seed` and `pacing` drive the pieces `stream` is fed in (1 byte to the whole rest),
//!   and whether each piece goes in by `push` or by `read_from` (which has its own paths:
//!   reads sized by the frame in progress, large payloads read into their own buffer);
//! - `stream` is what a peer sent.
//!
//! Checked, whatever the bytes:
//! - no panic;
//! - each decoded frame re-encodes to exactly the bytes it came from, in stream order;
//! - memory grows with the bytes fed, never with what a length prefix claims
//!   ([`FrameDecoder::capacity`] within `4 × fed + 3 MiB`, and within `max_frame` plus
//!   2 MiB and two pieces' worth);
//! - after an error the decoder stays failed: the same error again, nothing buffered,
//!   `finish` fails, `read_from` refuses without reading, memory released;
//! - `read_frame` over the same bytes yields the same frames and ends the same way (same
//!   error with the same fields, or the same truncation count, or a clean end);
//! - `split_frame` (the in-process transports' reader: the bytes as one message) agrees
//!   with them: the one frame when the stream is exactly one, the message back untouched
//!   when it holds more, the same error when it holds less or a bad prefix (and
//!   `Truncated` for no bytes at all, which its callers skip).

use sidecar_protocol::{
    encode_raw_frame, read_frame, split_frame, FrameDecoder, FrameError, RawFrame, Split,
};

/// The `max_frame` values an input can pick: the default 16 MiB, tiny, one page, just over
/// the 32 KiB direct-read threshold, 1 MiB.
pub const LIMITS: [usize; 5] = [
    sidecar_protocol::DEFAULT_MAX_FRAME,
    64,
    4096,
    40_000,
    1 << 20,
];

const MIB: usize = 1 << 20;

/// How a stream ended, comparable across the two readers.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Clean,
    TooSmall { total: u32 },
    TooLarge { total: u64, max: usize },
    Inconsistent { total: u32, header_len: u32 },
    Truncated { buffered: usize },
}

fn end_of(err: FrameError) -> End {
    match err {
        FrameError::TooSmall { total } => End::TooSmall { total },
        FrameError::TooLarge { total, max } => End::TooLarge { total, max },
        FrameError::Inconsistent { total, header_len } => End::Inconsistent { total, header_len },
        FrameError::Truncated { buffered } => End::Truncated { buffered },
        other => panic!("a reader over bytes in memory failed with {other}"),
    }
}

/// A small deterministic generator for the piece sizes (xorshift).
struct Pacer {
    state: u32,
    pacing: u8,
}

impl Pacer {
    fn next(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    /// The next piece size (at least 1) and whether it goes in by `read_from`.
    fn piece(&mut self, rest: usize) -> (usize, bool) {
        let r = self.next();
        let size = match self.pacing % 4 {
            0 => 1 + (r % 8) as usize,
            1 => 1 + (r % 300) as usize,
            2 => 1 + (r % 70_000) as usize,
            _ => rest, // all at once
        };
        let via_read = match self.pacing / 4 % 3 {
            0 => false,
            1 => true,
            _ => (r >> 16) & 1 == 1,
        };
        (size.clamp(1, rest.max(1)), via_read)
    }
}

/// Runs one input (see the module docs).
pub fn check(data: &[u8]) {
    let (config, stream) = data.split_at(data.len().min(4));
    let byte = |i: usize| config.get(i).copied().unwrap_or(0);
    let max_frame = LIMITS[byte(0) as usize % LIMITS.len()];
    let mut pacer = Pacer {
        state: (u32::from(byte(1)) << 8 | u32::from(byte(2))) | 0x1_0000,
        pacing: byte(3),
    };

    let (frames, end) = decode(stream, max_frame, &mut pacer);

    // Every frame is exactly the bytes it came from, in order.
    let mut at = 0;
    let mut again = Vec::new();
    for frame in &frames {
        again.clear();
        encode_raw_frame(&frame.header, &frame.payload, usize::MAX, &mut again)
            .expect("a decoded frame re-encodes");
        assert!(
            stream[at..].starts_with(&again),
            "frame {} does not re-encode to its bytes at offset {at}",
            frames.len()
        );
        at += again.len();
    }
    match &end {
        End::Clean => assert_eq!(at, stream.len(), "clean end before the end of the bytes"),
        End::Truncated { buffered } => assert_eq!(at + buffered, stream.len()),
        End::TooLarge { total, max } => {
            assert_eq!(*max, max_frame);
            assert!(*total > max_frame as u64);
            assert_eq!(&stream[at..at + 4], &(*total as u32).to_be_bytes());
        }
        End::TooSmall { total } => {
            assert!(*total < 4);
            assert_eq!(&stream[at..at + 4], &total.to_be_bytes());
        }
        End::Inconsistent { total, header_len } => {
            assert!(*header_len > total - 4);
            assert!(stream.len() >= at + 8);
        }
    }

    // The blocking reader agrees, frame for frame and on how it ended.
    let mut reader = stream;
    let mut read = Vec::new();
    let read_end = loop {
        match read_frame(&mut reader, max_frame) {
            Ok(Some(frame)) => read.push(frame),
            Ok(None) => break End::Clean,
            Err(e) => break end_of(e),
        }
    };
    assert!(
        read == frames,
        "read_frame and FrameDecoder disagree on the frames"
    );
    assert_eq!(read_end, end, "read_frame and FrameDecoder end differently");

    // The whole stream as one in-process message.
    match split_frame(stream.to_vec(), max_frame) {
        Ok(Split::One(frame)) => {
            assert!(
                frames.len() == 1 && end == End::Clean,
                "split_frame saw one frame"
            );
            assert!(frame == frames[0], "split_frame and FrameDecoder disagree");
        }
        Ok(Split::Several(message)) => {
            assert_eq!(
                message, stream,
                "split_frame changed a message it gave back"
            );
            assert!(
                frames.len() > 1 || (frames.len() == 1 && end != End::Clean),
                "split_frame saw more than one frame's bytes"
            );
        }
        Err(e) => {
            let split_end = end_of(e);
            if stream.is_empty() {
                // No frame at all is not one frame (the callers skip empty messages).
                assert_eq!(split_end, End::Truncated { buffered: 0 });
            } else if frames.is_empty() {
                assert_eq!(
                    split_end, end,
                    "split_frame and FrameDecoder end differently"
                );
            } else {
                // Only a message shorter than its first frame fails: never here.
                panic!("split_frame failed ({split_end:?}) where a first frame decodes");
            }
        }
    }
}

/// Feeds `stream` in pieces; returns the frames and how the stream ended.
fn decode(stream: &[u8], max_frame: usize, pacer: &mut Pacer) -> (Vec<RawFrame>, End) {
    let mut d = FrameDecoder::new(max_frame);
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut fed = 0usize;
    let mut widest_piece = 0usize;
    loop {
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    let end = end_of(e);
                    assert_failed_for_good(&mut d, &end);
                    return (frames, end);
                }
            }
        }
        if rest.is_empty() {
            break;
        }
        let (size, via_read) = pacer.piece(rest.len());
        widest_piece = widest_piece.max(size);
        let n = if via_read {
            let mut piece = &rest[..size];
            let n = d.read_from(&mut piece).expect("read_from a slice");
            assert!(n > 0, "read_from read nothing from a non-empty reader");
            n
        } else {
            d.push(&rest[..size]);
            size
        };
        rest = &rest[n..];
        fed += n;
        let capacity = d.capacity();
        assert!(
            capacity <= 4 * fed + 3 * MIB,
            "decoder holds {capacity} bytes after {fed} bytes fed"
        );
        assert!(
            capacity <= max_frame + 2 * MIB + 2 * widest_piece,
            "decoder holds {capacity} bytes, limit {max_frame}, pieces up to {widest_piece}"
        );
    }
    let end = match d.finish() {
        Ok(()) => End::Clean,
        Err(e) => end_of(e),
    };
    if matches!(end, End::Clean) {
        assert_eq!(d.buffered(), 0);
    }
    (frames, end)
}

/// After a framing error: the same error from every call, nothing kept.
fn assert_failed_for_good(d: &mut FrameDecoder, end: &End) {
    assert!(
        matches!(
            end,
            End::TooSmall { .. } | End::TooLarge { .. } | End::Inconsistent { .. }
        ),
        "{end:?}"
    );
    assert_eq!(d.capacity(), 0, "memory kept after a framing error");
    d.push(&[0, 0, 0, 4, 0, 0, 0, 0]);
    assert_eq!(d.buffered(), 0, "bytes kept after a framing error");
    let again = d.next_frame().map(|_| ()).map_err(end_of);
    assert_eq!(
        again.as_ref().err(),
        Some(end),
        "a different outcome after the error"
    );
    let finish = d.finish().map_err(end_of);
    assert_eq!(finish.as_ref().err(), Some(end));
    let mut more = &[1u8, 2, 3][..];
    let refused = d
        .read_from(&mut more)
        .expect_err("read_from after a framing error");
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(more.len(), 3, "read_from read after a framing error");
}
