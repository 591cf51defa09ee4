//! The bounded, fair pool that runs host name lookups.
//!
//! Why a pool of its own: `getaddrinfo` blocks and cannot be cancelled. On tokio's
//! blocking pool, 600 lookups of names a resolver never answered took the sidecar from 3
//! to 515 threads, and another VM's lookup waited 18 s behind them. Here:
//!
//! - at most `dns_threads` worker threads (sidecar wide), started when lookups need
//!   them; a worker whose resolver call never returns stays counted, so stuck calls make
//!   new lookups queue (and time out), never spawn more threads;
//! - each VM has its own queue, taken round robin, and may occupy at most
//!   `dns_threads - 1` workers (running or stuck), so another VM's lookup starts promptly;
//! - a VM may have `dns_lookups_per_vm` lookups queued or running at once (a stuck one
//!   included); beyond, [`DnsPool::submit`] refuses at once ([`Busy`]);
//! - the caller waits on a [`Ticket`] with a deadline: a tokio oneshot the worker answers
//!   through, so the RPC loop sleeps until the answer or the deadline, never polls. A
//!   ticket dropped unanswered withdraws its lookup: off the queue if it has not started
//!   (no query leaves), else counted in `dns_abandoned_running` until the resolver returns.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::resolver::ResolverHandle;
use crate::metrics::{bump, drop_one, Metrics};

/// What a resolver answered.
pub type Answer = io::Result<Vec<IpAddr>>;

/// The pool. Dropping it stops the workers (a stuck one once its call returns).
pub struct DnsPool {
    shared: Arc<Shared>,
}

/// A VM has as many lookups in flight as it may: the caller's `EAGAIN`.
#[derive(Debug, Clone, Copy)]
pub struct Busy {
    pub in_flight: usize,
    pub cap: usize,
}

/// The pool's state for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Worker threads alive, and the most there may be.
    pub threads: usize,
    pub max_threads: usize,
    /// Workers in a resolver call now (abandoned ones included).
    pub busy: usize,
    /// Lookups waiting for a worker.
    pub queued: usize,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    resolver: ResolverHandle,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    max_threads: usize,
    threads: usize,
    idle: usize,
    queued: usize,
    vms: HashMap<String, VmLookups>,
    /// VMs with queued lookups, in the order workers serve them.
    ring: VecDeque<String>,
    /// Lookups in a resolver call, by id.
    running: HashMap<u64, Running>,
    next_id: u64,
    closed: bool,
}

#[derive(Default)]
struct VmLookups {
    queue: VecDeque<Job>,
    running: usize,
}

struct Job {
    id: u64,
    host: String,
    reply: oneshot::Sender<Answer>,
}

struct Running {
    vm: String,
    abandoned: bool,
}

impl DnsPool {
    /// A pool of at most `threads` workers (none started yet).
    pub fn new(resolver: ResolverHandle, threads: usize, metrics: Arc<Metrics>) -> Self {
        let state = State {
            max_threads: threads.max(1),
            ..State::default()
        };
        let shared = Shared {
            state: Mutex::new(state),
            work: Condvar::new(),
            resolver,
            metrics,
        };
        DnsPool {
            shared: Arc::new(shared),
        }
    }

    /// Queues a lookup of `host` for VM `vm`, which may have `cap` in flight, on a pool
    /// of `threads` workers (the current `dns_threads`: a reload may change it).
    pub fn submit(
        &self,
        vm: &str,
        host: String,
        cap: usize,
        threads: usize,
    ) -> Result<Ticket, Busy> {
        let mut state = self.shared.state.lock();
        state.max_threads = threads.max(1);
        let in_flight = state.in_flight(vm);
        if in_flight >= cap || state.closed {
            return Err(Busy { in_flight, cap });
        }
        let (reply, rx) = oneshot::channel();
        state.next_id += 1;
        let id = state.next_id;
        let lookups = state.vms.entry(vm.to_owned()).or_default();
        lookups.queue.push_back(Job { id, host, reply });
        if lookups.queue.len() == 1 {
            state.ring.push_back(vm.to_owned());
        }
        state.queued += 1;
        if state.queued > state.idle && state.threads < state.max_threads {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("sidecar-dns".into())
                .spawn(move || work(&shared));
            // Not spawned (the process is out of threads): the lookup waits for a
            // running worker, or its deadline.
            if spawned.is_ok() {
                state.threads += 1;
            }
        }
        self.shared.work.notify_one();
        Ok(Ticket {
            id,
            vm: vm.to_owned(),
            rx,
            shared: Arc::clone(&self.shared),
            settled: false,
        })
    }

