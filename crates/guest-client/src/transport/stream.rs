//! A transport over a byte stream: a Unix socket, a child's stdio, any `Read` + `Write`.
//!
//! Frames are cut out of the stream by the protocol's [`FrameDecoder`], which keeps a
//! partial frame across reads. That is what makes deadlines safe: a wait that ends in the
//! middle of a frame loses nothing, the rest is read next time.
//!
//! Deadlines on a file descriptor are waited for with `poll(2)` on the reader's fd, on the
//! calling thread: no reader thread, so an event costs no extra thread hop. A reader
//! without an fd ([`StreamTransport::untimed`]) cannot wait with a deadline; it answers a
//! deadline with what is already buffered, and blocks only when asked to wait forever.

use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use sidecar_protocol::{FrameDecoder, RawFrame, DEFAULT_MAX_FRAME};

use super::{Transport, TransportError};

/// Waits until the reader has bytes (or EOF) to read: `Ok(true)`, or the deadline passed:
/// `Ok(false)`. `None` waits without limit.
type WaitReadable<R> = fn(&R, Option<Instant>) -> io::Result<bool>;

/// Frames over a blocking reader and writer (which may be two halves of one socket).
pub struct StreamTransport<R, W> {
    reader: R,
    writer: W,
    decoder: FrameDecoder,
    wait: WaitReadable<R>,
    eof: bool,
}

impl<R: Read + Send, W: Write + Send> StreamTransport<R, W> {
    /// A transport over any blocking reader and writer, e.g. in-memory buffers.
    ///
    /// Without an fd to wait on, a receive with a deadline never waits: it returns a
    /// frame already buffered or `Ok(None)`. Receives without a deadline block in `read`.
    /// The reader must be in blocking mode.
    pub fn untimed(reader: R, writer: W) -> StreamTransport<R, W> {
        fn never<R>(_: &R, deadline: Option<Instant>) -> io::Result<bool> {
            Ok(deadline.is_none())
        }
        StreamTransport::with_wait(reader, writer, never::<R>)
    }

    fn with_wait(reader: R, writer: W, wait: WaitReadable<R>) -> StreamTransport<R, W> {
        StreamTransport {
            reader,
            writer,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            wait,
            eof: false,
        }
    }

    /// The reader and the writer back (any partially received frame is dropped).
    pub fn into_inner(self) -> (R, W) {
        (self.reader, self.writer)
    }
}

#[cfg(unix)]
impl<R, W> StreamTransport<R, W>
where
    R: Read + std::os::fd::AsFd + Send,
    W: Write + Send,
{
    /// A transport over a reader with a file descriptor (a socket, a pipe such as a
    /// child's stdout, stdin) and any writer. Deadlines are honoured with `poll(2)`.
    ///
    /// For a sidecar started as a child with `serve --stdio`:
    /// `StreamTransport::new(child.stdout.take()?, child.stdin.take()?)`.
    pub fn new(reader: R, writer: W) -> StreamTransport<R, W> {
        StreamTransport::with_wait(reader, writer, wait_fd::<R>)
    }
}

/// Connects to the sidecar's Unix listening socket (`sidecar serve --listen PATH`).
#[cfg(unix)]
pub fn connect_unix(
    path: impl AsRef<std::path::Path>,
) -> io::Result<StreamTransport<std::os::unix::net::UnixStream, std::os::unix::net::UnixStream>> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    let reader = stream.try_clone()?;
    Ok(StreamTransport::new(reader, stream))
}

/// The session `sidecar run` hands its child: the primary stream on the fd named by
/// `PUSHNET_FD` (3), already attached to its VM, and the mode in `PUSHNET_MODE`. Say
/// hello on it with [`crate::Client::hello_params_attached`] (in that mode):
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use guest_client::{transport, Client};
/// let (stream, mode) = transport::inherited_session()?;
/// let mut hello = Client::hello_params_attached();
/// hello.mode = mode;
/// let client = Client::connect(stream, hello)?;
/// # Ok(()) }
/// ```
///
/// Takes the fd over (call it once). `PUSHNET_EVENT_FD`, the event channel a Node guest
/// uses, is left alone: this client reads events on the primary stream.
#[cfg(unix)]
pub fn inherited_session() -> io::Result<(
    StreamTransport<std::os::unix::net::UnixStream, std::os::unix::net::UnixStream>,
    sidecar_protocol::Mode,
)> {
    use std::os::fd::{FromRawFd, RawFd};
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let fd: RawFd = match std::env::var("PUSHNET_FD") {
        Ok(text) => text
            .parse()
            .ok()
            .filter(|fd| *fd >= 0)
            .ok_or_else(|| invalid(format!("PUSHNET_FD={text} is not an fd")))?,
        Err(_) => {
            return Err(invalid(
                "PUSHNET_FD is not set: not started by `sidecar run`".into(),
            ))
        }
    };
    let mode = match std::env::var("PUSHNET_MODE").as_deref() {
        Ok("poll") => sidecar_protocol::Mode::Poll,
        Ok("push") | Err(_) => sidecar_protocol::Mode::Push,
        Ok(other) => {
            return Err(invalid(format!(
                "PUSHNET_MODE={other}: expected push or poll"
            )))
        }
    };
    // SAFETY: fcntl(F_GETFD) only asks whether the fd is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(invalid(format!("PUSHNET_FD={fd} is not an open fd")));
    }
    // SAFETY: `sidecar run` placed a connected socket at this open fd for this process;
    // it is taken over once (the caller's contract) and owned from here on.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    let reader = stream.try_clone()?;
    Ok((StreamTransport::new(reader, stream), mode))
}

