//! The readiness thread's wait: on Linux, one system call per wake-up.
//!
//! # Why
//!
//! `polling::Poller::wait` on Linux makes five system calls per wait, even with no
//! timeout and no notification: it arms its timerfd and re-registers it
//! (`timerfd_settime`, `epoll_ctl`), waits (`epoll_pwait`), then reads its notification
//! eventfd and re-registers that (`read`, `epoll_ctl`) (smol-rs/polling#224; the fix,
//! #250, is not released). Two of them sit between a peer's datagram arriving and its push
//! leaving the readiness thread, on every `_ext` round trip, and `strace -c` of
//! `diffbench --stage-trace` counted all five per round trip.
//!
//! This thread never uses a timeout and is notified only to shut down, so on Linux it
//! calls `epoll_wait` itself on the poller's epoll fd and reads the events the way
//! polling 3.11 registers them: the key in the event's data, readable on
//! `IN | HUP | ERR | PRI`, writable on `OUT | HUP | ERR`. Only when polling's own
//! notification key comes back does it hand over to `Poller::wait` with a zero timeout,
//! which clears the notification and re-arms it. Registering, modifying and deleting
//! sources still go through polling's API. The decoding depends on polling's internals,
//! which is why the workspace pins `polling = "~3.11"` and why the tests below check it
//! against real fds on every run.
//!
//! Everywhere else (macOS, and polling's poll(2) backend under
//! `--cfg polling_test_poll_backend`) the wait is `Poller::wait`.

use std::io;

use polling::{Events, Poller};

use crate::interest::Readiness;

/// Reusable buffers of the readiness thread's wait.
pub(crate) struct Waiter {
    events: Events,
    #[cfg(all(target_os = "linux", not(polling_test_poll_backend)))]
    raw: Vec<libc::epoll_event>,
}

/// Events taken per wait (as `polling::Events::new`).
#[cfg(all(target_os = "linux", not(polling_test_poll_backend)))]
const CAPACITY: usize = 1024;

impl Waiter {
    pub(crate) fn new() -> Waiter {
        Waiter {
            events: Events::new(),
            #[cfg(all(target_os = "linux", not(polling_test_poll_backend)))]
            raw: vec![libc::epoll_event { events: 0, u64: 0 }; CAPACITY],
        }
    }

    /// Blocks (no timeout) until the kernel reports at least one event or the poller is
    /// notified, then calls `each(key, readiness)` for every source event.
    #[cfg(all(target_os = "linux", not(polling_test_poll_backend)))]
    pub(crate) fn wait(
        &mut self,
        poller: &Poller,
        mut each: impl FnMut(usize, Readiness),
    ) -> io::Result<()> {
        if self.wait_epoll(poller, &mut each)? {
            // polling's notification fired: let polling clear and re-arm it.
            self.wait_polling(poller, Some(std::time::Duration::ZERO), each)?;
        }
        Ok(())
    }

    /// Blocks (no timeout) until the kernel reports at least one event or the poller is
    /// notified, then calls `each(key, readiness)` for every source event.
    #[cfg(not(all(target_os = "linux", not(polling_test_poll_backend))))]
    pub(crate) fn wait(
        &mut self,
        poller: &Poller,
        each: impl FnMut(usize, Readiness),
    ) -> io::Result<()> {
        self.wait_polling(poller, None, each)
    }

    fn wait_polling(
        &mut self,
        poller: &Poller,
        timeout: Option<std::time::Duration>,
        mut each: impl FnMut(usize, Readiness),
    ) -> io::Result<()> {
        self.events.clear();
        poller.wait(&mut self.events, timeout)?;
        for event in self.events.iter() {
            let ready = Readiness {
                readable: event.readable,
                writable: event.writable,
            };
            each(event.key, ready);
        }
        Ok(())
    }

