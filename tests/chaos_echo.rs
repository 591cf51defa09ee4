//! Many echo streams at once through the Rust guest client, with chaos: random write
//! sizes, slow readers, credit stalls (`pause()` / `resume()` around a run of loop turns
//! with no read), slow echoers, and native peers that reset mid-stream (`SO_LINGER` 0).
//!
//! Half the streams echo inside the VM (a guest server on its own loop), half go out
//! through host sockets to a native echo server on 127.0.0.1 (allowed by the policy).
//! Client loops run over the in-process transport and the Unix socket. The contract
//! (DESIGN.md, "Flow control: nothing lost, nothing unbounded"; PROTOCOL.md §11):
//!
//! - a stream that completes is byte-exact (length and FNV-1a of what was sent and what
//!   came back);
//! - a stream that fails fails with a typed error (`ECONNRESET`, `EPIPE`,
//!   `ECONNABORTED`, with the matching `io::ErrorKind`), and only if its peer reset it;
//! - never a silent truncation: a reader that sees a clean EOF before every byte fails
//!   the test, whatever its writer saw.
//!
//! `cargo test --test chaos_echo -- --ignored` runs a bigger variant.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener as NativeListener, TcpStream as NativeStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use guest_client::{
    connect_unix, error_code, Client, GuestLoop, InProcTransport, LoopHandle, TcpListener,
    TcpStream,
};
use sidecar::{AllowRule, Sidecar, SidecarConfig};

/// How long a run may take before it counts as hung (the small run, in a debug build,
/// takes a few seconds).
const HUNG: Duration = Duration::from_secs(60);

/// xorshift64*: small, seeded, good enough to pick sizes and make bytes.
struct Rng(u64);

impl Rng {
    /// Seeds through a splitmix64 step, so that nearby seeds give unrelated streams.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash = (*hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

#[derive(Debug, Clone, Copy)]
struct Plan {
    index: u32,
    /// Through the native echo server (else the in-VM one).
    host: bool,
    total: usize,
    max_write: usize,
    read_buf: usize,
    stalls: bool,
    slow_echo: bool,
    /// The native peer resets once it has echoed this many bytes (host streams only).
    reset_after: Option<u64>,
    seed: u64,
}

fn plans(count: u32, max_total: usize, seed: u64) -> Vec<Plan> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|index| {
            let host = index % 2 == 1;
            let total = 16 * 1024 + rng.below(max_total as u64) as usize;
            let reset_after =
                (host && rng.below(4) == 0).then(|| total as u64 / 8 + rng.below(total as u64 / 3));
            Plan {
                index,
                host,
                total,
                max_write: [16, 1024, 64 * 1024, 300 * 1024][rng.below(4) as usize],
                read_buf: [1 + rng.below(512) as usize, 64 * 1024][rng.below(3).min(1) as usize],
                stalls: rng.below(2) == 0,
                slow_echo: rng.below(4) == 0,
                reset_after,
                seed: rng.next(),
            }
        })
        .collect()
}

/// What a stream sends first (not echoed): a seed for the echoer's read sizes, whose
/// low bit asks for a slow echo, then after how many echoed bytes to reset.
fn header(plan: &Plan) -> [u8; 16] {
    let seed = plan.seed & !1 | u64::from(plan.slow_echo);
    let reset = plan.reset_after.unwrap_or(u64::MAX);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&seed.to_be_bytes());
    out[8..].copy_from_slice(&reset.to_be_bytes());
    out
}

/// An echoer's read sizes: small and random if its header asked for a slow echo.
fn echo_reads(h: &[u8; 16]) -> impl FnMut() -> usize {
    let seed = u64::from_be_bytes(h[..8].try_into().unwrap());
    let mut rng = Rng::new(seed);
    move || match seed & 1 {
        1 => 1 + rng.below(512) as usize,
        _ => 64 * 1024,
    }
}

