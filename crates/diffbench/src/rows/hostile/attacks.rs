//! The attacks of `hostile_p99`, one per class of resource a tenant can make the sidecar
//! hold. Each runs on threads of its own: [`Attack::start`] returns once the attack is
//! established (its connections held, its flood flowing), it keeps going while the
//! bystander's echoes are measured, and [`Running::stop`] ends it (every thread joined)
//! and says what it did, in a line for the JSON.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcp};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use guest_client::{GuestLoop, TcpListener, TcpStream, UdpSocket};
use sidecar_protocol::{LookupParams, StatsParams};

use super::process::PUBLISHED_PORT;
use super::raw::{prefix, RawSession};
use crate::env::{Connector, NOISY_VM};

/// How long an attack may take to establish itself or to end.
const DEADLINE: Duration = Duration::from_secs(30);
const HOST: &str = "127.0.0.1";
/// How long after a watchdog stopped an attack the bystander may still take before the
/// sidecar is killed.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The attack classes, in the order the row runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Host clients hold more connections to a published port than the sidecar has fds.
    FdExhaustion,
    /// A guest floods calls and never reads a reply; another's in-VM peer never reads.
    NonReading,
    /// Connections that never say hello, and ones that announce a 16 MiB frame first.
    PreHello,
    /// Attached sessions that send 16 MiB JSON headers.
    BigHeaders,
    /// Datagrams between two guests of one VM, as fast as they go.
    UdpFlood,
    /// Hundreds of lookups of guest-chosen names in flight at once.
    DnsStall,
}

pub const ALL: [Attack; 6] = [
    Attack::FdExhaustion,
    Attack::NonReading,
    Attack::PreHello,
    Attack::BigHeaders,
    Attack::UdpFlood,
    Attack::DnsStall,
];

/// What an attack needs to reach the sidecar.
#[derive(Clone)]
pub struct Target {
    pub connector: Connector,
    pub socket: PathBuf,
    pub published: u16,
    pub quick: bool,
    /// The sidecar's process.
    pub pid: u32,
}

type Body = Box<dyn FnOnce(&Target, &Flag, &mpsc::Sender<()>) -> Result<String, String> + Send>;

/// The stop signal an attack's threads watch.
#[derive(Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// An attack in progress.
pub struct Running {
    stop: Flag,
    thread: Option<JoinHandle<Result<String, String>>>,
}

impl Attack {
    /// The lane's name.
    pub fn name(self) -> &'static str {
        match self {
            Attack::FdExhaustion => "fd_exhaustion",
            Attack::NonReading => "non_reading",
            Attack::PreHello => "pre_hello",
            Attack::BigHeaders => "big_headers",
            Attack::UdpFlood => "udp_flood",
            Attack::DnsStall => "dns_stall",
        }
    }

    /// Starts the attack; returns once it is established.
    pub fn start(self, target: &Target) -> Result<Running, String> {
        let body: Body = match self {
            Attack::FdExhaustion => Box::new(fd_exhaustion),
            Attack::NonReading => Box::new(non_reading),
            Attack::PreHello => Box::new(pre_hello),
            Attack::BigHeaders => Box::new(big_headers),
            Attack::UdpFlood => Box::new(udp_flood),
            Attack::DnsStall => Box::new(dns_stall),
        };
        let (ready_tx, ready) = mpsc::channel();
        let stop = Flag::default();
        let (target, flag) = (target.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name(format!("attack-{}", self.name()))
            .spawn(move || body(&target, &flag, &ready_tx))
            .map_err(|e| e.to_string())?;
        let mut running = Running {
            stop,
            thread: Some(thread),
        };
        match ready.recv_timeout(DEADLINE) {
            Ok(()) => Ok(running),
            Err(_) => Err(running
                .end()
                .err()
                .unwrap_or_else(|| format!("not established within {DEADLINE:?}"))),
        }
    }
}

