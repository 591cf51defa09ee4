//! Framing: `u32 BE total | u32 BE header_len | header JSON | payload`.
//!
//! ```text
//! offset 0        4             8                 8+header_len       4+total
//!        | total  | header_len  | header (JSON)   | payload (raw)    |
//! ```
//!
//! `total` counts every byte *after itself*: `4 + header_len + payload_len`. So a reader
//! needs exactly `4 + total` bytes for the frame, and `total >= 4` always. Counting the
//! bytes after the prefix (rather than the whole frame) is what length-prefix codecs
//! usually do, and it makes `total` the size of the one allocation a reader needs.
//!
//! Bytes ride as the raw payload (never base64 or a JSON array) so `data` costs one copy.
//!
//! **Limits are checked before allocating**: `total` above the configured maximum
//! ([`DEFAULT_MAX_FRAME`] = 16 MiB by default) is rejected as soon as its 4 bytes are seen,
//! and readers grow their buffer with the bytes that actually arrive, not with what the
//! prefix claims. Every [`FrameError`] is fatal for the session (the stream can no longer be
//! trusted to be in sync); header problems are not framing errors and are handled
//! separately (see [`crate::header`]).

use std::io::{self, Read, Write};

use serde::Serialize;

use crate::header::{parse_header, Header, HeaderError};

/// Default maximum frame size (bytes counted by the `total` field): 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Size of the two length fields.
pub const PREFIX_LEN: usize = 8;

/// Largest allocation made in one step while reading a frame body (so a peer that claims a
/// large frame and sends little costs little).
pub(crate) const READ_STEP: usize = 64 * 1024;

/// A framing error. Always fatal for the session: close it (after at most one final
/// `error` event) because the byte stream can no longer be trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// `total` exceeds the limit (detected from the first 4 bytes, before any allocation).
    /// From an encoder: nothing was written.
    #[error("frame of {total} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The claimed (or would-be) `total`.
        total: u64,
        /// The limit in force.
        max: usize,
    },
    /// `total < 4`: the frame cannot even hold its `header_len` field (detected from the
    /// first 4 bytes, like [`FrameError::TooLarge`]; the 4 bytes after it belong to no
    /// frame and are not read).
    #[error("frame of {total} bytes is shorter than its 4-byte header length field")]
    TooSmall {
        /// The `total` field.
        total: u32,
    },
    /// `header_len > total - 4`.
    #[error("inconsistent frame lengths: total {total}, header {header_len}")]
    Inconsistent {
        /// The `total` field.
        total: u32,
        /// The `header_len` field.
        header_len: u32,
    },
    /// `header_len` exceeds the header limit (detected from the prefix, before any of the
    /// header is read): a header is small, the bytes of a frame belong in its payload.
    #[error("frame header of {header_len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// The `header_len` field.
        header_len: u32,
        /// The header limit in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// Bytes of the unfinished frame that were received.
        buffered: usize,
    },
    /// The header could not be serialized (encoder side; not expected for protocol types).
    #[error("header serialization failed: {0}")]
    Encode(#[source] serde_json::Error),
    /// I/O error on the stream.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The two length fields, validated against each other and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// The `total` field.
    pub total: u32,
    /// The `header_len` field.
    pub header_len: u32,
}

impl Prefix {
    /// Bytes of the whole frame, prefix included.
    pub fn frame_len(self) -> usize {
        4 + self.total as usize
    }

    /// Payload length.
    pub fn payload_len(self) -> usize {
        self.total as usize - 4 - self.header_len as usize
    }
}

/// Checks the `total` field alone (possible as soon as 4 bytes arrived): at most `max`,
/// and at least 4 (the `header_len` field it counts).
pub(crate) fn check_total(total: u32, max: usize) -> Result<(), FrameError> {
    if total < 4 {
        return Err(FrameError::TooSmall { total });
    }
    if total as u64 > max as u64 {
        return Err(FrameError::TooLarge {
            total: total.into(),
            max,
        });
    }
    Ok(())
}

