//! Waits on a borrowed fd that is not registered with the reactor.
//!
//! The blocking forms are one poll(2) call (looped only for `EINTR` and for the kernel's
//! millisecond rounding): a thread that needs one readiness answer for an fd it does not
//! own should not pay for a registration. The async forms cannot block their runtime, so
//! they go through a temporary registration with the reactor, deleted before they return
//! (or when the future is dropped) and before the borrow ends.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use crate::interest::Interest;
use crate::reactor::Reactor;
use crate::source::Action;

/// Blocks until `fd` is readable (`Ok(true)`; a hang-up or error counts, so the next read
/// reports it) or `deadline` passes (`Ok(false)`).
pub fn wait_fd_readable_until(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<bool> {
    poll_one(fd, libc::POLLIN, deadline)
}

/// Blocks until `fd` is writable (`Ok(true)`) or `deadline` passes (`Ok(false)`).
pub fn wait_fd_writable_until(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<bool> {
    poll_one(fd, libc::POLLOUT, deadline)
}

fn poll_one(fd: BorrowedFd<'_>, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    // The first look has a zero timeout: for an fd that is already ready it is the
    // cheapest form of the call (no clock read, no kernel timer set up).
    let mut first = true;
    loop {
        let millis = if first {
            0
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up so a wait never ends before its deadline.
            left.as_micros()
                .div_ceil(1000)
                .min(libc::c_int::MAX as u128)
        };
        let mut pollfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, borrowed fd alive for the call.
        let n = unsafe { libc::poll(&mut pollfd, 1, millis as libc::c_int) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n > 0 {
            if pollfd.revents & libc::POLLNVAL != 0 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            return Ok(true);
        }
        if !first && Instant::now() >= deadline {
            return Ok(false);
        }
        first = false;
    }
}

/// A borrowed fd as a registrable source. Never closes the fd; the async waits below keep
/// the borrow alive for as long as the temporary registration exists.
struct BorrowedRaw(RawFd);

impl AsFd for BorrowedRaw {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: only built from a `BorrowedFd` whose lifetime outlives the registration
        // holding this value (the registration is dropped inside the borrowing call).
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}

impl Reactor {
    /// Async form of [`wait_fd_readable_until`], through a temporary registration.
    pub async fn wait_fd_readable(
        &self,
        fd: BorrowedFd<'_>,
        deadline: Instant,
    ) -> io::Result<bool> {
        let registration = self.register_as_is(
            BorrowedRaw(fd.as_raw_fd()),
            Interest::READABLE,
            Action::Wait,
        )?;
        registration.readable_until(deadline).await
    }

    /// Async form of [`wait_fd_writable_until`], through a temporary registration.
    pub async fn wait_fd_writable(
        &self,
        fd: BorrowedFd<'_>,
        deadline: Instant,
    ) -> io::Result<bool> {
        let registration = self.register_as_is(
            BorrowedRaw(fd.as_raw_fd()),
            Interest::WRITABLE,
            Action::Wait,
        )?;
        registration.writable_until(deadline).await
    }
}
