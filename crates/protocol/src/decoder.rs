//! Incremental frame decoder for non-blocking streams.
//!
//! A non-blocking reader gets bytes in whatever pieces the kernel hands out: half a prefix,
//! three frames and a bit, one byte. [`FrameDecoder`] keeps the partial frame between
//! reads, validates each prefix the moment its bytes are there (`total` within
//! `4 ..= max_frame` after 4 bytes, the header length after 8) and only then lets the
//! buffer grow toward the claimed size, in bounded steps as bytes really arrive. After a
//! [`FrameError`] it stays failed: the stream is out of sync and the session must close.
//!
//! A frame with a large payload (a 64 KiB `data` event, a bulk `net.write`) is not read
//! into the shared buffer and copied out again: once its header is in, the payload gets
//! its own buffer of the exact size and later reads land there directly. That saves one
//! copy of every large payload on both sides of a byte-stream transport.
//!
//! The canonical loop for a non-blocking fd:
//!
//! ```no_run
//! # use sidecar_protocol::{FrameDecoder, FrameError};
//! # fn handle(_: sidecar_protocol::RawFrame) {}
//! # fn pump(stream: &mut std::os::unix::net::UnixStream) -> Result<bool, FrameError> {
//! let mut decoder = FrameDecoder::default();
//! loop {
//!     while let Some(frame) = decoder.next_frame()? {
//!         handle(frame); // parse_header() errors here are per-call, not fatal
//!     }
//!     match decoder.read_from(stream) {
//!         Ok(0) => { decoder.finish()?; return Ok(false); } // EOF (Truncated if mid-frame)
//!         Ok(_) => {}
//!         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! # }
//! ```

use std::io::{self, Read};

use crate::frame::{
    check_total, parse_prefix, FrameError, Prefix, RawFrame, DEFAULT_MAX_FRAME, PREFIX_LEN,
    READ_STEP,
};

/// Bytes read per `read_from` when nothing tells us more is needed.
const MIN_READ: usize = 16 * 1024;
/// Largest single `read_from` (bounds each growth step of the buffer).
const MAX_READ: usize = READ_STEP * 16;
/// An idle buffer above this is released (after a large frame).
const KEEP_IDLE: usize = 256 * 1024;
/// Payloads at least this large are read straight into their own buffer.
const DIRECT_PAYLOAD: usize = 32 * 1024;

/// A frame whose payload is being read directly into its own buffer.
#[derive(Debug)]
struct LargeFrame {
    header: Vec<u8>,
    /// `payload[..filled]` has arrived. The buffer grows toward `payload_len` in steps as
    /// bytes arrive, never to the size a prefix merely claims.
    payload: Vec<u8>,
    filled: usize,
    payload_len: usize,
}

impl LargeFrame {
    fn missing(&self) -> usize {
        self.payload_len - self.filled
    }

