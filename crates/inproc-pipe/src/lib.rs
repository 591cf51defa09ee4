//! The in-process transport: a duplex pipe of encoded frames.
//!
//! # Why
//!
//! An embedder that runs its isolates on threads of the sidecar's own process (and every
//! test and criterion bench) needs a transport with no socket in it. The sidecar core does
//! not know what carries its frames, so this pipe carries exactly what a socket would:
//! complete encoded frames (`u32 total | u32 header | JSON | payload`), one `Vec<u8>` each.
//! It lives in its own crate because both ends use it and the guest client must never
//! depend on the sidecar.
//!
//! Each direction is an unbounded queue plus an `event-listener` event: sending never
//! blocks (the sidecar's pushes must not; bounds come from the protocol's credit and
//! limits, and a sender can wait for the receiver to take frames: [`Sender::listen_taken`]), and a receiver waits blocking (a guest thread frozen in a sync call) or async
//! (the sidecar's RPC loop), always with a deadline, never polling. Dropping either end of
//! a direction closes it: the other end's waits return [`Closed`] once the queue is empty.
//!
//! # Two ways to wake, measured
//!
//! A thread blocked in [`Receiver::recv_until`] (a guest) is unparked by the sender
//! **with no lock held**. Woken through `event-listener`, whose notify wakes under its
//! list lock, the guest woke on the other vCPU, found the lock still held (its notifier
//! was inside the wake-up system call, ~13 µs on this project's VMs) and slept again: a
//! second wake per push. Unparking outside any lock took in-VM echoes from ~30 to ~16 µs
//! (diffbench, `udp_echo_small` guest-push p50, alternating builds).
//!
//! The async receiver (the RPC loop) keeps `event-listener`. The same change there made
//! those echoes ~3× slower (16 → 50 µs): with it, the loop and the guests spread over both
//! vCPUs and every hand-off paid a cross-CPU wake. Both were measured, not guessed; see
//! the commit that brought this.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::Instant;

use event_listener::Event;
use parking_lot::Mutex;

/// The other end of the direction was dropped (and, for receivers, the queue is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the in-process pipe is closed")
    }
}

impl std::error::Error for Closed {}

struct Direction {
    /// The queue and the threads blocked on it, under one lock: a sender queues and takes
    /// the sleepers in one critical section, and a receiver checks the queue and registers
    /// in one, so neither has to look twice (and a wake-up costs one lock, not three).
    state: Mutex<State>,
    event: Event,
    /// Wakes that took the sleeper list, counted under the lock: a thread registered when
    /// this read `g` is no longer on the list once it reads anything else, so after a
    /// wake-up it need not take the lock again to remove itself.
    list_takes: AtomicU64,
    closed: AtomicBool,
    /// Bytes sent and not received yet.
    queued: AtomicUsize,
    /// Notified when a take leaves at most `taken_target` bytes queued, and on close.
    taken: Event,
    taken_target: AtomicUsize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Threads blocked in [`Receiver::recv_until`] (normally one): unparked with no lock
    /// held (see the crate docs).
    sleepers: Vec<Thread>,
}

impl State {
    /// Takes the sleeper list (to unpark once the lock is released).
    fn take_sleepers(&mut self, list_takes: &AtomicU64) -> Vec<Thread> {
        if self.sleepers.is_empty() {
            return Vec::new();
        }
        list_takes.fetch_add(1, Ordering::Relaxed);
        std::mem::take(&mut self.sleepers)
    }
}

impl Direction {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let sleepers = self.state.lock().take_sleepers(&self.list_takes);
        self.wake(sleepers);
        self.taken.notify(usize::MAX);
    }

    /// The receiver took `bytes`: wake a sender waiting for the queue to shrink this far.
    fn took(&self, bytes: usize) {
        // SeqCst here and in `listen_taken`: either this sees the waiter's target, or the
        // waiter's look at `queued` sees this take.
        let left = self.queued.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        if left <= self.taken_target.load(Ordering::SeqCst) {
            self.taken.notify(usize::MAX);
        }
    }

    /// Wakes every receiver waiting: async ones through the event, blocked threads by
    /// unparking them (taken from the list under the lock, unparked after it).
    fn wake(&self, sleepers: Vec<Thread>) {
        self.event.notify(usize::MAX);
        for thread in sleepers {
            thread.unpark();
        }
    }

    /// Undoes a registration made at generation `registered`; skips the lock when a wake
    /// has taken the list since (it took `me` with it).
    fn remove_sleeper(&self, me: &Thread, registered: u64) {
        if self.list_takes.load(Ordering::Relaxed) != registered {
            return;
        }
        self.state.lock().sleepers.retain(|t| t.id() != me.id());
    }
}

/// Sends frames one way. Dropping it closes the direction.
pub struct Sender {
    dir: Arc<Direction>,
}

/// Receives frames sent the other way. Dropping it closes the direction.
pub struct Receiver {
    dir: Arc<Direction>,
}

/// One side of a duplex pipe: what it sends and what it receives.
pub struct End {
    pub tx: Sender,
    pub rx: Receiver,
}