impl Running {
    /// Stops the attack by itself if the bystander's echoes are not done within `limit`
    /// (an attack the sidecar does not withstand would otherwise hang the run), and kills
    /// the sidecar (`pid`) if they are still not done `KILL_GRACE` (10 s) after that (a sidecar
    /// that never recovers): [`Watchdog::done`] says whether it had to step in.
    pub fn watchdog(&self, limit: Duration, pid: u32) -> Watchdog {
        let (done, wait) = mpsc::channel::<()>();
        let stop = self.stop.clone();
        let timed_out = move |d| matches!(wait.recv_timeout(d), Err(RecvTimeoutError::Timeout));
        let thread = thread::spawn(move || {
            if !timed_out(limit) {
                return false;
            }
            stop.0.store(true, Ordering::Relaxed);
            if timed_out(KILL_GRACE) {
                // SAFETY: a signal to the child process the row started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            true
        });
        Watchdog { done, thread }
    }

    /// Ends the attack; what it did, or why it failed.
    pub fn stop(mut self) -> Result<String, String> {
        self.end()
    }

    fn end(&mut self) -> Result<String, String> {
        self.stop.0.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Err("ended twice".into());
        };
        let deadline = Instant::now() + DEADLINE;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(format!("did not end within {DEADLINE:?}"));
            }
            thread::sleep(Duration::from_millis(5));
        }
        thread.join().map_err(|_| "panicked".to_owned())?
    }
}

/// See [`Running::watchdog`].
pub struct Watchdog {
    done: mpsc::Sender<()>,
    thread: JoinHandle<bool>,
}

impl Watchdog {
    /// The echoes are done: whether the watchdog had stopped the attack first.
    pub fn done(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(true)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.end();
        }
    }
}

/// Waits until the fd count of `pid` is the same in three samples 100 ms apart (at
/// most 10 s; at once where `/proc` is absent).
pub fn settle_fds(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut same) = (super::process::probe::fds(pid), 0);
    while last.is_some() && same < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        let now = super::process::probe::fds(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
}

