//! A raw wire client for the attacks a well-behaved guest client cannot make: one that
//! never reads its replies, one that pipelines hundreds of calls, one that sends a
//! malformed frame. Frames are built with the protocol crate, so only the behaviour is
//! hostile, not the encoding.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use guest_client::Client;
use sidecar_protocol::{encode_call, read_frame, CallParams, DEFAULT_MAX_FRAME};

use crate::env::secret_of;

/// An attached session of `vm` on a Unix stream, calls written by hand.
pub struct RawSession {
    pub stream: UnixStream,
    next_id: u64,
    out: Vec<u8>,
}

impl RawSession {
    /// Connects to `socket` and says hello as `vm` (waiting for the reply).
    pub fn attach(socket: &Path, vm: &str) -> io::Result<RawSession> {
        let mut session = RawSession {
            stream: UnixStream::connect(socket)?,
            next_id: 1,
            out: Vec::new(),
        };
        session.send(&Client::hello_params(vm, secret_of(vm)))?;
        match read_frame(&mut session.stream, DEFAULT_MAX_FRAME) {
            Ok(Some(_)) => Ok(session),
            Ok(None) => Err(io::Error::other("the sidecar closed the stream at hello")),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    /// Appends one call frame (the next id) to `out`.
    pub fn encode<P: CallParams>(&mut self, params: &P, out: &mut Vec<u8>) -> io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        encode_call(id, params, false, b"", DEFAULT_MAX_FRAME, out)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Writes one call (blocking while the sidecar does not read: back-pressure).
    pub fn send<P: CallParams>(&mut self, params: &P) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let sent = self
            .encode(params, &mut out)
            .and_then(|()| self.stream.write_all(&out));
        self.out = out;
        sent
    }

    /// Reads one reply's or event's header; `None` at the end of the stream. A read
    /// timeout set on the stream comes back as its `WouldBlock`/`TimedOut` error (only
    /// between frames: the sidecar writes a frame whole).
    pub fn read_header(&mut self) -> io::Result<Option<Vec<u8>>> {
        match read_frame(&mut self.stream, DEFAULT_MAX_FRAME) {
            Ok(frame) => Ok(frame.map(|f| f.header)),
            Err(sidecar_protocol::FrameError::Io(e)) => Err(e),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }
}

/// The 8-byte prefix of a frame announcing `total` bytes (after the `total` field) with a
/// header of `header_len` bytes.
pub fn prefix(total: u32, header_len: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&total.to_be_bytes());
    p[4..].copy_from_slice(&header_len.to_be_bytes());
    p
}