/// A one-way pipe.
pub fn pipe() -> (Sender, Receiver) {
    let dir = Arc::new(Direction {
        state: Mutex::new(State::default()),
        event: Event::new(),
        list_takes: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        queued: AtomicUsize::new(0),
        taken: Event::new(),
        taken_target: AtomicUsize::new(0),
    });
    (
        Sender {
            dir: Arc::clone(&dir),
        },
        Receiver { dir },
    )
}

/// A duplex pipe: `(guest end, sidecar end)`.
pub fn duplex() -> (End, End) {
    let (guest_tx, sidecar_rx) = pipe();
    let (sidecar_tx, guest_rx) = pipe();
    (
        End {
            tx: guest_tx,
            rx: guest_rx,
        },
        End {
            tx: sidecar_tx,
            rx: sidecar_rx,
        },
    )
}

impl Sender {
    /// Queues one encoded frame. Never blocks.
    pub fn send(&self, frame: Vec<u8>) -> Result<(), Closed> {
        if self.dir.closed.load(Ordering::SeqCst) {
            return Err(Closed);
        }
        self.dir.queued.fetch_add(frame.len(), Ordering::Relaxed);
        let sleepers = {
            let mut state = self.dir.state.lock();
            state.queue.push_back(frame);
            state.take_sleepers(&self.dir.list_takes)
        };
        self.dir.wake(sleepers);
        Ok(())
    }

    /// Bytes sent that the receiver has not taken yet (how far behind it is).
    pub fn queued_bytes(&self) -> usize {
        self.dir.queued.load(Ordering::Relaxed)
    }

    /// A listener notified once the receiver has taken frames leaving at most `target`
    /// bytes queued, or the pipe closed. Listen first, then check
    /// [`Sender::queued_bytes`], then wait: a take in between still notifies.
    pub fn listen_taken(&self, target: usize) -> event_listener::EventListener {
        let listener = self.dir.taken.listen();
        self.dir.taken_target.store(target, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        listener
    }

    /// Closes the direction now (as dropping the sender does): frames already sent are
    /// still received, later sends fail.
    pub fn close(&self) {
        self.dir.close();
    }

    /// Whether the direction is closed (the receiver is gone, or [`Sender::close`]).
    pub fn is_closed(&self) -> bool {
        self.dir.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.dir.close();
    }
}

impl Receiver {
    /// Takes every queued frame (appending to `out`) without waiting. `Err(Closed)` once
    /// the sender is gone and nothing is left.
    pub fn try_recv_all(&self, out: &mut Vec<Vec<u8>>) -> Result<usize, Closed> {
        let mut state = self.dir.state.lock();
        let queue = &mut state.queue;
        if queue.is_empty() {
            drop(state);
            return match self.dir.closed.load(Ordering::SeqCst) {
                // Re-check: the sender may have queued its last frames before closing.
                true if self.dir.state.lock().queue.is_empty() => Err(Closed),
                true => self.try_recv_all(out),
                false => Ok(0),
            };
        }
        let n = queue.len();
        let bytes: usize = queue.iter().map(Vec::len).sum();
        out.extend(queue.drain(..));
        drop(state);
        self.dir.took(bytes);
        Ok(n)
    }

    /// Takes one frame without waiting.
    pub fn try_recv(&self) -> Result<Option<Vec<u8>>, Closed> {
        let taken = |frame: Vec<u8>| {
            self.dir.took(frame.len());
            frame
        };
        let front = self.dir.state.lock().queue.pop_front();
        if let Some(frame) = front {
            return Ok(Some(taken(frame)));
        }
        if self.dir.closed.load(Ordering::SeqCst) {
            let frame = self.dir.state.lock().queue.pop_front();
            return frame.map(|f| Some(taken(f))).ok_or(Closed);
        }
        Ok(None)
    }

    /// Blocks until a frame arrives (`Ok(Some)`), the deadline passes (`Ok(None)`), or the
    /// pipe closes with nothing left (`Err(Closed)`).
    pub fn recv_until(&self, deadline: Instant) -> Result<Option<Vec<u8>>, Closed> {
        let me = thread::current();
        let mut registered = None;
        let got = loop {
            // Look and, finding nothing, register, in one critical section: a send after
            // it finds us on the list.
            {
                let mut state = self.dir.state.lock();
                if let Some(frame) = state.queue.pop_front() {
                    drop(state);
                    self.dir.took(frame.len());
                    break Ok(Some(frame));
                }
                if self.dir.closed.load(Ordering::SeqCst) {
                    break Err(Closed);
                }
                if !state.sleepers.iter().any(|t| t.id() == me.id()) {
                    state.sleepers.push(me.clone());
                }
                registered = Some(self.dir.list_takes.load(Ordering::Relaxed));
            }
            let now = Instant::now();
            if now >= deadline {
                break Ok(None);
            }
            // Returns on an unpark, at the deadline, or spuriously: the loop looks again.
            thread::park_timeout(deadline - now);
        };
        if let Some(registered) = registered {
            self.dir.remove_sleeper(&me, registered);
        }
        got
    }

