//! The reactor: the one thread that owns the poller, the table of live sources, and the
//! loop that dispatches kernel events to them.
//!
//! The thread waits with no timeout: it wakes only for a kernel event or for shutdown, so
//! an idle reactor costs no wake-ups (`ReactorStats::wakes` shows it).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};

use parking_lot::Mutex;
use polling::Poller;

use crate::interest::{Interest, Mode};
use crate::registration::Registration;
use crate::source::{Action, Dispatch, Source};
use crate::wait::Waiter;

/// Counters of the reactor (relaxed atomics: diagnostics only).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) wakes: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) handler_runs: AtomicU64,
    pub(crate) handler_yields: AtomicU64,
    pub(crate) modify_calls: AtomicU64,
    pub(crate) modify_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the reactor's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReactorStats {
    /// Times the readiness thread returned from its poller wait.
    pub wakes: u64,
    /// Kernel events dispatched to a live source.
    pub events: u64,
    /// Handler invocations.
    pub handler_runs: u64,
    /// Handler runs that stopped with work left ([`crate::Next::again`]).
    pub handler_yields: u64,
    /// `modify` syscalls (re-arms and interest changes). Zero on the hot path in edge mode.
    pub modify_calls: u64,
    /// `modify` syscalls that failed (the source's next operation reports the error).
    pub modify_errors: u64,
    /// Registrations currently alive.
    pub sources: u64,
}

pub(crate) struct Shared {
    pub(crate) poller: Poller,
    pub(crate) mode: Mode,
    sources: Mutex<HashMap<usize, Arc<dyn Dispatch>>>,
    next_key: AtomicUsize,
    shutdown: AtomicBool,
    pub(crate) thread_id: Option<ThreadId>,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    pub(crate) fn shut_down_error() -> io::Error {
        io::Error::other("the readiness reactor has shut down")
    }

    pub(crate) fn forget(&self, key: usize) {
        self.sources.lock().remove(&key);
    }

    fn wake_everyone(&self) {
        let sources: Vec<_> = self.sources.lock().values().cloned().collect();
        for source in sources {
            source.wake_all();
        }
    }
}

/// Owns the readiness thread. Dropping it stops the thread and wakes every waiter, whose
/// wait then returns an error instead of hanging.
pub struct Reactor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Reactor {
    /// Starts the readiness thread (named `readiness`).
    pub fn new() -> io::Result<Reactor> {
        let poller = Poller::new()?;
        let mode = if poller.supports_edge() {
            Mode::Edge
        } else {
            Mode::Oneshot
        };
        // The thread needs `Shared`, and `Shared` records the thread's id: hand the thread
        // its `Arc` through a channel once both exist.
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Shared>>();
        let thread = thread::Builder::new()
            .name("readiness".into())
            .spawn(move || {
                if let Ok(shared) = rx.recv() {
                    run(&shared);
                }
            })?;
        let shared = Arc::new(Shared {
            poller,
            mode,
            sources: Mutex::new(HashMap::new()),
            next_key: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            thread_id: Some(thread.thread().id()),
            counters: Counters::default(),
        });
        tx.send(Arc::clone(&shared))
            .map_err(|_| io::Error::other("the readiness thread exited at start"))?;
        Ok(Reactor {
            shared,
            thread: Some(thread),
        })
    }

    /// Registers `io` (switched to non-blocking mode) with an initial interest and what an
    /// event does. The registration owns `io` from now on.
    pub fn register<T>(
        &self,
        io: T,
        interest: Interest,
        action: Action<T>,
    ) -> io::Result<Registration<T>>
    where
        T: AsFd + Send + Sync + 'static,
    {
        set_nonblocking(&io)?;
        self.register_as_is(io, interest, action)
    }

    /// Registers without touching the fd's flags (for borrowed fds).
    pub(crate) fn register_as_is<T>(
        &self,
        io: T,
        interest: Interest,
        action: Action<T>,
    ) -> io::Result<Registration<T>>
    where
        T: AsFd + Send + Sync + 'static,
    {
        if self.shared.is_shut_down() {
            return Err(Shared::shut_down_error());
        }
        // Keys are never reused (a usize counter does not wrap in practice), so an event
        // still queued for a dropped registration finds nothing instead of a newcomer.
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        let raw = io.as_fd().as_raw_fd();
        let source = Arc::new(Source::new(key, io, self.shared.mode, interest, action));
        // In the table before the kernel knows the fd, so an immediate event finds it.
        self.shared
            .sources
            .lock()
            .insert(key, Arc::clone(&source) as Arc<dyn Dispatch>);
        // SAFETY: the registration owns the fd and deletes it from the poller before the
        // fd can be closed (see `Registration::drop`).
        let added = unsafe {
            self.shared.poller.add_with_mode(
                raw,
                interest.to_event(key),
                self.shared.mode.poll_mode(),
            )
        };
        if let Err(e) = added {
            self.shared.forget(key);
            return Err(e);
        }
        Ok(Registration::new(source, Arc::clone(&self.shared)))
    }

    /// Edge where the platform has it, oneshot elsewhere.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The readiness thread's id (handlers run on it).
    pub fn thread_id(&self) -> ThreadId {
        self.shared.thread_id.expect("set at start")
    }

    pub fn stats(&self) -> ReactorStats {
        let c = &self.shared.counters;
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        ReactorStats {
            wakes: get(&c.wakes),
            events: get(&c.events),
            handler_runs: get(&c.handler_runs),
            handler_yields: get(&c.handler_yields),
            modify_calls: get(&c.modify_calls),
            modify_errors: get(&c.modify_errors),
            sources: self.shared.sources.lock().len() as u64,
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // The thread is parked in the poller with no timeout: this is the one place that
        // has to wake it explicitly.
        let _ = self.shared.poller.notify();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.wake_everyone();
    }
}

fn run(shared: &Shared) {
    let mut waiter = Waiter::new();
    loop {
        let waited = waiter.wait(&shared.poller, |key, ready| {
            if shared.is_shut_down() {
                return;
            }
            let source = shared.sources.lock().get(&key).cloned();
            if let Some(source) = source {
                Counters::bump(&shared.counters.events);
                source.dispatch(&shared.poller, ready, &shared.counters);
            }
        });
        Counters::bump(&shared.counters.wakes);
        if shared.is_shut_down() {
            break;
        }
        if let Err(e) = waited {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The poller itself failed: nothing can be reported any more. Fail every
            // waiter rather than let it hang.
            break;
        }
    }
    shared.shutdown.store(true, Ordering::SeqCst);
    shared.wake_everyone();
}

/// Sets `O_NONBLOCK`: a source must answer `WouldBlock` instead of blocking its reader.
fn set_nonblocking(io: &impl AsFd) -> io::Result<()> {
    let fd = io.as_fd().as_raw_fd();
    // SAFETY: fcntl on a live fd we borrow; F_GETFL/F_SETFL touch only its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
