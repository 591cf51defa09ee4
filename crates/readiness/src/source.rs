//! One registered source as the readiness thread sees it: its cached readiness, what an
//! event does (the [`Action`]), and the interest currently armed in the kernel.
//!
//! Locking: `armed` (the interest the kernel holds for this source) is only changed under
//! its mutex, and every `modify` syscall is made under it, so our record and the kernel's
//! never disagree. In oneshot mode the readiness thread records "the kernel disarmed this
//! source" and the new cached readiness under that same lock: a consumer that saw the new
//! readiness and then re-arms is guaranteed to see the disarm, so it cannot skip a re-arm
//! it needs. A handler's returned interest is applied while the handler's own mutex is
//! still held, and [`Source::set_interest`] takes that mutex too: a "resume reading" from
//! another thread can never be overwritten by a stale "stop reading" from the handler.

use std::hash::Hash;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

use notify_fabric::Fabric;
use parking_lot::Mutex;
use polling::Poller;

use crate::direction::Direction;
use crate::interest::{Interest, Mode, Readiness};
use crate::reactor::Counters;

/// Code run inline on the readiness thread for each event of its source. It must not
/// block. It returns the interest it wants next (see the crate docs on edge mode).
pub type Handler<T> = Box<dyn FnMut(&T, Readiness) -> Interest + Send>;

/// A non-blocking notifier run on the readiness thread for each event.
pub type Notifier = Box<dyn Fn(Readiness) + Send + Sync>;

/// What an event on a registration does, besides waking the registration's own waiters.
pub enum Action<T> {
    /// Nothing more: consumers wait on the registration itself.
    Wait,
    /// Call this non-blocking notifier on the readiness thread (e.g. a fabric key).
    Notify(Notifier),
    /// Run this handler inline on the readiness thread.
    Handler(Handler<T>),
}

impl<T> Action<T> {
    /// Notify-all `key` of `fabric` on every event.
    pub fn notify_key<K>(fabric: &Fabric<K>, key: K) -> Self
    where
        K: Eq + Hash + Clone + Send + Sync + 'static,
    {
        let fabric = fabric.clone();
        Action::Notify(Box::new(move |_| {
            fabric.notify_all(&key);
        }))
    }

    /// Run `handler` inline on the readiness thread for each event.
    pub fn handler(handler: impl FnMut(&T, Readiness) -> Interest + Send + 'static) -> Self {
        Action::Handler(Box::new(handler))
    }
}

pub(crate) struct Source<T> {
    pub(crate) key: usize,
    pub(crate) io: T,
    pub(crate) read: Direction,
    pub(crate) write: Direction,
    mode: Mode,
    armed: Mutex<Interest>,
    /// Behind a mutex that [`Source::disable`] takes, so once a registration's drop
    /// returns its notifier is never called again (an event already being dispatched
    /// finishes first).
    notify: Option<Mutex<Option<Notifier>>>,
    handler: Option<Mutex<Option<Handler<T>>>>,
    disabled: AtomicBool,
}

/// The readiness thread's view of a source, without its type parameter.
pub(crate) trait Dispatch: Send + Sync {
    fn dispatch(&self, poller: &Poller, ready: Readiness, counters: &Counters);
    fn wake_all(&self);
}

impl<T: AsFd + Send + Sync> Source<T> {
    pub(crate) fn new(key: usize, io: T, mode: Mode, armed: Interest, action: Action<T>) -> Self {
        let (notify, handler) = match action {
            Action::Wait => (None, None),
            Action::Notify(notify) => (Some(Mutex::new(Some(notify))), None),
            Action::Handler(handler) => (None, Some(Mutex::new(Some(handler)))),
        };
        Source {
            key,
            io,
            read: Direction::new(),
            write: Direction::new(),
            mode,
            armed: Mutex::new(armed),
            notify,
            handler,
            disabled: AtomicBool::new(false),
        }
    }

    fn modify(&self, poller: &Poller, interest: Interest, counters: &Counters) -> io::Result<()> {
        Counters::bump(&counters.modify_calls);
        poller.modify_with_mode(
            self.io.as_fd(),
            interest.to_event(self.key),
            self.mode.poll_mode(),
        )
    }