    /// Waits (async, no timer needed) until at least one frame is queued, then takes them
    /// all into `out`. `Err(Closed)` when the pipe closed with nothing left.
    pub async fn recv_all(&self, out: &mut Vec<Vec<u8>>) -> Result<usize, Closed> {
        loop {
            let n = self.try_recv_all(out)?;
            if n > 0 {
                return Ok(n);
            }
            let listener = self.dir.event.listen();
            let n = self.try_recv_all(out)?;
            if n > 0 {
                return Ok(n);
            }
            listener.await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.dir.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn frames_arrive_in_order_across_threads() {
        let (guest, sidecar) = duplex();
        let writer = thread::spawn(move || {
            for i in 0..1000u32 {
                guest.tx.send(i.to_be_bytes().to_vec()).unwrap();
            }
            guest
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..1000u32 {
            let frame = sidecar.rx.recv_until(deadline).unwrap().expect("frame");
            assert_eq!(frame, i.to_be_bytes());
        }
        drop(writer.join().unwrap());
        assert_eq!(sidecar.rx.recv_until(deadline), Err(Closed));
        assert_eq!(sidecar.tx.send(vec![1]), Err(Closed));
    }

    #[test]
    fn queued_bytes_count_what_the_receiver_has_not_taken() {
        let (tx, rx) = pipe();
        tx.send(vec![0; 10]).unwrap();
        tx.send(vec![0; 5]).unwrap();
        tx.send(vec![0; 7]).unwrap();
        assert_eq!(tx.queued_bytes(), 22);
        assert_eq!(rx.try_recv().unwrap().map(|f| f.len()), Some(10));
        assert_eq!(tx.queued_bytes(), 12);
        let mut rest = Vec::new();
        rx.try_recv_all(&mut rest).unwrap();
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[test]
    fn a_sender_listening_for_takes_is_woken_once_the_queue_is_down_to_its_target() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, rx) = pipe();
        for _ in 0..4 {
            tx.send(vec![0; 10]).unwrap();
        }
        let listener = tx.listen_taken(20);
        assert_eq!(rx.try_recv().unwrap().map(|f| f.len()), Some(10));
        let taker = thread::spawn(move || {
            rx.try_recv().unwrap();
            rx
        });
        runtime.block_on(listener);
        assert_eq!(tx.queued_bytes(), 20);
        drop(taker.join().unwrap());
    }

    #[test]
    fn a_blocked_receiver_is_woken_by_a_send_and_by_a_close() {
        let (tx, rx) = pipe();
        let far = Instant::now() + Duration::from_secs(60);
        let receiver = thread::spawn(move || {
            let first = rx.recv_until(far);
            let second = rx.recv_until(far);
            (first, second)
        });
        tx.send(b"one".to_vec()).unwrap();
        // Whether the receiver is already parked or not, the close must end its second wait
        // long before the 60 s deadline (the join would hang the test otherwise).
        drop(tx);
        let (first, second) = receiver.join().unwrap();
        assert_eq!(first, Ok(Some(b"one".to_vec())));
        assert_eq!(second, Err(Closed));
    }

    #[test]
    fn two_threads_waiting_on_one_receiver_both_get_a_frame() {
        let (tx, rx) = pipe();
        let rx = Arc::new(rx);
        let far = Instant::now() + Duration::from_secs(60);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let rx = Arc::clone(&rx);
                thread::spawn(move || rx.recv_until(far))
            })
            .collect();
        tx.send(vec![1]).unwrap();
        tx.send(vec![2]).unwrap();
        let mut got: Vec<Vec<u8>> = waiters
            .into_iter()
            .map(|w| w.join().unwrap().unwrap().expect("a frame"))
            .collect();
        got.sort();
        assert_eq!(got, vec![vec![1], vec![2]]);
    }

    #[test]
    fn a_wait_on_nothing_ends_at_its_deadline() {
        let (_guest, sidecar) = duplex();
        let until = Instant::now() + Duration::from_millis(20);
        assert_eq!(sidecar.rx.recv_until(until), Ok(None));
        assert!(Instant::now() >= until);
    }

    #[test]
    fn frames_sent_before_close_are_still_received() {
        let (tx, rx) = pipe();
        tx.send(vec![1]).unwrap();
        tx.send(vec![2]).unwrap();
        drop(tx);
        let mut all = Vec::new();
        assert_eq!(rx.try_recv_all(&mut all), Ok(2));
        assert_eq!(all, vec![vec![1], vec![2]]);
        assert_eq!(rx.try_recv_all(&mut all), Err(Closed));
    }

    #[test]
    fn async_receive_wakes_on_send_from_another_thread() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, rx) = pipe();
        let sender = thread::spawn(move || {
            tx.send(b"hello".to_vec()).unwrap();
            tx
        });
        let mut got = Vec::new();
        runtime.block_on(async { rx.recv_all(&mut got).await.unwrap() });
        assert_eq!(got, vec![b"hello".to_vec()]);
        drop(sender.join().unwrap());
        let closed = runtime.block_on(async { rx.recv_all(&mut got).await });
        assert_eq!(closed, Err(Closed));
    }
}
