//! One portable polling thread that turns kernel readiness into notifications.
//!
//! # Why
//!
//! The sidecar learns about its host sockets from the kernel through exactly one thread
//! that owns a [`polling::Poller`] (epoll on Linux, kqueue on macOS, poll(2) as a test
//! backend). Nothing sleeps and re-checks: a socket event either wakes the waiters of that
//! socket, notifies a key of the [`notify_fabric`] fabric, or runs a **handler inline on
//! the readiness thread** — the way a host socket's bytes become a push frame to a guest
//! with a single sidecar thread wake.
//!
//! # Ownership and fd reuse
//!
//! A [`Registration`] owns its source (like async-io's `Async<T>`). Dropping it deletes the
//! fd from the poller *before* the fd is closed, and every registration gets a key that is
//! never reused, so an event still in flight for a closed fd can never be delivered to a new
//! source that got the same fd number — on any backend, including poll(2), which keys its
//! sources by fd number.
//!
//! # Edge, oneshot, and the promise
//!
//! Where [`polling::Poller::supports_edge`] is true (epoll, kqueue) sources are registered
//! edge-triggered once and never re-armed. Elsewhere (the poll(2) backend) they are
//! registered oneshot and the crate re-arms a direction when the consumer sees
//! `WouldBlock` (through [`Registration::try_read_with`] / [`Registration::try_write_with`])
//! or waits on it. The promise, on every backend: **a consumer that reads until
//! `WouldBlock` and then waits is notified at the next readiness transition.** Extra
//! (spurious) notifications are allowed: a woken consumer must be ready to get
//! `WouldBlock` again.
//!
//! Registration changes (register, re-arm, [`Registration::set_interest`]) take effect
//! while the readiness thread is blocked in its wait with no timeout: epoll and kqueue
//! apply `epoll_ctl`/`kevent` changes to a running wait, and polling's poll(2) backend wakes
//! its own waiter to rebuild its fd set. So this crate never calls `Poller::notify` for a
//! registration change, and the readiness thread has no poll timeout: an idle reactor
//! does not wake.
//!
//! # Cached readiness
//!
//! Each registration caches the last readiness the kernel reported per direction, cleared
//! only when an operation returns `WouldBlock` (and only if no newer event arrived
//! meanwhile). So [`Registration::wait_readable_until`] on a source that is already known
//! ready returns `Ok(true)` with no syscall at all.
//!
//! # Handlers
//!
//! A [`Handler`] runs on the readiness thread for each event of its source; it must not
//! block. It returns the [`Interest`] it wants next. In edge mode a handler that returns
//! an interest for a direction it did not drain to `WouldBlock` will not hear of that
//! direction again until new data arrives; to resume a source it stopped reading (for
//! instance when credit runs out), call [`Registration::set_interest`], which re-checks the
//! readiness in the kernel and delivers an event if the source is ready.
//!
//! # Waiting on an fd that is not registered
//!
//! [`wait_fd_readable_until`] / [`wait_fd_writable_until`] are blocking poll(2) waits for a
//! borrowed fd; [`Reactor::wait_fd_readable`] / [`Reactor::wait_fd_writable`] are their
//! async forms, through a temporary registration.

mod direction;
mod fd_wait;
mod interest;
mod reactor;
mod registration;
mod source;
mod wait;

pub use fd_wait::{wait_fd_readable_until, wait_fd_writable_until};
pub use interest::{Interest, Mode, Readiness};
pub use reactor::{Reactor, ReactorStats};
pub use registration::Registration;
pub use source::{Action, Handler, Next};
