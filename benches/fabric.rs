//! Fabric microbenchmarks: what one notification costs, with and without a waiter.
//!
//! The wake benches are ping-pongs between two threads (each side notifies the other's
//! key and waits on its own), so one iteration is **two** notify→wake hops; divide by two
//! for one hop.

use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use notify_fabric::{Fabric, WaitOptions, WakeReason};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ping,
    Pong,
    Stop,
}

/// Waits (blocking) until `flag` reaches `want`, the fabric way.
fn wait_for(fabric: &Fabric<Key>, key: Key, check: impl FnMut() -> bool) {
    let mut check = check;
    let got = fabric.wait_until_blocking(&key, WaitOptions::timeout(TIMEOUT), || {
        check().then_some(())
    });
    assert!(got.is_ok(), "bench waiter gave up: {got:?}");
}

fn notify_to_blocking_wake(c: &mut Criterion) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let fabric: Fabric<Key> = Fabric::new();
    let ping = Arc::new(AtomicU64::new(0));
    let pong = Arc::new(AtomicU64::new(0));
    let echo = {
        let (fabric, ping, pong) = (fabric.clone(), ping.clone(), pong.clone());
        thread::spawn(move || {
            let mut seen = 0;
            loop {
                wait_for(&fabric, Key::Ping, || ping.load(Ordering::SeqCst) != seen);
                seen = ping.load(Ordering::SeqCst);
                if seen == u64::MAX {
                    return;
                }
                pong.store(seen, Ordering::SeqCst);
                fabric.notify_all(&Key::Pong);
            }
        })
    };
    let mut round = 0u64;
    c.bench_function("fabric/notify_to_blocking_wake_roundtrip", |b| {
        b.iter(|| {
            round += 1;
            ping.store(round, Ordering::SeqCst);
            fabric.notify_all(&Key::Ping);
            wait_for(&fabric, Key::Pong, || pong.load(Ordering::SeqCst) == round);
        })
    });
    ping.store(u64::MAX, Ordering::SeqCst);
    fabric.notify_all(&Key::Ping);
    echo.join().unwrap();
}

fn notify_to_async_wake(c: &mut Criterion) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let fabric: Fabric<Key> = Fabric::new();
    let ping = Arc::new(AtomicU64::new(0));
    let pong = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel();
    // The echo side is a task on a current-thread tokio runtime, as the sidecar's RPC
    // loop is.
    let echo = {
        let (fabric, ping, pong) = (fabric.clone(), ping.clone(), pong.clone());
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async move {
                ready_tx.send(()).unwrap();
                let mut seen = 0;
                loop {
                    let options = WaitOptions::timeout(TIMEOUT);
                    let got = fabric
                        .wait_until(&Key::Ping, options, || {
                            let now = ping.load(Ordering::SeqCst);
                            (now != seen).then_some(now)
                        })
                        .await;
                    seen = got.expect("async echo gave up");
                    if seen == u64::MAX {
                        return;
                    }
                    pong.store(seen, Ordering::SeqCst);
                    fabric.notify_all(&Key::Pong);
                }
            })
        })
    };
    ready_rx.recv().unwrap();
    let mut round = 0u64;
    c.bench_function("fabric/notify_to_async_wake_roundtrip", |b| {
        b.iter(|| {
            round += 1;
            ping.store(round, Ordering::SeqCst);
            fabric.notify_all(&Key::Ping);
            wait_for(&fabric, Key::Pong, || pong.load(Ordering::SeqCst) == round);
        })
    });
    ping.store(u64::MAX, Ordering::SeqCst);
    fabric.notify_all(&Key::Ping);
    echo.join().unwrap();
}

fn notify_without_waiter(c: &mut Criterion) {
    let fabric: Fabric<Key> = Fabric::new();
    c.bench_function("fabric/notify_all_no_listener", |b| {
        b.iter(|| black_box(fabric.notify_all(black_box(&Key::Stop))))
    });
    // A listener that is not parked: the notify bumps the epoch and finds nobody waiting.
    let listener = fabric.listen(&Key::Stop);
    c.bench_function("fabric/notify_all_listener_not_parked", |b| {
        b.iter(|| black_box(fabric.notify_all(black_box(&Key::Stop))))
    });
    assert_eq!(listener.wait_blocking(Instant::now()), WakeReason::Notified);
}

criterion_group!(
    benches,
    notify_to_blocking_wake,
    notify_to_async_wake,
    notify_without_waiter
);
criterion_main!(benches);
