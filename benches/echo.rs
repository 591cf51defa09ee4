//! Echo round trips, 64 B, three lanes in one run: `host` (native sockets, no sidecar),
//! `guest-poll` (the old way: the guest loop re-polls with `wait_ms = 0` on a 4 ms
//! timer) and `guest-push` (events pushed). Rows: `unix_echo_small` (in-VM Unix stream)
//! and `udp_echo_small` (in-VM UDP).
//!
//! In the guest lanes the client and the echo server are both guests of one VM, each a
//! `GuestLoop` on its own thread over the in-process transport (as isolates on an
//! embedder's threads): a round trip crosses guest↔sidecar four times. Lanes are
//! interleaved in blocks so machine drift hits all alike. Percentiles from hdrhistogram.
//!
//! `cargo bench --bench echo` (add `-- --quick` for a short run). The differential bench
//! (scripts/benchmarks) will supersede this with every row of DESIGN.md.

use std::future::Future;
use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use guest_client::{
    protocol::Address, Client, GuestLoop, InProcTransport, LoopHandle, UdpSocket, UnixListener,
    UnixStream,
};
use hdrhistogram::Histogram;
use sidecar::{Sidecar, SidecarConfig};

const MESSAGE: usize = 64;

type Lane = Box<dyn FnMut(usize, &mut Histogram<u64>)>;

/// A lane's name, its round-trip runner, and its samples per block.
type NamedLane = (&'static str, Lane, usize);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn hello(poll: bool) -> sidecar_protocol::HelloParams {
    match poll {
        true => Client::hello_params_poll("bench", "bench"),
        false => Client::hello_params("bench", "bench"),
    }
}

fn guest(sidecar: &Sidecar, poll: bool) -> GuestLoop {
    let end = sidecar.connect_in_process().unwrap();
    GuestLoop::new(Client::connect(InProcTransport::new(end), hello(poll)).unwrap()).unwrap()
}

/// Runs `serve` as a guest on its own thread (its loop is built there: a loop is
/// single-threaded); returns once it said it is ready.
fn spawn_guest<F, Fut>(sidecar: &Sidecar, poll: bool, serve: F)
where
    F: FnOnce(LoopHandle, std::sync::mpsc::Sender<()>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let end = sidecar.connect_in_process().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let client = Client::connect(InProcTransport::new(end), hello(poll)).unwrap();
        let lp = GuestLoop::new(client).unwrap();
        let future = serve(lp.handle(), ready_tx);
        lp.block_on(future);
    });
    ready_rx.recv().unwrap();
}