    /// Room for at least one more read.
    fn make_room(&mut self) {
        if self.payload.len() == self.filled {
            // One allocation for any payload up to a read's bound; beyond that, growth in
            // bounded steps as bytes arrive.
            self.payload
                .resize(self.payload_len.min(self.filled + MAX_READ), 0);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let end = self.filled + bytes.len();
        if self.payload.len() < end {
            self.payload.resize(end, 0);
        }
        self.payload[self.filled..end].copy_from_slice(bytes);
        self.filled = end;
    }
}

/// Why the decoder stopped; kept so later calls report the same failure.
#[derive(Debug, Clone, Copy)]
enum Failure {
    TooLarge { total: u64 },
    TooSmall { total: u32 },
    Inconsistent { total: u32, header_len: u32 },
    HeaderTooLarge { header_len: u32 },
}

/// Push bytes in, pop complete [`RawFrame`]s out.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Initialized storage; `buf[start..end]` is undecoded data.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
    /// Largest `header_len` accepted (see [`FrameDecoder::set_max_header`]).
    max_header: usize,
    failed: Option<Failure>,
    /// The frame in progress when its payload is read directly (see the module docs).
    large: Option<LargeFrame>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames whose `total` exceeds `max_frame`.
    pub fn new(max_frame: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame,
            max_header: usize::MAX,
            failed: None,
            large: None,
        }
    }

    /// Changes the limit for the frames not decoded yet: a transport keeps it small until
    /// its session is attached (a hello is small), then raises it. A frame whose prefix is
    /// buffered already is measured against the new limit when it is next looked at, and
    /// its payload is never allocated for a claim beyond the limit in force.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Refuses a frame whose header is longer than `max_header`, from its prefix
    /// ([`FrameError::HeaderTooLarge`]), so a peer that announces a huge header makes the
    /// decoder neither read nor buffer it. Unlimited (up to the frame limit) by default.
    pub fn set_max_header(&mut self, max_header: usize) {
        self.max_header = max_header;
    }

    /// The limit in force.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Undecoded bytes held (a partial frame, or frames not yet popped).
    pub fn buffered(&self) -> usize {
        let large = self
            .large
            .as_ref()
            .map_or(0, |l| PREFIX_LEN + l.header.len() + l.filled);
        self.end - self.start + large
    }

    /// Bytes of memory the buffer currently holds (for tests and metrics).
    pub fn capacity(&self) -> usize {
        let large = self
            .large
            .as_ref()
            .map_or(0, |l| l.header.capacity() + l.payload.capacity());
        self.buf.capacity() + large
    }

    /// Appends bytes received by other means (e.g. an async read into a scratch buffer).
    ///
    /// For a bounded buffer, pop frames with [`FrameDecoder::next_frame`] between pushes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return; // nothing after a framing error is kept
        }
        let mut bytes = bytes;
        if let Some(large) = self.large.as_mut() {
            let n = large.missing().min(bytes.len());
            large.append(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// One `read` from `reader` into the buffer; returns the bytes read (0 = EOF).
    ///
    /// Reads at most what the current frame still needs (at least 16 KiB, at most 1 MiB),
    /// so the buffer stays bounded by about `max_frame` plus one read. Call it only after
    /// [`FrameDecoder::next_frame`] returned `Ok(None)`; otherwise it fails with
    /// `InvalidInput` without reading. `WouldBlock` and other I/O errors pass through.
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        let need = self.bytes_needed();
        if need == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "FrameDecoder::read_from: a complete frame (or an error) is pending; \
                 drain next_frame() first",
            ));
        }
        self.start_large_frame();
        if let Some(large) = self.large.as_mut() {
            large.make_room();
            let filled = large.filled;
            loop {
                match reader.read(&mut large.payload[filled..]) {
                    Ok(n) => {
                        large.filled += n;
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // A large payload is read directly once its header is in: read no further now.
        let want = match self.prefix() {
            Ok(Some(p)) if p.payload_len() >= DIRECT_PAYLOAD => MIN_READ,
            _ => need.clamp(MIN_READ, MAX_READ),
        };
        self.make_room(want);
        loop {
            match reader.read(&mut self.buf[self.end..self.end + want]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or a fatal error.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, FrameError> {
        if let Some(large) = &self.large {
            if large.missing() > 0 {
                return Ok(None);
            }
            let large = self.large.take().expect("checked");
            return Ok(Some(RawFrame {
                header: large.header,
                payload: large.payload,
            }));
        }
        let prefix = match self.prefix()? {
            Some(p) => p,
            None => return Ok(None),
        };
        if self.buffered() < prefix.frame_len() {
            return Ok(None);
        }
        let header_start = self.start + PREFIX_LEN;
        let payload_start = header_start + prefix.header_len as usize;
        let frame_end = self.start + prefix.frame_len();
        let frame = RawFrame {
            header: self.buf[header_start..payload_start].to_vec(),
            payload: self.buf[payload_start..frame_end].to_vec(),
        };
        self.start = frame_end;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > KEEP_IDLE {
                self.buf = Vec::new();
            }
        }
        Ok(Some(frame))
    }

    /// Call at end of stream: `Ok` if no partial frame is pending, else
    /// [`FrameError::Truncated`] (or the error the decoder already failed with).
    pub fn finish(&mut self) -> Result<(), FrameError> {
        self.prefix()?;
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }

    /// The validated prefix of the frame at `start`, once enough bytes are there.
    fn prefix(&mut self) -> Result<Option<Prefix>, FrameError> {
        if let Some(failure) = self.failed {
            return Err(self.error(failure));
        }
        let data = &self.buf[self.start..self.end];
        let result = if data.len() >= PREFIX_LEN {
            let mut bytes = [0u8; PREFIX_LEN];
            bytes.copy_from_slice(&data[..PREFIX_LEN]);
            parse_prefix(bytes, self.max_frame).and_then(|p| {
                if p.header_len as usize > self.max_header {
                    return Err(FrameError::HeaderTooLarge {
                        header_len: p.header_len,
                        max: self.max_header,
                    });
                }
                Ok(Some(p))
            })
        } else if data.len() >= 4 {
            let total = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            check_total(total, self.max_frame).map(|()| None)
        } else {
            Ok(None)
        };
        if let Err(err) = &result {
            self.failed = match *err {
                FrameError::TooLarge { total, .. } => Some(Failure::TooLarge { total }),
                FrameError::TooSmall { total } => Some(Failure::TooSmall { total }),
                FrameError::Inconsistent { total, header_len } => {
                    Some(Failure::Inconsistent { total, header_len })
                }
                FrameError::HeaderTooLarge { header_len, .. } => {
                    Some(Failure::HeaderTooLarge { header_len })
                }
                _ => None,
            };
            // Drop whatever was buffered: nothing after a framing error is trustworthy.
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
        result
    }

    fn error(&self, failure: Failure) -> FrameError {
        match failure {
            Failure::TooLarge { total } => FrameError::TooLarge {
                total,
                max: self.max_frame,
            },
            Failure::TooSmall { total } => FrameError::TooSmall { total },
            Failure::Inconsistent { total, header_len } => {
                FrameError::Inconsistent { total, header_len }
            }
            Failure::HeaderTooLarge { header_len } => FrameError::HeaderTooLarge {
                header_len,
                max: self.max_header,
            },
        }
    }

    /// Switches the frame at `start` to a direct payload read when its payload is large,
    /// its header is complete and its payload is not: the header and the payload bytes
    /// already buffered move to the frame's own buffers, and the shared buffer empties
    /// (nothing after this frame can be in it yet).
    fn start_large_frame(&mut self) {
        if self.large.is_some() {
            return;
        }
        let Ok(Some(p)) = self.prefix() else { return };
        let header_end = self.start + PREFIX_LEN + p.header_len as usize;
        if p.payload_len() < DIRECT_PAYLOAD
            || self.end < header_end
            || self.buffered() >= p.frame_len()
        {
            return;
        }
        let mut large = LargeFrame {
            header: self.buf[self.start + PREFIX_LEN..header_end].to_vec(),
            payload: Vec::new(),
            filled: 0,
            payload_len: p.payload_len(),
        };
        large.append(&self.buf[header_end..self.end]);
        self.large = Some(large);
        self.start = 0;
        self.end = 0;
        if self.buf.len() > KEEP_IDLE {
            self.buf = Vec::new();
        }
    }

    /// Bytes still missing for the frame at `start` (0 when one is complete or the
    /// decoder has failed / is about to fail).
    fn bytes_needed(&mut self) -> usize {
        if let Some(large) = &self.large {
            return large.missing();
        }
        match self.prefix() {
            Err(_) => 0,
            Ok(None) => PREFIX_LEN - self.buffered().min(PREFIX_LEN),
            Ok(Some(p)) => p.frame_len().saturating_sub(self.buffered()),
        }
    }

    /// Ensures `n` writable bytes after `end`, compacting before growing.
    fn make_room(&mut self, n: usize) {
        if self.buf.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < n {
            self.buf.resize(self.end + n, 0);
        }
    }
}

#[cfg(test)]
mod tests;