/// Sleeps in small steps until `stop` is raised (the attack holds what it opened).
fn hold(stop: &Flag) {
    while !stop.raised() {
        thread::sleep(Duration::from_millis(5));
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A guest of the attacker's VM whose loop is never driven: it holds what it bound, and
/// reads nothing (no accept, no credit, no event).
fn frozen_guest(target: &Target) -> Result<GuestLoop, String> {
    GuestLoop::new(target.connector.client_in(NOISY_VM, false)).map_err(text)
}

fn fd_exhaustion(target: &Target, stop: &Flag, ready: &mpsc::Sender<()>) -> Result<String, String> {
    // The published port leads to a listener whose guest never accepts: every connection
    // the sidecar takes stays pending, holding one of its fds.
    let lp = frozen_guest(target)?;
    // A deep backlog, so the sidecar keeps taking connections until its fds run out.
    let _listener = TcpListener::bind_with_backlog(&lp, "0.0.0.0", PUBLISHED_PORT, Some(65_535))
        .map_err(text)?;
    let host: SocketAddr = ([127, 0, 0, 1], target.published).into();
    let wanted = super::process::FD_LIMIT as usize + 200;
    let (mut held, mut failed) = (Vec::with_capacity(wanted), 0u32);
    for _ in 0..wanted {
        match StdTcp::connect_timeout(&host, Duration::from_millis(200)) {
            Ok(stream) => held.push(stream),
            Err(_) => failed += 1,
        }
    }
    // Established once the sidecar has taken what it will: its fd count holds still.
    settle_fds(target.pid);
    let _ = ready.send(());
    hold(stop);
    // How many the sidecar shed (closed) while they were held.
    let closed = held.iter_mut().map(closed_by_peer).filter(|c| *c).count();
    Ok(format!(
        "{} connections opened ({failed} connects failed), {closed} closed by the sidecar",
        held.len()
    ))
}

fn non_reading(target: &Target, stop: &Flag, ready: &mpsc::Sender<()>) -> Result<String, String> {
    // 1. Calls whose replies are never read, written until the sidecar stops reading.
    let mut flood = RawSession::attach(&target.socket, NOISY_VM).map_err(text)?;
    let mut calls = Vec::new();
    for _ in 0..4096 {
        let mut one = Vec::new();
        flood.encode(&StatsParams {}, &mut one).map_err(text)?;
        calls.extend_from_slice(&one);
    }
    flood
        .stream
        .set_write_timeout(Some(Duration::from_millis(20)))
        .map_err(text)?;
    let (mut written, mut at) = (0u64, 0usize);
    let mut held_back = false;
    // 2. In-VM connections to a guest that never reads, each written until it stalls.
    let sink = frozen_guest(target)?;
    let listener = TcpListener::bind(&sink, HOST, 0).map_err(text)?;
    let port = crate::rows::port_of(&listener.local_addr());
    let streams = if target.quick { 32 } else { 128 };
    let stalled = Arc::new(AtomicU64::new(0));
    // Writes completed by all the writers: once it holds still, every writer waits.
    let progress = Arc::new(AtomicU64::new(0));
    let (connector, counted) = (target.connector.clone(), Arc::clone(&stalled));
    let moved = Arc::clone(&progress);
    let writers = thread::spawn(move || -> Result<(), String> {
        let lp = GuestLoop::new(connector.client_in(NOISY_VM, false)).map_err(text)?;
        let tasks: Vec<_> = (0..streams)
            .map(|_| {
                let (counted, handle) = (Arc::clone(&counted), lp.handle());
                let moved = Arc::clone(&moved);
                lp.spawn(async move {
                    let Ok(stream) = TcpStream::connect(&handle, HOST, port).await else {
                        return;
                    };
                    let chunk = vec![0x5a; 64 * 1024];
                    let mut noted = false;
                    // Ends when the sink's session does (its peer goes away) or the VM's
                    // buffers are full (ENOBUFS).
                    loop {
                        if !noted && handle.counters().drain_waits > 0 {
                            noted = true;
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        if stream.write_all(&chunk).await.is_err() {
                            counted.fetch_add(u64::from(!noted), Ordering::Relaxed);
                            moved.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        moved.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        lp.block_on(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        Ok(())
    });
    let started = Instant::now();
    let mut announced = false;
    // Established once the writers are all stuck (not while they ramp up: that is a
    // burst, not the attack): every one noted, and their writes hold still for 150 ms.
    let (mut last_moved, mut still_since) = (u64::MAX, Instant::now());
    while !stop.raised() {
        match flood.stream.write(&calls[at..]) {
            Ok(n) => {
                written += n as u64;
                at = (at + n) % calls.len();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                held_back = true;
            }
            Err(e) => return Err(format!("the call flood's stream failed: {e}")),
        }
        let moved_now = progress.load(Ordering::Relaxed);
        if moved_now != last_moved {
            (last_moved, still_since) = (moved_now, Instant::now());
        }
        let all_stuck = stalled.load(Ordering::Relaxed) >= streams as u64
            && still_since.elapsed() >= Duration::from_millis(150);
        if !announced && ((held_back && all_stuck) || started.elapsed() > DEADLINE / 2) {
            announced = true;
            let _ = ready.send(());
        }
    }
    // Unfreezing nothing: dropping the sink's session ends its peers' writes.
    drop(listener);
    drop(sink);
    let writers = writers.join().map_err(|_| "a writer panicked".to_owned())?;
    writers?;
    Ok(format!(
        "{} KiB of calls written, their replies unread (the sidecar stopped reading them: \
         {held_back}); {streams} in-VM streams to a non-reader, {} stalled",
        written >> 10,
        stalled.load(Ordering::Relaxed)
    ))
}

fn pre_hello(target: &Target, stop: &Flag, ready: &mpsc::Sender<()>) -> Result<String, String> {
    let (silent_n, big_n) = if target.quick {
        (500, 100)
    } else {
        (1000, 200)
    };
    let mut silent = Vec::new();
    let mut refused = 0u32;
    for _ in 0..silent_n {
        match UnixStream::connect(&target.socket) {
            Ok(s) => silent.push(s),
            Err(_) => refused += 1,
        }
    }
    // Each announces a 16 MiB frame with a 16 MiB header and sends up to 4 MiB of it.
    let total = (16u32 << 20) - 4;
    let mut big = Vec::new();
    for _ in 0..big_n {
        let Ok(mut s) = UnixStream::connect(&target.socket) else {
            refused += 1;
            continue;
        };
        let _ = s.write_all(&prefix(total, total - 4));
        let _ = s.set_nonblocking(true);
        big.push((s, 8usize, false));
    }
    let junk = vec![b'x'; 64 * 1024];
    let mut announced = false;
    while !stop.raised() {
        let mut progressed = false;
        for (s, sent, closed) in big.iter_mut().filter(|b| b.1 < 4 << 20 && !b.2) {
            match s.write(&junk) {
                Ok(n) => {
                    *sent += n;
                    progressed = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *closed = true, // by the sidecar
            }
        }
        if !announced && !progressed {
            announced = true;
            let _ = ready.send(());
        }
        if !progressed {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let silent_closed = silent.iter_mut().map(closed_by_peer).filter(|c| *c).count();
    let big_closed = big.iter().filter(|b| b.2).count();
    let big_sent: usize = big.iter().map(|b| b.1).sum();
    Ok(format!(
        "{} silent connections ({silent_closed} closed by the sidecar), {} announcing 16 MiB \
         ({big_closed} closed, {} KiB sent), {refused} connects refused",
        silent.len(),
        big.len(),
        big_sent >> 10
    ))
}

/// The shortest time between two rounds of ten big headers.
const HEADER_ROUND: Duration = Duration::from_millis(100);

fn big_headers(target: &Target, stop: &Flag, ready: &mpsc::Sender<()>) -> Result<String, String> {
    // A JSON map that never closes: `{"method":"stats","id":1,"x":[1,1,1,…` (invalid).
    let total = (16u32 << 20) - 4;
    let mut frame = prefix(total, total - 4).to_vec();
    frame.extend_from_slice(br#"{"method":"stats","id":1,"x":["#);
    frame.resize(4 + total as usize, b'1');
    let (mut sent, mut refused_early) = (0u32, 0u32);
    // Ten at a time (each on a session of its own: the sidecar closes a stream that
    // announces one), a round every `HEADER_ROUND`: flat out, the attacker's own
    // reconnects and writes (each pushes a socket buffer's worth of the header before it
    // is closed) would be a CPU hog of their own (see `FLOOD_RATE`), not a header attack.
    let per_round = 10;
    let (mut announced, mut rounds, started) = (false, 0u64, Instant::now());
    while !stop.raised() {
        rounds += 1;
        pace(started, rounds, 1.0 / HEADER_ROUND.as_secs_f64());
        for _ in 0..per_round {
            let mut session = RawSession::attach(&target.socket, NOISY_VM).map_err(text)?;
            match session.stream.write_all(&frame) {
                Ok(()) => sent += 1,
                Err(_) => refused_early += 1, // closed before the whole header arrived
            }
            // The sidecar answers with an error event and closes.
            let _ = session.stream.shutdown(std::net::Shutdown::Write);
            let mut rest = Vec::new();
            let _ = session.stream.read_to_end(&mut rest);
        }
        if !announced {
            announced = true;
            let _ = ready.send(());
        }
    }
    Ok(format!(
        "{} headers of 16 MiB ({sent} sent whole, {refused_early} cut off by the sidecar)",
        sent + refused_early
    ))
}

/// The datagram flood's pace and burst. Flat out, on a 2-vCPU machine, the flooding
/// guest's thread and the RPC loop serving it take both CPUs, and the row would measure
/// the OS scheduler rather than the sidecar: two threads that do nothing but spin (no
/// sidecar involved) put the bystander's p99 at 18-20× its alone p99 there, one at 1×
/// (`docs/benchmarks.md`). At this pace, in bursts this small, a CPU stays free, as in
/// `isolation_p99` (whose flood runs at the same rate): what is left is the sidecar's own
/// share of the loop.
const FLOOD_RATE: f64 = 50_000.0;
const FLOOD_BURST: u64 = 16;

/// Sleeps until `sent` items are due at `rate` per second since `started`.
fn pace(started: Instant, sent: u64, rate: f64) {
    let due = Duration::from_secs_f64(sent as f64 / rate);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        thread::sleep(wait);
    }
}

fn udp_flood(target: &Target, stop: &Flag, ready: &mpsc::Sender<()>) -> Result<String, String> {
    let (port_tx, port_rx) = mpsc::channel();
    let connector = target.connector.clone();
    let received = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&received);
    // The receiver reads every datagram until a 1-byte one says the flood is over.
    let receiver = thread::spawn(move || -> Result<(), String> {
        let lp = GuestLoop::new(connector.client_in(NOISY_VM, false)).map_err(text)?;
        lp.block_on(async {
            let socket = UdpSocket::bind(&lp, HOST, 0).map_err(text)?;
            let _ = port_tx.send(crate::rows::port_of(&socket.local_addr().map_err(text)?));
            let mut buf = vec![0u8; 2048];
            loop {
                let (n, _) = socket.recv_from(&mut buf).await.map_err(text)?;
                if n == 1 {
                    return Ok(());
                }
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let port = port_rx
        .recv_timeout(DEADLINE)
        .map_err(|_| "the flood's receiver did not start".to_owned())?;
    let lp = GuestLoop::new(target.connector.client_in(NOISY_VM, false)).map_err(text)?;
    let sent = lp.block_on(async {
        let socket = UdpSocket::bind(&lp, HOST, 0).map_err(text)?;
        let payload = [0x33u8; 64];
        let (mut sent, started) = (0u64, Instant::now());
        while !stop.raised() {
            for _ in 0..FLOOD_BURST {
                socket.send_to(&payload, HOST, port).await.map_err(text)?;
            }
            sent += FLOOD_BURST;
            if sent == FLOOD_BURST * 64 {
                let _ = ready.send(());
            }
            pace(started, sent, FLOOD_RATE);
        }
        // The end marker, until the receiver has it (the flood may have filled its queue).
        let deadline = Instant::now() + DEADLINE;
        while !receiver.is_finished() && Instant::now() < deadline {
            socket.send_to(&[0], HOST, port).await.map_err(text)?;
            let _ = lp.call(&StatsParams {});
        }
        Ok::<u64, String>(sent)
    })?;
    receiver
        .join()
        .map_err(|_| "the receiver panicked".to_owned())??;
    Ok(format!(
        "{sent} datagrams of 64 B sent, {} received",
        received.load(Ordering::Relaxed)
    ))
}

fn dns_stall(target: &Target, stop: &Flag, ready: &mpsc::Sender<()>) -> Result<String, String> {
    let in_flight = if target.quick { 300 } else { 600 };
    let mut session = RawSession::attach(&target.socket, NOISY_VM).map_err(text)?;
    session
        .stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(text)?;
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    let (mut asked, mut answered, mut round) = (0u64, 0u64, 0u64);
    while !stop.raised() {
        for i in 0..in_flight {
            let host = format!("r{round}-{i}.exfil-probe.example");
            let params = LookupParams {
                host,
                family: Default::default(),
            };
            session.send(&params).map_err(text)?;
            asked += 1;
        }
        if round == 0 {
            let _ = ready.send(());
        }
        round += 1;
        let mut pending = in_flight;
        while pending > 0 && !stop.raised() {
            match session.read_header() {
                Ok(Some(header)) => {
                    pending -= 1;
                    answered += 1;
                    *outcomes.entry(outcome(&header)).or_default() += 1;
                }
                Ok(None) => return Err("the sidecar closed the lookup session".into()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("lookup replies: {e}")),
            }
        }
    }
    let outcomes: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    Ok(format!(
        "{asked} lookups of guest-chosen names asked, {answered} answered ({})",
        outcomes.join(", ")
    ))
}

/// Whether the sidecar has closed this connection (what it sent before is read away).
fn closed_by_peer(stream: &mut impl ReadNonblocking) -> bool {
    if stream.nonblocking().is_err() {
        return true;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// A stream that can be switched to non-blocking reads.
trait ReadNonblocking: Read {
    fn nonblocking(&self) -> std::io::Result<()>;
}

impl ReadNonblocking for UnixStream {
    fn nonblocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(true)
    }
}

impl ReadNonblocking for StdTcp {
    fn nonblocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(true)
    }
}

/// `ok`, or the error code of a reply's header.
fn outcome(header: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(header).unwrap_or_default();
    match json.get("error") {
        Some(e) => e["code"].as_str().unwrap_or("error").to_owned(),
        None => "ok".to_owned(),
    }
}