fn unix_guest_lane(sidecar: &Sidecar, poll: bool, path: &'static str) -> Lane {
    spawn_guest(sidecar, poll, move |lp, ready| async move {
        let listener = UnixListener::bind(&lp, path).unwrap();
        ready.send(()).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => stream.write_all(&buf[..n]).await.unwrap(),
            }
        }
    });
    let lp = guest(sidecar, poll);
    let stream = lp.block_on(async { UnixStream::connect(&lp, path).await.unwrap() });
    let message = [7u8; MESSAGE];
    Box::new(move |n, hist| {
        lp.block_on(async {
            let mut buf = [0u8; MESSAGE];
            for _ in 0..n {
                let start = Instant::now();
                stream.write_all(&message).await.unwrap();
                stream.read_exact(&mut buf).await.unwrap();
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    })
}

fn udp_guest_lane(sidecar: &Sidecar, poll: bool, port: u16) -> Lane {
    spawn_guest(sidecar, poll, move |lp, ready| async move {
        let socket = UdpSocket::bind(&lp, "127.0.0.1", port).unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Address::Inet(from) = from else { return };
            socket
                .send_to(&buf[..n], &from.ip().to_string(), from.port())
                .await
                .unwrap();
        }
    });
    let lp = guest(sidecar, poll);
    let socket = UdpSocket::bind(&lp, "127.0.0.1", 0).unwrap();
    socket.connect("127.0.0.1", port).unwrap();
    let message = [7u8; MESSAGE];
    Box::new(move |n, hist| {
        lp.block_on(async {
            let mut buf = [0u8; 2048];
            for _ in 0..n {
                let start = Instant::now();
                socket.send(&message).await.unwrap();
                let got = socket.recv(&mut buf).await.unwrap();
                assert_eq!(got, MESSAGE);
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    })
}

fn unix_host_lane() -> Lane {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            stream.write_all(&buf[..n]).unwrap();
        }
    });
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let message = [7u8; MESSAGE];
    Box::new(move |n, hist| {
        let _keep = &dir;
        let mut buf = [0u8; MESSAGE];
        for _ in 0..n {
            let start = Instant::now();
            stream.write_all(&message).unwrap();
            stream.read_exact(&mut buf).unwrap();
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
    })
}

fn udp_host_lane() -> Lane {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&buf[..n], from);
        }
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let message = [7u8; MESSAGE];
    Box::new(move |n, hist| {
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let start = Instant::now();
            client.send(&message).unwrap();
            assert_eq!(client.recv(&mut buf).unwrap(), MESSAGE);
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
    })
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Samples per block: the poll lane pays a timer tick per event, so it gets fewer.
    let (blocks, fast, slow) = if quick { (3, 200, 10) } else { (10, 1000, 40) };
    let sidecar = Sidecar::start(SidecarConfig::default().with_vm("bench", "bench")).unwrap();
    let rows: Vec<(&str, Vec<NamedLane>)> = vec![
        (
            "unix_echo_small",
            vec![
                ("host", unix_host_lane(), fast),
                (
                    "guest-poll",
                    unix_guest_lane(&sidecar, true, "/bench/poll.sock"),
                    slow,
                ),
                (
                    "guest-push",
                    unix_guest_lane(&sidecar, false, "/bench/push.sock"),
                    fast,
                ),
            ],
        ),
        (
            "udp_echo_small",
            vec![
                ("host", udp_host_lane(), fast),
                ("guest-poll", udp_guest_lane(&sidecar, true, 7001), slow),
                ("guest-push", udp_guest_lane(&sidecar, false, 7002), fast),
            ],
        ),
    ];
    println!(
        "{:<16} {:<11} {:>8} {:>10} {:>10} {:>9} {:>12}",
        "row", "lane", "samples", "p50 µs", "p99 µs", "tax×host", "push speedup"
    );
    for (row, mut lanes) in rows {
        for (_, lane, _) in lanes.iter_mut() {
            lane(5, &mut histogram()); // warm up
        }
        let mut hists: Vec<Histogram<u64>> = lanes.iter().map(|_| histogram()).collect();
        for _ in 0..blocks {
            for ((_, lane, per_block), hist) in lanes.iter_mut().zip(hists.iter_mut()) {
                lane(*per_block, hist);
            }
        }
        let p50 = |i: usize| hists[i].value_at_quantile(0.5) as f64;
        for (i, (lane, _, _)) in lanes.iter().enumerate() {
            let speedup = match *lane {
                "guest-push" => format!("{:.1}x", p50(1) / p50(2)),
                _ => String::new(),
            };
            println!(
                "{:<16} {:<11} {:>8} {:>10.1} {:>10.1} {:>8.1}x {:>12}",
                row,
                lane,
                hists[i].len(),
                us(hists[i].value_at_quantile(0.5)),
                us(hists[i].value_at_quantile(0.99)),
                p50(i) / p50(0),
                speedup,
            );
        }
    }
    let stats = sidecar.stats().unwrap();
    println!(
        "sidecar: timer-origin wakes {} (poll lanes' parked waits only; the guest-poll loop's own ticks are guest-side), fallback found work {}",
        stats["timer_origin_wakes"], stats["fallback_found_work"]
    );
}