/// The native echo server: a thread per connection, echoing until EOF (then FIN), or
/// resetting (`SO_LINGER` 0, then close) once the header's count of bytes is echoed.
/// Counts the resets done and the connections that met an error.
fn native_echo() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = NativeListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (resets, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counters = (Arc::clone(&resets), Arc::clone(&errors));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let (resets, errors) = (Arc::clone(&resets), Arc::clone(&errors));
            thread::spawn(move || {
                if echo_native(stream.unwrap(), &resets).is_err() {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (port, counters.0, counters.1)
}

fn echo_native(mut stream: NativeStream, resets: &AtomicUsize) -> io::Result<()> {
    let mut h = [0u8; 16];
    stream.read_exact(&mut h)?;
    let reset_after = u64::from_be_bytes(h[8..].try_into().unwrap());
    let (mut next_read, mut echoed, mut buf) = (echo_reads(&h), 0, vec![0u8; 64 * 1024]);
    loop {
        let n = stream.read(&mut buf[..next_read()])?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        stream.write_all(&buf[..n])?;
        echoed += n as u64;
        if echoed >= reset_after {
            linger_zero(&stream);
            resets.fetch_add(1, Ordering::SeqCst);
            return Ok(()); // dropped: RST
        }
    }
}

/// Yields to the loop once (other tasks and pending events run).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| match std::mem::replace(&mut yielded, true) {
        true => Poll::Ready(()),
        false => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Runs `body` on a guest loop on a thread of its own; its output comes on the channel.
fn on_guest_thread<T, F>(
    client: Client,
    body: impl FnOnce(LoopHandle) -> F + Send + 'static,
) -> mpsc::Receiver<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let lp = GuestLoop::new(client).unwrap();
        let _ = tx.send(lp.block_on(body(lp.handle())));
    });
    rx
}

/// The in-VM echo server: a guest on its own loop, echoing `connections` streams.
/// Reports how many of its echoes met an error (none should: nobody resets in-VM).
fn vm_echo(client: Client, connections: usize) -> (u16, mpsc::Receiver<usize>) {
    let (port_tx, port_rx) = mpsc::channel();
    let done = on_guest_thread(client, move |lp| async move {
        let listener = TcpListener::bind(&lp, "127.0.0.1", 0).unwrap();
        let guest_client::protocol::Address::Inet(local) = listener.local_addr() else {
            panic!("not an inet listener");
        };
        port_tx.send(local.port()).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            tasks.push(lp.spawn(echo_in_vm(listener.accept().await.unwrap().0)));
        }
        let mut errors = 0;
        for task in tasks {
            errors += usize::from(task.await.is_err());
        }
        errors
    });
    (port_rx.recv().unwrap(), done)
}

async fn echo_in_vm(stream: TcpStream) -> io::Result<()> {
    let mut h = [0u8; 16];
    stream.read_exact(&mut h).await?;
    let (mut next_read, mut buf) = (echo_reads(&h), vec![0u8; 64 * 1024]);
    loop {
        match stream.read(&mut buf[..next_read()]).await? {
            0 => return stream.shutdown().await,
            n => stream.write_all(&buf[..n]).await?,
        }
    }
}

/// A stream's end: `Ok(None)` completed exactly, `Ok(Some(how))` failed with a typed
/// error, `Err(why)` anything else (a test failure).
type Outcome = Result<Option<String>, String>;

/// A typed failure: a code that says what happened to the connection, and its kind.
fn typed(by: &str, e: &io::Error, got: usize) -> Outcome {
    let code = error_code(e).as_str().to_owned();
    let how = format!("{by}: {code} ({:?}) after {got} bytes", e.kind());
    match (code.as_str(), e.kind()) {
        ("ECONNRESET", io::ErrorKind::ConnectionReset)
        | ("EPIPE", io::ErrorKind::BrokenPipe)
        | ("ECONNABORTED", io::ErrorKind::ConnectionAborted) => Ok(Some(how)),
        _ => Err(format!("untyped error, {how}: {e}")),
    }
}

async fn write_side(stream: Rc<TcpStream>, plan: Plan) -> io::Result<(usize, u64)> {
    let mut rng = Rng::new(plan.seed);
    stream.write_all(&header(&plan)).await?;
    let (mut sent, mut sum) = (0, FNV_START);
    while sent < plan.total {
        let n = (1 + rng.below(plan.max_write as u64) as usize).min(plan.total - sent);
        let chunk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        fnv(&mut sum, &chunk);
        stream.write_all(&chunk).await?;
        sent += n;
    }
    stream.shutdown().await?;
    Ok((sent, sum))
}