/// Parses and validates the 8-byte prefix.
pub(crate) fn parse_prefix(bytes: [u8; PREFIX_LEN], max: usize) -> Result<Prefix, FrameError> {
    let total = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let header_len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    check_total(total, max)?;
    if header_len > total - 4 {
        return Err(FrameError::Inconsistent { total, header_len });
    }
    Ok(Prefix { total, header_len })
}

/// One well-framed frame whose header has not been parsed yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawFrame {
    /// The header bytes (expected to be one JSON object, but not checked yet).
    pub header: Vec<u8>,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Parses the header; failure is *not* fatal (see [`HeaderError`]).
    pub fn parse_header(&self) -> Result<Header, HeaderError> {
        parse_header(&self.header)
    }

    /// Parses the header and keeps the payload.
    pub fn into_frame(self) -> Result<Frame, HeaderError> {
        let header = parse_header(&self.header)?;
        Ok(Frame {
            header,
            payload: self.payload,
        })
    }

    /// Encodes this frame (header bytes as they are).
    pub fn encode(&self, max_frame: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_raw_frame(&self.header, &self.payload, max_frame, out)
    }
}

/// A decoded frame: a parsed header plus the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The payload (the bytes of `net.write`, `dgram.send`, `data`, `message`; else empty).
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame with an empty payload.
    pub fn new(header: Header) -> Frame {
        Frame {
            header,
            payload: Vec::new(),
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, max_frame: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode_frame(&self.header, &self.payload, max_frame, out)
    }
}

/// Appends a frame with an already-serialized header to `out`.
///
/// Fails with [`FrameError::TooLarge`] (nothing appended) when the frame would exceed
/// `max_frame` (or `u32`), so a sender never emits a frame its peer must reject.
pub fn encode_raw_frame(
    header_json: &[u8],
    payload: &[u8],
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let total = checked_total(header_json.len(), payload.len(), max_frame)?;
    out.reserve(4 + total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(header_json.len() as u32).to_be_bytes());
    out.extend_from_slice(header_json);
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends a frame with `header` serialized as JSON to `out`.
///
/// On error nothing is appended.
pub fn encode_frame(
    header: &Header,
    payload: &[u8],
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_serialized(header, payload, max_frame, out)
}

/// Shared encoder for any header-shaped value (also used by the typed encoders).
pub(crate) fn encode_serialized<H: Serialize + ?Sized>(
    header: &H,
    payload: &[u8],
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    // Bounded by the limit: an oversized payload fails below, before any serializing.
    out.reserve(HEAD_GUESS + payload.len().min(max_frame));
    encode_serialized_head(header, payload.len(), max_frame, out)?;
    out.extend_from_slice(payload);
    Ok(())
}

/// Room reserved for a prefix and header before serializing one: most of ours are under
/// 128 bytes, and growing an empty `Vec` to that size byte by byte reallocates four times.
pub const HEAD_GUESS: usize = 128;

/// The prefix and header of a frame whose `payload_len` payload bytes the caller sends
/// right after (e.g. with one vectored write, so a large payload is never copied into the
/// frame). On error nothing is appended.
pub(crate) fn encode_serialized_head<H: Serialize + ?Sized>(
    header: &H,
    payload_len: usize,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    // Fail fast on the payload alone, before serializing anything.
    checked_total(0, payload_len, max_frame)?;
    out.reserve(HEAD_GUESS);
    let start = out.len();
    out.extend_from_slice(&[0; PREFIX_LEN]);
    if let Err(e) = serde_json::to_writer(&mut *out, header) {
        out.truncate(start);
        return Err(FrameError::Encode(e));
    }
    let header_len = out.len() - start - PREFIX_LEN;
    let total = match checked_total(header_len, payload_len, max_frame) {
        Ok(total) => total,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    out[start..start + 4].copy_from_slice(&total.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&(header_len as u32).to_be_bytes());
    Ok(())
}

/// `4 + header_len + payload_len`, if within `max_frame` and `u32`.
fn checked_total(
    header_len: usize,
    payload_len: usize,
    max_frame: usize,
) -> Result<u32, FrameError> {
    let total = 4u64 + header_len as u64 + payload_len as u64;
    if total > max_frame as u64 || total > u32::MAX as u64 {
        return Err(FrameError::TooLarge {
            total,
            max: max_frame,
        });
    }
    Ok(total as u32)
}

/// Writes one frame to a blocking writer (does not flush).
///
/// Small frames go out in one `write_all`; a large payload is written separately rather
/// than copied.
pub fn write_frame<W: Write + ?Sized>(
    writer: &mut W,
    header: &Header,
    payload: &[u8],
    max_frame: usize,
) -> Result<(), FrameError> {
    const COPY_LIMIT: usize = 16 * 1024;
    let mut buf = Vec::with_capacity(256 + payload.len().min(COPY_LIMIT));
    if payload.len() <= COPY_LIMIT {
        encode_frame(header, payload, max_frame, &mut buf)?;
        writer.write_all(&buf)?;
    } else {
        encode_frame(header, &[], max_frame, &mut buf)?;
        let header_len = buf.len() - PREFIX_LEN;
        let total = checked_total(header_len, payload.len(), max_frame)?;
        buf[0..4].copy_from_slice(&total.to_be_bytes());
        writer.write_all(&buf)?;
        writer.write_all(payload)?;
    }
    Ok(())
}

/// Reads one frame from a blocking reader.
///
/// Returns `Ok(None)` on a clean end of stream (EOF before the first byte of a frame),
/// [`FrameError::Truncated`] on EOF inside one. The limit is checked on the first 4 bytes;
/// the body is read into buffers that grow with the data received (in steps of at most
/// 64 KiB), so a peer claiming a large frame and sending little costs little memory.
pub fn read_frame<R: Read + ?Sized>(
    reader: &mut R,
    max_frame: usize,
) -> Result<Option<RawFrame>, FrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let got = read_full(reader, &mut prefix[..4])?;
    if got == 0 {
        return Ok(None);
    }
    if got < 4 {
        return Err(FrameError::Truncated { buffered: got });
    }
    check_total(
        u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]),
        max_frame,
    )?;
    let got = read_full(reader, &mut prefix[4..])?;
    if got < 4 {
        return Err(FrameError::Truncated { buffered: 4 + got });
    }
    let p = parse_prefix(prefix, max_frame)?;
    let header = read_exact_growing(reader, p.header_len as usize, PREFIX_LEN)?;
    let payload = read_exact_growing(reader, p.payload_len(), PREFIX_LEN + header.len())?;
    Ok(Some(RawFrame { header, payload }))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly `len` bytes, growing the buffer as they arrive.
