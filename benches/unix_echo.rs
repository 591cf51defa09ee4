//! In-VM Unix echo round trip, 64 B: a guest pair over the in-process transport in push
//! mode, next to the same program on native Unix sockets, in one run.
//!
//! Each lane is a client that writes 64 bytes and waits for them to come back from an
//! echo server on another thread. The guest lane's client and server are both guests of
//! one VM (`GuestLoop` on their own threads, as isolates on an embedder's threads), so each
//! round trip crosses guest↔sidecar four times. Lanes are interleaved in blocks so machine
//! drift hits both alike. Prints p50/p99 (hdrhistogram) and the ratio.
//!
//! `cargo bench --bench unix_echo` (add `-- --quick` for a short run).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::thread;
use std::time::Instant;

use guest_client::{Client, GuestLoop, InProcTransport, UnixListener, UnixStream};
use hdrhistogram::Histogram;
use sidecar::{Sidecar, SidecarConfig};

const MESSAGE: usize = 64;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000, 3).unwrap()
}

fn guest(sidecar: &Sidecar) -> Client {
    let end = sidecar.connect_in_process().unwrap();
    Client::connect(
        InProcTransport::new(end),
        Client::hello_params("bench", "bench"),
    )
    .unwrap()
}

/// The guest lane: returns a function that runs `n` round trips and records them.
fn guest_lane(sidecar: &Sidecar) -> impl FnMut(usize, &mut Histogram<u64>) {
    let server = guest(sidecar);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let lp = GuestLoop::new(server).unwrap();
        lp.block_on(async {
            let listener = UnixListener::bind(&lp, "/bench/echo.sock").unwrap();
            ready_tx.send(()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                stream.write_all(&buf[..n]).await.unwrap();
            }
        });
    });
    ready_rx.recv().unwrap();
    let lp = GuestLoop::new(guest(sidecar)).unwrap();
    let stream = lp.block_on(async { UnixStream::connect(&lp, "/bench/echo.sock").await.unwrap() });
    let message = [7u8; MESSAGE];
    move |n, hist| {
        lp.block_on(async {
            let mut buf = [0u8; MESSAGE];
            for _ in 0..n {
                let start = Instant::now();
                stream.write_all(&message).await.unwrap();
                stream.read_exact(&mut buf).await.unwrap();
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    }
}

/// The host lane: the same echo on native Unix sockets, blocking threads.
fn host_lane() -> impl FnMut(usize, &mut Histogram<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => stream.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    let mut stream = StdUnixStream::connect(&path).unwrap();
    let message = [7u8; MESSAGE];
    move |n, hist| {
        let _keep = &dir;
        let mut buf = [0u8; MESSAGE];
        for _ in 0..n {
            let start = Instant::now();
            stream.write_all(&message).unwrap();
            stream.read_exact(&mut buf).unwrap();
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (blocks, per_block) = if quick { (4, 250) } else { (20, 1000) };
    let sidecar = Sidecar::start(SidecarConfig::default().with_vm("bench", "bench")).unwrap();
    let mut host = host_lane();
    let mut push = guest_lane(&sidecar);
    // Warm up both lanes.
    host(200, &mut histogram());
    push(200, &mut histogram());
    let (mut host_hist, mut push_hist) = (histogram(), histogram());
    let started = Instant::now();
    for _ in 0..blocks {
        host(per_block, &mut host_hist);
        push(per_block, &mut push_hist);
    }
    let stats = sidecar.stats().unwrap();
    println!(
        "unix_echo_small (64 B round trip), {} samples per lane, {:.1} s",
        blocks * per_block,
        started.elapsed().as_secs_f64()
    );
    println!("{:<12} {:>10} {:>10}", "lane", "p50 µs", "p99 µs");
    for (lane, hist) in [("host", &host_hist), ("guest-push", &push_hist)] {
        println!(
            "{:<12} {:>10.1} {:>10.1}",
            lane,
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99))
        );
    }
    let ratio = push_hist.value_at_quantile(0.5) as f64 / host_hist.value_at_quantile(0.5) as f64;
    println!(
        "guest-push / host p50: {ratio:.1}x   (timer-origin wakes: {}, fallback found work: {})",
        stats["timer_origin_wakes"], stats["fallback_found_work"]
    );
}