    /// Lookups VM `vm` has queued or running (abandoned ones included).
    pub fn in_flight(&self, vm: &str) -> usize {
        self.shared.state.lock().in_flight(vm)
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.shared.state.lock();
        PoolStats {
            threads: state.threads,
            max_threads: state.max_threads,
            busy: state.running.len(),
            queued: state.queued,
        }
    }
}

impl Drop for DnsPool {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        // Queued lookups are dropped: their tickets learn it from their closed channels.
        for lookups in state.vms.values_mut() {
            lookups.queue.clear();
        }
        state.ring.clear();
        state.queued = 0;
        self.shared.work.notify_all();
    }
}

/// One submitted lookup, answered through [`Ticket::answer`]. Dropped unanswered, it is
/// withdrawn (module docs).
pub struct Ticket {
    id: u64,
    vm: String,
    rx: oneshot::Receiver<Answer>,
    shared: Arc<Shared>,
    settled: bool,
}

impl Ticket {
    /// The resolver's answer, or `None` when `deadline` passed first (the lookup is then
    /// withdrawn).
    pub async fn answer(mut self, deadline: Instant) -> Option<Answer> {
        match tokio::time::timeout_at(deadline.into(), &mut self.rx).await {
            Ok(answer) => {
                self.settled = true;
                Some(answer.unwrap_or_else(|_| Err(io::Error::other("the sidecar is stopping"))))
            }
            Err(_) => None,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            let mut state = self.shared.state.lock();
            state.withdraw(self.id, &self.vm, &self.shared.metrics);
        }
    }
}

impl State {
    fn in_flight(&self, vm: &str) -> usize {
        self.vms.get(vm).map_or(0, |l| l.queue.len() + l.running)
    }

    /// The next lookup to run: VMs in turn, skipping those that occupy as many workers
    /// as one VM may (all but one; one when the pool has one worker).
    fn take_next(&mut self) -> Option<(String, Job)> {
        let per_vm = self.max_threads.saturating_sub(1).max(1);
        for _ in 0..self.ring.len() {
            let vm = self.ring.pop_front()?;
            let Some(lookups) = self.vms.get_mut(&vm) else {
                continue;
            };
            if lookups.running >= per_vm {
                self.ring.push_back(vm);
                continue;
            }
            let Some(job) = lookups.queue.pop_front() else {
                continue;
            };
            lookups.running += 1;
            self.queued -= 1;
            if !lookups.queue.is_empty() {
                self.ring.push_back(vm.clone());
            }
            let running = Running {
                vm: vm.clone(),
                abandoned: false,
            };
            self.running.insert(job.id, running);
            return Some((vm, job));
        }
        None
    }

    /// A worker's resolver call returned.
    fn finish(&mut self, id: u64, metrics: &Metrics) {
        let Some(running) = self.running.remove(&id) else {
            return;
        };
        if running.abandoned {
            drop_one(&metrics.dns_abandoned_running);
        }
        if let Some(lookups) = self.vms.get_mut(&running.vm) {
            lookups.running -= 1;
            if lookups.running == 0 && lookups.queue.is_empty() {
                self.vms.remove(&running.vm);
            }
        }
    }

    /// A ticket gave up on lookup `id` of `vm`.
    fn withdraw(&mut self, id: u64, vm: &str, metrics: &Metrics) {
        if let Some(lookups) = self.vms.get_mut(vm) {
            if let Some(at) = lookups.queue.iter().position(|job| job.id == id) {
                lookups.queue.remove(at);
                self.queued -= 1;
                if lookups.queue.is_empty() {
                    self.ring.retain(|v| v != vm);
                    if lookups.running == 0 {
                        self.vms.remove(vm);
                    }
                }
                return;
            }
        }
        if let Some(running) = self.running.get_mut(&id) {
            if !running.abandoned {
                running.abandoned = true;
                bump(&metrics.dns_abandoned_running);
            }
        }
    }
}

/// A worker: takes lookups until the pool closes (or has more workers than it may).
fn work(shared: &Shared) {
    let mut state = shared.state.lock();
    loop {
        if state.closed || state.threads > state.max_threads {
            state.threads -= 1;
            return;
        }
        let Some((_, job)) = state.take_next() else {
            state.idle += 1;
            shared.work.wait(&mut state);
            state.idle -= 1;
            continue;
        };
        drop(state);
        let resolver = &shared.resolver.0;
        let answer = catch_unwind(AssertUnwindSafe(|| resolver.lookup(&job.host)))
            .unwrap_or_else(|_| Err(io::Error::other("the resolver panicked")));
        state = shared.state.lock();
        state.finish(job.id, &shared.metrics);
        let _ = job.reply.send(answer);
    }
}
