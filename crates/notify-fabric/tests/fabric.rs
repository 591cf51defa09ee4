//! Behaviour of the fabric: no lost wake-ups, deadlines, fallback counters, shutdown,
//! key cleanup, notify-one vs notify-all, and the async form on a current-thread runtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use notify_fabric::{Fabric, WaitOptions, WakeReason};

const GENEROUS: Duration = Duration::from_secs(10);

fn deadline() -> Instant {
    Instant::now() + GENEROUS
}

#[test]
fn notify_after_listen_wakes_a_blocked_waiter() {
    let fabric: Fabric<u32> = Fabric::new();
    let listener = fabric.listen(&1);
    let waiter = thread::spawn(move || listener.wait_blocking(deadline()));
    fabric.notify_all(&1);
    assert_eq!(waiter.join().unwrap(), WakeReason::Notified);
}

#[test]
fn notify_between_check_and_wait_is_not_lost() {
    let fabric: Fabric<u32> = Fabric::new();
    let listener = fabric.listen(&7);
    // The notification lands after listen but before the wait starts.
    assert!(fabric.notify_all(&7));
    assert!(listener.is_notified());
    let start = Instant::now();
    assert_eq!(
        listener.wait_blocking(start + GENEROUS),
        WakeReason::Notified
    );
}

#[test]
fn notify_on_another_key_does_not_wake() {
    let fabric: Fabric<u32> = Fabric::new();
    let listener = fabric.listen(&1);
    assert!(!fabric.notify_all(&2), "key 2 has no listener");
    let until = Instant::now() + Duration::from_millis(30);
    assert_eq!(listener.wait_blocking(until), WakeReason::Deadline);
}

#[test]
fn deadline_ends_a_wait_on_nothing_and_not_early() {
    let fabric: Fabric<&'static str> = Fabric::new();
    let start = Instant::now();
    let until = start + Duration::from_millis(40);
    assert_eq!(
        fabric.listen(&"idle").wait_blocking(until),
        WakeReason::Deadline
    );
    assert!(
        Instant::now() >= until,
        "the wait ended before its deadline"
    );
    assert_eq!(fabric.stats().woken_deadline, 1);
}

#[test]
fn no_lost_wakeups_under_a_notify_listen_race() {
    // Ping-pong through the fabric: for each round the producer publishes the round
    // number and notifies; the consumer waits for it, acknowledges and notifies back. Each
    // side's notify lands at an arbitrary point of the other side's listen/check/wait, so
    // every interleaving gets exercised. Every wait must end with the state seen (the
    // deadline is generous so the test does not depend on timing), and no fallback may
    // find work that a notification did not announce.
    const ROUNDS: u64 = 100_000;
    const PAIRS: u64 = 4;
    let fabric: Fabric<(u64, bool)> = Fabric::new();
    let per_pair = ROUNDS / PAIRS;
    let mut threads = Vec::new();
    for pair in 0..PAIRS {
        let posted = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let side = |wait_key: (u64, bool), wait_on: Arc<AtomicU64>, publish: Arc<AtomicU64>| {
            let fabric = fabric.clone();
            let producer = !wait_key.1;
            thread::spawn(move || {
                for round in 1..=per_pair {
                    let want = if producer { round - 1 } else { round };
                    let options = WaitOptions::timeout(GENEROUS).with_fallback(GENEROUS);
                    let seen = fabric.wait_until_blocking(&wait_key, options, || {
                        (wait_on.load(Ordering::SeqCst) >= want).then_some(())
                    });
                    assert!(seen.is_ok(), "pair {pair} round {round}: {seen:?}");
                    publish.store(round, Ordering::SeqCst);
                    fabric.notify_all(&(pair, !wait_key.1));
                }
            })
        };
        // The producer waits on acks (key (pair, false)) and publishes rounds; the
        // consumer waits on rounds (key (pair, true)) and publishes acks.
        threads.push(side((pair, false), acked.clone(), posted.clone()));
        threads.push(side((pair, true), posted, acked));
    }
    for t in threads {
        t.join().unwrap();
    }
    let stats = fabric.stats();
    eprintln!("race stats: {stats:?}");
    assert!(stats.woken_notified > 0);
    assert_eq!(stats.fallback_found_work, 0);
    assert_eq!(stats.live_keys, 0);
}

#[test]
fn notify_one_wakes_distinct_waiters_and_notify_all_wakes_everyone() {
    let fabric: Fabric<u8> = Fabric::new();
    let waiters = 4;
    let ready = Arc::new(Barrier::new(waiters + 1));
    let woken = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..waiters)
        .map(|_| {
            let (fabric, ready, woken) = (fabric.clone(), ready.clone(), woken.clone());
            thread::spawn(move || {
                let listener = fabric.listen(&0);
                ready.wait();
                let reason = listener.wait_blocking(deadline());
                woken.fetch_add(1, Ordering::SeqCst);
                reason
            })
        })
        .collect();
    ready.wait();
    // Two notify-ones in a row are two wakes, not one coalesced wake.
    fabric.notify_one(&0);
    fabric.notify_one(&0);
    let until = deadline();
    while woken.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < until,
            "two notify-ones did not wake two waiters"
        );
        thread::yield_now();
    }
    fabric.notify_all(&0);
    for h in handles {
        assert_eq!(h.join().unwrap(), WakeReason::Notified);
    }
    assert_eq!(woken.load(Ordering::SeqCst), waiters as u64);
}