fn read_exact_growing<R: Read + ?Sized>(
    reader: &mut R,
    len: usize,
    already: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::new();
    while buf.len() < len {
        let step = (len - buf.len()).min(READ_STEP);
        let start = buf.len();
        buf.resize(start + step, 0);
        let got = read_full(reader, &mut buf[start..])?;
        buf.truncate(start + got);
        if got < step {
            return Err(FrameError::Truncated {
                buffered: already + buf.len(),
            });
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::address::SocketId;
    use crate::event::{Event, EventBody};

    fn data_header() -> Header {
        Header::Event(Event::new(
            1,
            EventBody::Data {
                socket: SocketId(2),
            },
        ))
    }

    #[test]
    fn layout_is_total_then_header_len() {
        let mut out = Vec::new();
        encode_raw_frame(b"{}", b"xyz", DEFAULT_MAX_FRAME, &mut out).unwrap();
        assert_eq!(out, b"\0\0\0\x09\0\0\0\x02{}xyz");
        let mut empty = Vec::new();
        encode_raw_frame(b"", b"", DEFAULT_MAX_FRAME, &mut empty).unwrap();
        assert_eq!(empty, [0, 0, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn encode_then_read_round_trips() {
        let mut out = Vec::new();
        encode_frame(&data_header(), b"hello", DEFAULT_MAX_FRAME, &mut out).unwrap();
        encode_frame(&data_header(), b"", DEFAULT_MAX_FRAME, &mut out).unwrap();
        let mut r = &out[..];
        let f1 = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(f1.payload, b"hello");
        assert_eq!(f1.parse_header().unwrap(), data_header());
        let f2 = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert!(f2.payload.is_empty());
        assert!(read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap().is_none());
    }

    #[test]
    fn write_frame_large_payload_matches_encode() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut written = Vec::new();
        write_frame(&mut written, &data_header(), &payload, DEFAULT_MAX_FRAME).unwrap();
        let mut encoded = Vec::new();
        encode_frame(&data_header(), &payload, DEFAULT_MAX_FRAME, &mut encoded).unwrap();
        assert_eq!(written, encoded);
        let f = read_frame(&mut &written[..], DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(f.payload, payload);
    }

    #[test]
    fn encoder_refuses_oversized_frames_and_appends_nothing() {
        let mut out = b"keep".to_vec();
        let err = encode_frame(&data_header(), &[0; 100], 64, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 64, .. }), "{err}");
        assert_eq!(out, b"keep");
        // Payload alone fits, header pushes it over.
        let err = encode_frame(&data_header(), &[0; 40], 64, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert_eq!(out, b"keep");
        let err = write_frame(&mut Vec::new(), &data_header(), &[0; 100], 64).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        // Exactly at the limit is allowed.
        let mut exact = Vec::new();
        encode_raw_frame(b"{}", &[0; 58], 64, &mut exact).unwrap();
        assert_eq!(exact.len(), 68);
    }

    #[test]
    fn reader_rejects_oversized_prefix_without_reading_more() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2];
        let mut r = &bytes[..];
        let err = read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    total: 0xffff_ffff,
                    max: DEFAULT_MAX_FRAME
                }
            ),
            "{err}"
        );
        assert_eq!(r.len(), 4, "stopped after the total field");
    }

    #[test]
    fn reader_rejects_inconsistent_lengths() {
        for (total, header_len) in [(10u32, 7u32), (4, 1)] {
            let mut bytes = total.to_be_bytes().to_vec();
            bytes.extend_from_slice(&header_len.to_be_bytes());
            bytes.extend_from_slice(&[b'x'; 16]);
            let err = read_frame(&mut &bytes[..], DEFAULT_MAX_FRAME).unwrap_err();
            assert!(
                matches!(err, FrameError::Inconsistent { total: t, header_len: h } if t == total && h == header_len),
                "{total}/{header_len}: {err}"
            );
        }
        // header_len == total - 4 (no payload) is consistent.
        let mut ok = 6u32.to_be_bytes().to_vec();
        ok.extend_from_slice(&2u32.to_be_bytes());
        ok.extend_from_slice(b"{}");
        assert!(read_frame(&mut &ok[..], DEFAULT_MAX_FRAME)
            .unwrap()
            .is_some());
    }

    #[test]
    fn reader_reports_truncation_at_every_cut() {
        let mut out = Vec::new();
        encode_frame(&data_header(), b"payload", DEFAULT_MAX_FRAME, &mut out).unwrap();
        for cut in 1..out.len() {
            let err = read_frame(&mut &out[..cut], DEFAULT_MAX_FRAME).unwrap_err();
            match err {
                FrameError::Truncated { buffered } => assert_eq!(buffered, cut),
                other => panic!("cut {cut}: {other}"),
            }
        }
    }

    #[test]
    fn reader_claims_do_not_allocate_what_was_not_sent() {
        // Claims 16 MiB - 4 bytes of payload, sends 10: truncated, and the buffer never
        // grew past one read step (checked via the error; allocation is checked in
        // tests/alloc.rs with a counting allocator).
        let mut bytes = (DEFAULT_MAX_FRAME as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&[1; 10]);
        let err = read_frame(&mut &bytes[..], DEFAULT_MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { buffered: 18 }),
            "{err}"
        );
    }

    #[test]
    fn malformed_header_is_not_a_framing_error() {
        let mut out = Vec::new();
        encode_raw_frame(
            br#"{"type":"call","id":3,"meth"#,
            b"",
            DEFAULT_MAX_FRAME,
            &mut out,
        )
        .unwrap();
        let raw = read_frame(&mut &out[..], DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        let err = raw.into_frame().unwrap_err();
        assert_eq!(err.id, Some(3));
    }
}
