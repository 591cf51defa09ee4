//! Byte-stream transports over file descriptors: a Unix socket connection (one fd for
//! both directions) or stdin/stdout (two fds).
//!
//! Reading: the RPC loop awaits readability through tokio's reactor and decodes frames as
//! they complete ([`FdSource`]). Writing ([`FdSink`]): a push first tries a non-blocking
//! `write` straight to the fd, from whatever thread pushes; what the kernel does not take
//! is queued, and a writer task on the RPC loop flushes the queue when the fd turns
//! writable. A push never blocks and never waits for the writer. A push with a payload is
//! written with one vectored write of its header and its payload, so the payload is
//! copied only if the kernel does not take all of it at once.
//!
//! Interest: an fd is registered for readability only. The writer watches writability
//! through a second registration (a dup of the fd) that lives only while frames are
//! queued. Registered for both, a socket whose peer reads each frame as it comes (a guest's
//! event channel) would wake the RPC loop for nothing after every frame: the peer's read
//! frees buffer space, and edge-triggered epoll reports that as a new `EPOLLOUT` (on a
//! 2-vCPU VM the wake of a halted vCPU is ~13 µs inside the guest's `read`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use event_listener::{Event, EventListener};
use parking_lot::Mutex;
use sidecar_protocol::{FrameDecoder, RawFrame};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::{FrameSource, SourceEnd};
use crate::outbound::{FrameSink, SinkClosed};

/// Registers an fd with the RPC loop's reactor for readability (see the module docs),
/// switched to non-blocking mode.
/// Regular files cannot be polled: stdio must be pipes, sockets or terminals.
pub fn async_fd(fd: OwnedFd) -> io::Result<Arc<AsyncFd<File>>> {
    let file = File::from(fd);
    set_nonblocking(&file)?;
    // SAFETY: the `File` owns its fd and is owned by the `AsyncFd` for its whole life, so
    // the fd stays open and names the same file description until the `AsyncFd` drops.
    let registered = unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) };
    Ok(Arc::new(registered.map_err(io::Error::from)?))
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own; only its status flags change.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Frames read from an fd.
pub struct FdSource {
    fd: Arc<AsyncFd<File>>,
    decoder: FrameDecoder,
    /// The fd is a stream socket: a read that returns fewer bytes than asked for has
    /// taken everything the kernel held (see [`FdSource::next_batch`]).
    is_socket: bool,
    /// At most one frame per batch (before attach; see [`FrameSource::set_max_frame`]).
    one_per_batch: bool,
}

impl FdSource {
    pub fn new(fd: Arc<AsyncFd<File>>, max_frame: usize, is_socket: bool) -> Self {
        FdSource {
            fd,
            decoder: FrameDecoder::new(max_frame),
            is_socket,
            one_per_batch: false,
        }
    }

    /// Refuses a frame whose header is longer than `max_header` from its prefix (a
    /// framing error), so an announced huge header is never read into memory.
    pub fn with_max_header(mut self, max_header: usize) -> Self {
        self.decoder.set_max_header(max_header);
        self
    }
}

/// A reader that remembers whether its last read was short (fewer bytes than asked).
struct ShortReads<'a> {
    file: &'a File,
    short: bool,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut file = self.file;
        let n = file.read(buf)?;
        self.short = n > 0 && n < buf.len();
        Ok(n)
    }
}