#[test]
fn fallback_fires_and_counts_but_finds_no_work_when_nothing_changed() {
    let fabric: Fabric<u8> = Fabric::new();
    let options =
        WaitOptions::timeout(Duration::from_millis(60)).with_fallback(Duration::from_millis(10));
    let mut rechecks = 0;
    let reason = fabric.listen(&1).wait_blocking_with(options, || {
        rechecks += 1;
        false
    });
    assert_eq!(reason, WakeReason::Deadline);
    let stats = fabric.stats();
    assert!(rechecks >= 1, "the fallback never re-checked");
    assert_eq!(stats.fallback_fired, rechecks);
    assert_eq!(stats.fallback_found_work, 0);
}

#[test]
fn fallback_that_finds_unannounced_work_is_counted_as_a_lost_notification() {
    let fabric: Fabric<u8> = Fabric::new();
    let state = AtomicBool::new(false);
    let options = WaitOptions::timeout(GENEROUS).with_fallback(Duration::from_millis(5));
    let listener = fabric.listen(&1);
    // A buggy producer: changes the state and never notifies.
    state.store(true, Ordering::SeqCst);
    let reason = listener.wait_blocking_with(options, || state.load(Ordering::SeqCst));
    assert_eq!(reason, WakeReason::Fallback);
    assert_eq!(fabric.stats().fallback_found_work, 1);
}

#[test]
fn shutdown_wakes_current_waiters_and_ends_future_waits() {
    let fabric: Fabric<u8> = Fabric::new();
    let ready = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..2u8)
        .map(|key| {
            let (fabric, ready) = (fabric.clone(), ready.clone());
            thread::spawn(move || {
                let listener = fabric.listen(&key);
                ready.wait();
                listener.wait_blocking(deadline())
            })
        })
        .collect();
    ready.wait();
    fabric.shutdown();
    for h in handles {
        assert_eq!(h.join().unwrap(), WakeReason::Shutdown);
    }
    assert_eq!(
        fabric.listen(&9).wait_blocking(deadline()),
        WakeReason::Shutdown
    );
    let waited = fabric.wait_until_blocking(&9, WaitOptions::timeout(GENEROUS), || None::<()>);
    assert_eq!(waited, Err(WakeReason::Shutdown));
}

#[test]
fn keys_without_listeners_do_not_accumulate() {
    let fabric: Fabric<u64> = Fabric::new();
    for key in 0..1_000_000u64 {
        let listener = fabric.listen(&key);
        fabric.notify_all(&key);
        drop(listener);
        // Notifying a key nobody listens to stores nothing either.
        fabric.notify_one(&((key + 1) << 32));
    }
    let held: Vec<_> = (0..3u64).map(|k| fabric.listen(&k)).collect();
    let also = fabric.listen(&0);
    assert_eq!(fabric.stats().live_keys, 3);
    drop(held);
    assert_eq!(fabric.stats().live_keys, 1, "key 0 still has a listener");
    drop(also);
    let stats = fabric.stats();
    assert_eq!(stats.live_keys, 0);
    assert_eq!(stats.notifies_without_listener, 1_000_000);
}

#[test]
fn wait_until_returns_the_checked_value() {
    let fabric: Fabric<u8> = Fabric::new();
    let queue = Arc::new(parking_lot_free_queue::Queue::default());
    let consumer = {
        let (fabric, queue) = (fabric.clone(), queue.clone());
        thread::spawn(move || {
            fabric.wait_until_blocking(&3, WaitOptions::timeout(GENEROUS), || queue.pop())
        })
    };
    queue.push(42);
    fabric.notify_one(&3);
    assert_eq!(consumer.join().unwrap(), Ok(42));
}

#[test]
fn async_waits_work_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let fabric: Fabric<u8> = Fabric::new();
    runtime.block_on(async {
        // Deadline on nothing.
        let until = Instant::now() + Duration::from_millis(20);
        assert_eq!(fabric.listen(&1).wait(until).await, WakeReason::Deadline);
        assert!(Instant::now() >= until);

        // Notified from another thread while the task is parked.
        let listener = fabric.listen(&2);
        let notifier = {
            let fabric = fabric.clone();
            thread::spawn(move || fabric.notify_all(&2))
        };
        assert_eq!(listener.wait(deadline()).await, WakeReason::Notified);
        notifier.join().unwrap();

        // The check loop, fed by another task of the same runtime.
        let flag = Arc::new(AtomicBool::new(false));
        let setter = {
            let (fabric, flag) = (fabric.clone(), flag.clone());
            tokio::spawn(async move {
                flag.store(true, Ordering::SeqCst);
                fabric.notify_all(&3);
            })
        };
        let got = fabric
            .wait_until(&3, WaitOptions::timeout(GENEROUS), || {
                flag.load(Ordering::SeqCst).then_some("set")
            })
            .await;
        assert_eq!(got, Ok("set"));
        setter.await.unwrap();

        // Fallback in the async form.
        let options =
            WaitOptions::timeout(Duration::from_millis(30)).with_fallback(Duration::from_millis(5));
        let reason = fabric.listen(&4).wait_with(options, || false).await;
        assert_eq!(reason, WakeReason::Deadline);
    });
    let stats = fabric.stats();
    assert!(stats.fallback_fired >= 1);
    assert_eq!(stats.fallback_found_work, 0);
    assert_eq!(stats.live_keys, 0);
}

/// A tiny mutex-protected queue, so the test depends on nothing but std.
mod parking_lot_free_queue {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Queue(Mutex<VecDeque<u32>>);

    impl Queue {
        pub fn push(&self, v: u32) {
            self.0.lock().unwrap().push_back(v);
        }
        pub fn pop(&self) -> Option<u32> {
            self.0.lock().unwrap().pop_front()
        }
    }
}