async fn read_side(stream: &TcpStream, plan: Plan) -> Result<(usize, u64), (usize, io::Error)> {
    let mut rng = Rng::new(!plan.seed);
    let mut buf = vec![0u8; plan.read_buf];
    let (mut got, mut sum) = (0, FNV_START);
    loop {
        if plan.stalls && rng.below(8) == 0 {
            // A credit stall: no grants, no reads, for a run of loop turns.
            stream.pause().map_err(|e| (got, e))?;
            for _ in 0..rng.below(3000) {
                yield_now().await;
            }
            stream.resume().map_err(|e| (got, e))?;
        }
        let want = 1 + rng.below(plan.read_buf as u64) as usize;
        match stream.read(&mut buf[..want]).await {
            Ok(0) => return Ok((got, sum)),
            Ok(n) => {
                fnv(&mut sum, &buf[..n]);
                got += n;
            }
            Err(e) => return Err((got, e)),
        }
    }
}

async fn run_stream(lp: LoopHandle, plan: Plan, port: u16) -> Outcome {
    let connected = TcpStream::connect(&lp, "127.0.0.1", port).await;
    let stream = Rc::new(connected.map_err(|e| format!("connect: {e}"))?);
    let writer = lp.spawn(write_side(Rc::clone(&stream), plan));
    let read = read_side(&stream, plan).await;
    let (total, written) = (plan.total, writer.await);
    match (read, written) {
        (Err((got, e)), _) => typed("read", &e, got),
        (Ok((got, _)), _) if got != total => Err(format!("clean EOF after {got} of {total}")),
        (Ok((got, _)), Err(e)) => typed("write", &e, got),
        (Ok((_, back)), Ok((_, sent))) if back != sent => Err("bytes differ".into()),
        (Ok(_), Ok(_)) => Ok(None),
    }
}

/// A client guest on its own thread, running `plans` at once; reports each outcome.
fn client_loop(
    client: Client,
    plans: Vec<Plan>,
    ports: (u16, u16),
) -> mpsc::Receiver<Vec<(Plan, Outcome)>> {
    on_guest_thread(client, move |lp| async move {
        let tasks: Vec<_> = plans
            .iter()
            .map(|plan| {
                let port = if plan.host { ports.1 } else { ports.0 };
                lp.spawn(run_stream(lp.clone(), *plan, port))
            })
            .collect();
        let mut outcomes = Vec::new();
        for (plan, task) in plans.iter().zip(tasks) {
            outcomes.push((*plan, task.await));
        }
        outcomes
    })
}

fn chaos(streams: u32, max_total: usize, seed: u64, hung: Duration) {
    let (native, resets, native_errors) = native_echo();
    let rule: AllowRule = format!("127.0.0.1:{native}").parse().unwrap();
    let config = SidecarConfig::default().with_vm("vm", "s").with_allow(rule);
    let sidecar = Sidecar::start(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    sidecar.listen_unix(&socket).unwrap();
    let hello = || Client::hello_params("vm", "s");
    let in_process = || {
        let end = sidecar.connect_in_process().unwrap();
        Client::connect(InProcTransport::new(end), hello()).unwrap()
    };
    let all = plans(streams, max_total, seed);
    let in_vm = all.iter().filter(|p| !p.host).count();
    let (vm_port, vm_done) = vm_echo(in_process(), in_vm);
    let (first, second): (Vec<Plan>, Vec<Plan>) = all.iter().partition(|p| p.index % 4 < 2);
    let ports = (vm_port, native);
    let unix = Client::connect(connect_unix(&socket).unwrap(), hello()).unwrap();
    let first = client_loop(in_process(), first, ports);
    let loops = [first, client_loop(unix, second, ports)];

    let deadline = Instant::now() + hung;
    let mut outcomes = Vec::new();
    for done in loops {
        let left = deadline.saturating_duration_since(Instant::now());
        outcomes.extend(done.recv_timeout(left).expect("a client loop hung"));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let vm_errors = vm_done.recv_timeout(left).expect("in-VM echo hung");
    assert_eq!(vm_errors, 0, "in-VM echoes that failed");

    let mut failed = 0;
    for (plan, outcome) in &outcomes {
        match outcome {
            Ok(None) => assert!(plan.reset_after.is_none(), "{plan:?} outlived its reset"),
            Ok(Some(how)) => {
                assert!(plan.reset_after.is_some(), "{plan:?} failed: {how}");
                failed += 1;
            }
            Err(why) => panic!("{plan:?}: {why}"),
        }
    }
    let planned = all.iter().filter(|p| p.reset_after.is_some()).count();
    assert!(planned > 0, "no stream planned to reset: pick another seed");
    assert_eq!(failed, planned, "every reset stream failed, typed");
    assert_eq!(resets.load(Ordering::SeqCst), planned, "native resets");
    let native_errors = native_errors.load(Ordering::SeqCst);
    assert_eq!(native_errors, 0, "native echo errors");
    let completed = outcomes.len() - failed;
    // Each completed stream's bytes went out and came back, checksummed both ways.
    let echoed: usize = outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Ok(None)))
        .map(|(plan, _)| 2 * plan.total)
        .sum();
    eprintln!(
        "{completed} streams completed byte-exact ({echoed} bytes moved, 0 lost), {failed} reset"
    );
    let stats = sidecar.stats().unwrap();
    assert_eq!(stats["fallback_found_work"], 0, "{stats}");
}