    /// One `epoll_wait`. Returns whether polling's own notification was among the events.
    #[cfg(all(target_os = "linux", not(polling_test_poll_backend)))]
    fn wait_epoll(
        &mut self,
        poller: &Poller,
        each: &mut impl FnMut(usize, Readiness),
    ) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        /// polling's key for its notifier and timer (`polling::NOTIFY_KEY`, private).
        const NOTIFY_KEY: usize = usize::MAX;
        const READ: u32 = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
        const WRITE: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        // SAFETY: the buffer is valid for `CAPACITY` events and outlives the call; the fd
        // is the poller's epoll instance, alive as long as `poller` is borrowed.
        let n = unsafe {
            libc::epoll_wait(
                poller.as_raw_fd(),
                self.raw.as_mut_ptr(),
                CAPACITY as libc::c_int,
                -1,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut notified = false;
        for event in &self.raw[..n as usize] {
            // Copies out of the (packed on x86-64) struct.
            let (flags, key) = (event.events, event.u64 as usize);
            if key == NOTIFY_KEY {
                notified = true;
                continue;
            }
            let ready = Readiness {
                readable: flags & READ != 0,
                writable: flags & WRITE != 0,
            };
            each(key, ready);
        }
        Ok(notified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use polling::{Event, PollMode};

    /// How long a wait that must return may take before the test fails (not a sleep).
    const DEADLINE: Duration = Duration::from_secs(10);

    /// Runs one wait on another thread; `None` if it did not return within the deadline.
    fn wait_once(poller: &Arc<Poller>) -> Option<Vec<(usize, Readiness)>> {
        let (tx, rx) = mpsc::channel();
        let poller = Arc::clone(poller);
        std::thread::spawn(move || {
            let mut waiter = Waiter::new();
            let mut seen = Vec::new();
            waiter
                .wait(&poller, |key, ready| seen.push((key, ready)))
                .unwrap();
            let _ = tx.send(seen);
        });
        rx.recv_timeout(DEADLINE).ok()
    }

    fn mode(poller: &Poller) -> PollMode {
        if poller.supports_edge() {
            PollMode::Edge
        } else {
            PollMode::Oneshot
        }
    }

    /// Keys and directions come back as registered, hang-up included, on every backend.
    #[test]
    fn events_decode_to_their_keys_and_directions() {
        let poller = Arc::new(Poller::new().unwrap());
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, d) = UnixStream::pair().unwrap();
        for s in [&a, &b, &c, &d] {
            s.set_nonblocking(true).unwrap();
        }
        // SAFETY: each stream outlives its registration (deleted below).
        unsafe {
            poller
                .add_with_mode(&b, Event::readable(7), mode(&poller))
                .unwrap();
            poller
                .add_with_mode(&c, Event::writable(9), mode(&poller))
                .unwrap();
        }
        // `c` is writable at once; `b` is not readable yet.
        let seen = wait_once(&poller).expect("a writable socket wakes the wait");
        assert!(seen.contains(&(
            9,
            Readiness {
                readable: false,
                writable: true
            }
        )));
        assert!(!seen.iter().any(|(key, _)| *key == 7), "{seen:?}");
        a.write_all(b"x").unwrap();
        let seen = wait_once(&poller).expect("a readable socket wakes the wait");
        assert!(
            seen.iter().any(|&(key, r)| key == 7 && r.readable),
            "{seen:?}"
        );
        assert!(!seen.iter().any(|(key, _)| *key == 9), "{seen:?}");
        if !poller.supports_edge() {
            poller.modify(&b, Event::readable(7)).unwrap();
        }
        drop(a); // Hang-up: readable (end of stream) for the reader.
        let seen = wait_once(&poller).expect("a hang-up wakes the wait");
        assert!(
            seen.iter().any(|&(key, r)| key == 7 && r.readable),
            "{seen:?}"
        );
        poller.delete(&b).unwrap();
        poller.delete(&c).unwrap();
        drop(d);
    }

    /// A notification ends a wait with no source event, and is re-armed for the next.
    #[test]
    fn notifications_wake_every_time() {
        let poller = Arc::new(Poller::new().unwrap());
        for _ in 0..3 {
            poller.notify().unwrap();
            let seen = wait_once(&poller).expect("a notification wakes the wait");
            assert!(seen.is_empty(), "{seen:?}");
        }
    }
}
