//! A registered source: the consumer's side of the reactor.
//!
//! Operations go through [`Registration::try_read_with`] / [`Registration::try_write_with`]
//! so that a `WouldBlock` clears the cached readiness (guarded against a racing event) and
//! re-arms the direction in oneshot mode. Waits return at once, with no syscall, when the
//! cache already says ready.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use event_listener::Listener as _;

use crate::direction::Direction;
use crate::interest::Interest;
use crate::reactor::Shared;
use crate::source::Source;

#[derive(Clone, Copy)]
enum Which {
    Read,
    Write,
}

impl Which {
    fn interest(self) -> Interest {
        match self {
            Which::Read => Interest::READABLE,
            Which::Write => Interest::WRITABLE,
        }
    }
}

/// An fd registered with the reactor. Owns the fd: dropping the registration deletes it
/// from the poller, stops its handler (waiting for a run in progress, unless dropped from
/// that very handler), and then closes it — at once, or when an event dispatch that is in
/// flight on the readiness thread at that moment returns.
pub struct Registration<T: AsFd + Send + Sync + 'static> {
    source: Arc<Source<T>>,
    shared: Arc<Shared>,
}

impl<T: AsFd + Send + Sync + 'static> Registration<T> {
    pub(crate) fn new(source: Arc<Source<T>>, shared: Arc<Shared>) -> Self {
        Registration { source, shared }
    }

    /// The registered source.
    pub fn get_ref(&self) -> &T {
        &self.source.io
    }

    /// This registration's poller key (unique for the reactor's lifetime).
    pub fn key(&self) -> usize {
        self.source.key
    }

    /// Cached readiness: the kernel reported readable and no operation has since seen
    /// `WouldBlock`.
    pub fn is_readable(&self) -> bool {
        self.source.read.is_ready()
    }

    /// Cached writability, as [`Registration::is_readable`].
    pub fn is_writable(&self) -> bool {
        self.source.write.is_ready()
    }

    /// Runs one read-side operation. On `WouldBlock` the cached readiness is cleared (unless
    /// an event arrived meanwhile) and the direction is armed, so a following wait — on this
    /// registration or on a fabric key it notifies — hears of the next transition.
    pub fn try_read_with<R>(&self, op: impl FnOnce(&T) -> io::Result<R>) -> io::Result<R> {
        self.try_with(Which::Read, op)
    }

    /// The write-side form of [`Registration::try_read_with`].
    pub fn try_write_with<R>(&self, op: impl FnOnce(&T) -> io::Result<R>) -> io::Result<R> {
        self.try_with(Which::Write, op)
    }

    fn try_with<R>(&self, which: Which, op: impl FnOnce(&T) -> io::Result<R>) -> io::Result<R> {
        let direction = self.direction(which);
        let before = direction.snapshot();
        let result = op(&self.source.io);
        if let Err(e) = &result {
            if e.kind() == io::ErrorKind::WouldBlock {
                direction.clear_if_unchanged(before);
                self.arm(which)?;
            }
        }
        result
    }

    /// Blocks until the source is readable (`Ok(true)`) or `deadline` (`Ok(false)`).
    /// Returns at once, with no syscall, if readiness is already cached. Fails if the
    /// reactor shut down.
    pub fn wait_readable_until(&self, deadline: Instant) -> io::Result<bool> {
        self.wait_blocking(Which::Read, deadline)
    }

    /// Blocks until the source is writable or `deadline`, as the readable form.
    pub fn wait_writable_until(&self, deadline: Instant) -> io::Result<bool> {
        self.wait_blocking(Which::Write, deadline)
    }

    /// The async form of [`Registration::wait_readable_until`] (needs tokio's time driver).
    pub async fn readable_until(&self, deadline: Instant) -> io::Result<bool> {
        self.wait_async(Which::Read, deadline).await
    }

    /// The async form of [`Registration::wait_writable_until`] (needs tokio's time driver).
    pub async fn writable_until(&self, deadline: Instant) -> io::Result<bool> {
        self.wait_async(Which::Write, deadline).await
    }

    /// Replaces the interest and re-checks readiness in the kernel: if the source is ready
    /// for the new interest, an event follows. This is how a handler registration that
    /// stopped reading (say, out of credit) is resumed. Always one syscall.
    pub fn set_interest(&self, interest: Interest) -> io::Result<()> {
        if self.shared.is_shut_down() {
            return Err(Shared::shut_down_error());
        }
        let shared = &self.shared;
        self.source
            .set_interest(&shared.poller, interest, &shared.counters, shared.thread_id)
    }

    fn direction(&self, which: Which) -> &Direction {
        match which {
            Which::Read => &self.source.read,
            Which::Write => &self.source.write,
        }
    }

    fn arm(&self, which: Which) -> io::Result<()> {
        let shared = &self.shared;
        self.source
            .arm(&shared.poller, which.interest(), &shared.counters)
    }

    fn alive(&self) -> io::Result<()> {
        match self.shared.is_shut_down() {
            true => Err(Shared::shut_down_error()),
            false => Ok(()),
        }
    }

    fn wait_blocking(&self, which: Which, deadline: Instant) -> io::Result<bool> {
        let direction = self.direction(which);
        loop {
            if direction.is_ready() {
                return Ok(true);
            }
            let listener = direction.listen();
            if direction.is_ready() {
                return Ok(true);
            }
            self.alive()?;
            self.arm(which)?;
            if listener.wait_deadline(deadline).is_none() {
                self.alive()?;
                return Ok(direction.is_ready());
            }
            self.alive()?;
        }
    }

    async fn wait_async(&self, which: Which, deadline: Instant) -> io::Result<bool> {
        let direction = self.direction(which);
        loop {
            if direction.is_ready() {
                return Ok(true);
            }
            let listener = direction.listen();
            if direction.is_ready() {
                return Ok(true);
            }
            self.alive()?;
            self.arm(which)?;
            if tokio::time::timeout_at(deadline.into(), listener)
                .await
                .is_err()
            {
                self.alive()?;
                return Ok(direction.is_ready());
            }
            self.alive()?;
        }
    }
}

impl<T: AsFd + Send + Sync + 'static> Drop for Registration<T> {
    fn drop(&mut self) {
        // Delete before close: the fd number cannot be reused while the kernel (or the
        // poll(2) backend's table) still knows it.
        let _ = self.shared.poller.delete(self.source.io.as_fd());
        self.shared.forget(self.source.key);
        self.source.disable(self.shared.thread_id);
    }
}

impl<T: AsFd + Send + Sync + 'static + std::fmt::Debug> std::fmt::Debug for Registration<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.source.key)
            .field("io", &self.source.io)
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .finish()
    }
}