    /// Makes sure the kernel will report `want` (no syscall when it already will).
    pub(crate) fn arm(
        &self,
        poller: &Poller,
        want: Interest,
        counters: &Counters,
    ) -> io::Result<()> {
        let mut armed = self.armed.lock();
        if armed.contains(want) {
            return Ok(());
        }
        let next = armed.union(want);
        self.modify(poller, next, counters)?;
        *armed = next;
        Ok(())
    }

    /// Replaces the interest and re-checks readiness in the kernel (always one syscall).
    pub(crate) fn set_interest(
        &self,
        poller: &Poller,
        interest: Interest,
        counters: &Counters,
        readiness_thread: Option<ThreadId>,
    ) -> io::Result<()> {
        let apply = || {
            let mut armed = self.armed.lock();
            self.modify(poller, interest, counters)?;
            *armed = interest;
            Ok(())
        };
        let Some(handler) = &self.handler else {
            return apply();
        };
        // Serialise with the handler (see the module docs). On the readiness thread the
        // handler may be our caller: then its mutex is held by this very thread.
        let on_readiness_thread = readiness_thread == Some(std::thread::current().id());
        match handler.try_lock() {
            Some(_guard) => apply(),
            None if on_readiness_thread => apply(),
            None => {
                let _guard = handler.lock();
                apply()
            }
        }
    }

    /// Stops running the handler; waits for a run in progress unless called from it.
    pub(crate) fn disable(&self, readiness_thread: Option<ThreadId>) {
        self.disabled.store(true, Ordering::SeqCst);
        if let Some(notify) = &self.notify {
            if readiness_thread != Some(std::thread::current().id()) {
                notify.lock().take();
            } else if let Some(mut guard) = notify.try_lock() {
                guard.take();
            }
        }
        if let Some(handler) = &self.handler {
            if readiness_thread != Some(std::thread::current().id()) {
                handler.lock().take();
            } else if let Some(mut guard) = handler.try_lock() {
                guard.take();
            }
        }
    }

    fn record(&self, fired: Interest) {
        if fired.readable {
            self.read.set_ready();
        }
        if fired.writable {
            self.write.set_ready();
        }
    }

    fn run_handler(&self, poller: &Poller, ready: Readiness, counters: &Counters) {
        let Some(handler) = &self.handler else { return };
        let mut slot = handler.lock();
        if self.disabled.load(Ordering::SeqCst) {
            slot.take();
            return;
        }
        let Some(run) = slot.as_mut() else { return };
        Counters::bump(&counters.handler_runs);
        let next = run(&self.io, ready);
        if self.disabled.load(Ordering::SeqCst) {
            slot.take();
            return;
        }
        let mut armed = self.armed.lock();
        let needed = match self.mode {
            Mode::Edge => next != *armed,
            Mode::Oneshot => !next.is_empty(),
        };
        if needed {
            match self.modify(poller, next, counters) {
                Ok(()) => *armed = next,
                Err(_) => Counters::bump(&counters.modify_errors),
            }
        }
    }
}

impl<T: AsFd + Send + Sync> Dispatch for Source<T> {
    fn dispatch(&self, poller: &Poller, ready: Readiness, counters: &Counters) {
        if self.disabled.load(Ordering::SeqCst) {
            return;
        }
        let fired = ready.as_interest();
        match self.mode {
            Mode::Edge => self.record(fired),
            Mode::Oneshot => {
                // The kernel disarmed the whole source; re-arm at once only the directions
                // a waiter asked for that did not fire. A handler re-arms by its return.
                let mut armed = self.armed.lock();
                let still_wanted = armed.minus(fired);
                *armed = Interest::NONE;
                self.record(fired);
                if self.handler.is_none() && !still_wanted.is_empty() {
                    match self.modify(poller, still_wanted, counters) {
                        Ok(()) => *armed = still_wanted,
                        Err(_) => Counters::bump(&counters.modify_errors),
                    }
                }
            }
        }
        if let Some(notify) = &self.notify {
            let slot = notify.lock();
            if let Some(notify) = slot
                .as_ref()
                .filter(|_| !self.disabled.load(Ordering::SeqCst))
            {
                notify(ready);
            }
        }
        self.run_handler(poller, ready, counters);
    }

    fn wake_all(&self) {
        self.read.wake_all();
        self.write.wake_all();
    }
}