/// Sets `SO_LINGER` 0, so that closing `stream` resets the connection.
fn linger_zero(stream: &NativeStream) {
    let (l_onoff, l_linger) = (1, 0);
    let linger = libc::linger { l_onoff, l_linger };
    // SAFETY: setsockopt on a socket we own, with a valid `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Found by the chaos run: a native peer's reset that the sidecar first meets in the
/// guest's `shutdown` (its socket not being read: no credit left) made `shutdown(2)`
/// fail with `ENOTCONN`, and the guest was told `ENOTCONN` instead of `ECONNRESET`.
#[test]
fn a_reset_first_met_by_shutdown_is_still_econnreset() {
    let listener = NativeListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reset_tx, reset_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // Once the guest has its connection (a reset before would fail the connect).
        stream.read_exact(&mut [0u8; 1]).unwrap();
        stream.write_all(&[5u8; 4096]).unwrap();
        linger_zero(&stream);
        drop(stream);
        reset_tx.send(()).unwrap();
    });
    let rule: AllowRule = format!("127.0.0.1:{port}").parse().unwrap();
    let config = SidecarConfig::default().with_vm("vm", "s").with_allow(rule);
    let sidecar = Sidecar::start(config).unwrap();
    let end = sidecar.connect_in_process().unwrap();
    let mut hello = Client::hello_params("vm", "s");
    hello.credit = 1024;
    let client = Client::connect(InProcTransport::new(end), hello).unwrap();
    let rx = on_guest_thread(client, move |lp| async move {
        let stream = TcpStream::connect(&lp, "127.0.0.1", port).await.unwrap();
        stream.write_all(b"!").await.unwrap();
        // Take the 1 KiB window without granting it back: the sidecar stops reading.
        stream.pause().unwrap();
        let mut window = [0u8; 1024];
        stream.read_exact(&mut window).await.unwrap();
        reset_rx.recv_timeout(HUNG).unwrap();
        let shutdown = stream.shutdown().await.map_err(|e| error_code(&e));
        stream.resume().unwrap();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest).await;
        let read = read.map_err(|e| error_code(&e));
        (shutdown, read)
    });
    let (shutdown, read) = rx.recv_timeout(HUNG).expect("the guest hung");
    let reset = guest_client::protocol::ErrorCode::Econnreset;
    let shut_ok = shutdown.as_ref().err().is_none_or(|c| *c == reset);
    assert!(shut_ok, "shutdown: {shutdown:?}");
    assert_eq!(read.map(|_| "a clean end"), Err(reset));
}

#[test]
fn concurrent_echo_streams_with_chaos_are_exact_or_fail_typed() {
    chaos(24, 384 * 1024, 0x00c0_ffee, HUNG);
}

#[test]
#[ignore = "bigger variant (about a minute per seed in a debug build): -- --ignored"]
fn many_more_and_bigger_echo_streams_with_chaos() {
    for seed in 1..=3 {
        chaos(96, 1 << 20, seed, 10 * HUNG);
    }
}