impl FrameSource for FdSource {
    async fn next_batch(&mut self, out: &mut Vec<RawFrame>) -> Result<(), SourceEnd> {
        loop {
            loop {
                match self.decoder.next_frame() {
                    Ok(Some(frame)) => {
                        out.push(frame);
                        if self.one_per_batch {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(SourceEnd::Framing(e)),
                }
            }
            if !out.is_empty() {
                return Ok(());
            }
            let mut guard = self.fd.readable().await.map_err(|_| SourceEnd::Closed)?;
            let decoder = &mut self.decoder;
            let mut reader = ShortReads {
                file: guard.get_inner(),
                short: false,
            };
            match decoder.read_from(&mut reader) {
                Ok(0) => {
                    return match self.decoder.finish() {
                        Ok(()) => Err(SourceEnd::Closed),
                        Err(e) => Err(SourceEnd::Framing(e)),
                    }
                }
                Ok(_) => {
                    // A short read from a stream socket emptied its receive queue: wait
                    // for the next edge instead of a read that would say EAGAIN (one
                    // system call less per frame; tokio's own sockets do the same).
                    // Bytes that came since are a new edge, which epoll still reports.
                    if self.is_socket && reader.short {
                        guard.clear_ready();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(_) => return Err(SourceEnd::Closed),
            }
        }
    }

    fn set_max_frame(&mut self, max_frame: usize, one_per_batch: bool) {
        self.decoder.set_max_frame(max_frame);
        self.one_per_batch = one_per_batch;
    }
}

#[derive(Default)]
struct Pending {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the front frame already written.
    offset: usize,
    /// Bytes queued and not written yet.
    bytes: usize,
    broken: bool,
    closing: bool,
}

impl Pending {
    /// The stream cannot be written any more: drop what is queued, refuse what comes.
    fn break_queue(&mut self) {
        self.broken = true;
        self.frames.clear();
        self.bytes = 0;
    }
}

/// Pushes to an fd without blocking.
pub struct FdSink {
    fd: Arc<AsyncFd<File>>,
    pending: Mutex<Pending>,
    wake_writer: Notify,
    /// Whether closing should also shut the socket's write side down (not for stdout).
    is_socket: bool,
    /// Notified when the writer has brought the queue down to `drain_target` bytes (a
    /// session waiting for room under its outbound cap listens), and when it stops.
    drained: Event,
    drain_target: AtomicUsize,
}

/// Bytes the writer task writes before it lets the loop's other tasks run: a guest that
/// reads as fast as it is sent must not keep the loop in one flush.
const WRITER_BYTES_PER_TURN: usize = 256 * 1024;

/// How far a flush got.
#[derive(PartialEq, Eq)]
enum Flushed {
    Empty,
    /// The kernel's buffer is full.
    Full,
    /// The byte budget is spent; more can be written.
    Budget,
}

impl FdSink {
    pub fn new(fd: Arc<AsyncFd<File>>, is_socket: bool) -> Arc<Self> {
        Arc::new(FdSink {
            fd,
            pending: Mutex::new(Pending::default()),
            wake_writer: Notify::new(),
            is_socket,
            drained: Event::new(),
            drain_target: AtomicUsize::new(0),
        })
    }

    /// Writes queued frames until the queue is empty or the kernel's buffer is full.
    /// Returns `Ok(true)` when the queue is empty.
    fn flush(&self, pending: &mut Pending) -> io::Result<bool> {
        self.flush_some(pending, usize::MAX)
            .map(|f| f == Flushed::Empty)
    }

    /// [`FdSink::flush`], stopping once `budget` bytes are written.
    fn flush_some(&self, pending: &mut Pending, budget: usize) -> io::Result<Flushed> {
        let start = pending.bytes;
        while let Some(front) = pending.frames.front() {
            if start - pending.bytes >= budget {
                return Ok(Flushed::Budget);
            }
            match self.fd.get_ref().write(&front[pending.offset..]) {
                Ok(n) => {
                    pending.offset += n;
                    pending.bytes -= n;
                    if pending.offset == front.len() {
                        pending.frames.pop_front();
                        pending.offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Full),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::Empty)
    }

    /// The writer took the queue down to `left` bytes: wake a wait for room if that is
    /// as far as it wanted. Called under the queue's lock (see `listen_drained`).
    fn note_drained(&self, left: usize) {
        if left <= self.drain_target.load(Ordering::Relaxed) {
            self.drained.notify(usize::MAX);
        }
    }

    /// The writer task: flushes whenever pushes left bytes queued, until closed or broken.
    pub async fn run_writer(self: Arc<Self>) {
        loop {
            self.wake_writer.notified().await;
            // Writability is watched only until the queue is empty again (module docs).
            let mut watch: Option<AsyncFd<File>> = None;
            loop {
                let (flushed, closing) = {
                    let mut pending = self.pending.lock();
                    match self.flush_some(&mut pending, WRITER_BYTES_PER_TURN) {
                        Ok(flushed) => {
                            self.note_drained(pending.bytes);
                            (flushed, pending.closing)
                        }
                        Err(_) => {
                            pending.break_queue();
                            drop(pending);
                            self.drained.notify(usize::MAX);
                            return;
                        }
                    }
                };
                if flushed == Flushed::Budget {
                    tokio::task::yield_now().await;
                    continue;
                }
                let empty = flushed == Flushed::Empty;
                if empty && closing {
                    self.finish();
                    return;
                }
                if empty {
                    break;
                }
                let w = match watch {
                    Some(ref w) => w,
                    // Registering reports the fd at once if it is writable already, so
                    // space freed since the flush above is not missed.
                    None => match self.writability_watch() {
                        Ok(w) => watch.insert(w),
                        Err(e) => {
                            crate::warn_limited!(%e, "cannot watch a stream for writability");
                            self.pending.lock().break_queue();
                            self.drained.notify(usize::MAX);
                            return;
                        }
                    },
                };
                match w.writable().await {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => return,
                }
            }
        }
    }

    /// A registration of a dup of the fd for writability only.
    fn writability_watch(&self) -> io::Result<AsyncFd<File>> {
        let dup = self.fd.get_ref().try_clone()?;
        // SAFETY: the `AsyncFd` owns the dup, a fd of its own, until it drops.
        unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }.map_err(io::Error::from)
    }

    fn finish(&self) {
        if self.is_socket {
            // SAFETY: shutdown(2) on a socket fd we own; SHUT_WR sends FIN after the data.
            unsafe { libc::shutdown(self.fd.get_ref().as_raw_fd(), libc::SHUT_WR) };
        }
    }
}

impl FrameSink for FdSink {
    fn send(&self, frame: Vec<u8>) -> Result<(), SinkClosed> {
        let mut pending = self.pending.lock();
        if pending.broken || pending.closing {
            return Err(SinkClosed);
        }
        let was_empty = pending.frames.is_empty();
        pending.bytes += frame.len();
        pending.frames.push_back(frame);
        if was_empty {
            match self.flush(&mut pending) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(_) => {
                    pending.break_queue();
                    return Err(SinkClosed);
                }
            }
        }
        drop(pending);
        self.wake_writer.notify_one();
        Ok(())
    }

    fn send_parts(&self, head: Vec<u8>, payload: &[u8]) -> Result<(), SinkClosed> {
        let mut pending = self.pending.lock();
        if pending.broken || pending.closing {
            return Err(SinkClosed);
        }
        let total = head.len() + payload.len();
        // Frames already queued go first: this one joins the queue whole.
        let written = if pending.frames.is_empty() {
            match write_parts(self.fd.get_ref(), &head, payload) {
                Ok(n) => n,
                Err(_) => {
                    pending.break_queue();
                    return Err(SinkClosed);
                }
            }
        } else {
            0
        };
        if written == total {
            return Ok(());
        }
        let rest = if written < head.len() {
            let mut frame = head;
            frame.drain(..written);
            frame.extend_from_slice(payload);
            frame
        } else {
            payload[written - head.len()..].to_vec()
        };
        pending.bytes += rest.len();
        pending.frames.push_back(rest);
        drop(pending);
        self.wake_writer.notify_one();
        Ok(())
    }

    fn close(&self) {
        self.pending.lock().closing = true;
        self.wake_writer.notify_one();
    }

    fn queued_bytes(&self) -> usize {
        self.pending.lock().bytes
    }

    fn listen_drained(&self, target: usize) -> Option<EventListener> {
        let listener = self.drained.listen();
        // Under the queue's lock, as the writer reads it: either the writer sees this
        // target, or the waiter's next look sees what the writer took.
        let _pending = self.pending.lock();
        self.drain_target.store(target, Ordering::Relaxed);
        Some(listener)
    }

    fn is_gone(&self) -> bool {
        self.pending.lock().broken
    }
}

/// Writes `head` then `payload` with vectored writes until both are out or the kernel's
/// buffer is full; returns the bytes written.
fn write_parts(mut file: &File, head: &[u8], payload: &[u8]) -> io::Result<usize> {
    let total = head.len() + payload.len();
    let mut written = 0;
    while written < total {
        let result = if written < head.len() {
            file.write_vectored(&[IoSlice::new(&head[written..]), IoSlice::new(payload)])
        } else {
            file.write(&payload[written - head.len()..])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// Frames given in parts come out whole and in order, whether the kernel took a frame
    /// at once, part of its header, part of its payload, or none of it (a full buffer).
    #[test]
    fn parts_arrive_whole_and_in_order_through_a_full_buffer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let frames: Vec<(Vec<u8>, Vec<u8>)> = (0..40u8)
            .map(|i| {
                let head = vec![i; 3 + usize::from(i % 7)];
                let payload = vec![i.wrapping_mul(31); usize::from(i) * 9_000];
                (head, payload)
            })
            .collect();
        let expected: Vec<u8> = frames
            .iter()
            .flat_map(|(h, p)| h.iter().chain(p.iter()).copied())
            .collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).unwrap();
            got
        });
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let sink = FdSink::new(async_fd(ours.into()).unwrap(), true);
            let writer = tokio::task::spawn_local(sink.clone().run_writer());
            for (head, payload) in &frames {
                sink.send_parts(head.clone(), payload).unwrap();
            }
            sink.close();
            // The writer flushes the queue, then shuts the write side down (EOF).
            writer.await.unwrap();
        });
        assert!(reader.join().unwrap() == expected, "bytes differ");
    }
}