impl<R: Read + Send, W: Write + Send> Transport for StreamTransport<R, W> {
    fn send(&mut self, frame: Vec<u8>) -> Result<(), TransportError> {
        self.writer.write_all(&frame)?;
        self.writer.flush()?;
        Ok(())
    }

    fn send_parts(&mut self, head: Vec<u8>, payload: &[u8]) -> Result<(), TransportError> {
        let mut written = 0;
        while written < head.len() {
            let parts = [IoSlice::new(&head[written..]), IoSlice::new(payload)];
            match self.writer.write_vectored(&parts) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.writer.write_all(&payload[written - head.len()..])?;
        self.writer.flush()?;
        Ok(())
    }

    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<RawFrame>, TransportError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            if self.eof {
                self.decoder.finish()?;
                return Err(TransportError::Closed);
            }
            if deadline.is_some() && !(self.wait)(&self.reader, deadline)? {
                return Ok(None);
            }
            match self.decoder.read_from(&mut self.reader) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reader with its own timeout, or a non-blocking one: wait, then retry.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if !(self.wait)(&self.reader, deadline)? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn set_max_frame(&mut self, max_frame: usize) {
        if self.decoder.max_frame() != max_frame && self.decoder.buffered() == 0 {
            self.decoder = FrameDecoder::new(max_frame);
        }
    }
}

/// `poll(2)` for readability of the reader's fd until the deadline.
#[cfg(unix)]
fn wait_fd<R: std::os::fd::AsFd>(reader: &R, deadline: Option<Instant>) -> io::Result<bool> {
    use std::os::fd::AsRawFd;

    let fd = reader.as_fd().as_raw_fd();
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up, so a wait never ends just before its deadline.
                let ms = left.as_micros().div_ceil(1000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid, initialised pollfd that outlives the call, and we pass
        // a count of exactly one. `fd` is borrowed from `reader` for the whole call.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc > 0 {
            // POLLIN, or POLLHUP / POLLERR: either way a read will not block.
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use sidecar_protocol::encode_raw_frame;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_raw_frame(b"{\"x\":1}", payload, DEFAULT_MAX_FRAME, &mut out).unwrap();
        out
    }

    #[test]
    fn a_deadline_in_the_middle_of_a_frame_loses_nothing() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut t = StreamTransport::new(ours.try_clone().unwrap(), ours);
        let bytes = frame(b"split across a timeout");
        theirs.write_all(&bytes[..5]).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(t.recv(Some(soon)).unwrap().is_none());
        assert!(Instant::now() >= soon, "returned before its deadline");
        theirs.write_all(&bytes[5..]).unwrap();
        let got = t
            .recv(Some(Instant::now() + Duration::from_secs(10)))
            .unwrap();
        assert_eq!(got.unwrap().payload, b"split across a timeout");
        drop(theirs);
        assert!(matches!(t.recv(None), Err(TransportError::Closed)));
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut t = StreamTransport::new(ours.try_clone().unwrap(), ours);
        theirs.write_all(&frame(b"abc")[..10]).unwrap();
        drop(theirs);
        let err = t.recv(None).unwrap_err();
        assert!(matches!(err, TransportError::Frame(_)), "{err}");
        assert!(!err.is_protocol_violation());
    }

    #[test]
    fn untimed_answers_deadlines_from_its_buffer() {
        let bytes = [frame(b"one"), frame(b"two")].concat();
        let mut t = StreamTransport::untimed(&bytes[..], Vec::new());
        assert_eq!(t.recv(None).unwrap().unwrap().payload, b"one");
        // The second frame came in with the first read: a deadline returns it.
        assert_eq!(
            t.recv(Some(Instant::now())).unwrap().unwrap().payload,
            b"two"
        );
        assert!(matches!(t.recv(None), Err(TransportError::Closed)));
        t.send(frame(b"out")).unwrap();
        assert_eq!(t.into_inner().1, frame(b"out"));
    }
}
