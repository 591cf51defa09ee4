//! `isolation_p99`: does a guest that stops reading, and a neighbour that floods, delay
//! another VM? The measured program is the run VM's 64 B in-VM stream echo (two guests,
//! `guest_endpoints` = 2), and the figure is its p99:
//! - `guest-push`: alone;
//! - `guest-push-noisy`: while, in another VM ([`NOISY_VM`]), one guest floods a stream
//!   to a peer that has stopped reading (its credit runs out, the writer is held back by
//!   `need_drain`) and another floods datagrams to that same stopped peer (its session's
//!   event queue fills to the limit, then they are dropped and counted).
//!
//! The sidecar serves every VM on one RPC loop and one readiness thread: pushing to a
//! stopped guest must never block the pusher, and a full queue must cost the others
//! nothing. The gate (issue 8) wants the noisy p99 within 2× of the alone p99.
//!
//! The datagram flood runs flat out until the stopped peer's queue is full (the noisy
//! VM's `udp_dropped_no_room` moves), then at `FLOOD_RATE`: flat out, the flooding
//! guest's thread and the RPC loop would each take a whole vCPU of a 2-vCPU machine, and
//! the row would measure the OS scheduler (echo p99s of milliseconds, whatever the
//! sidecar does) rather than what the stopped guest costs its neighbours.
//!
//! The lanes alternate in blocks, rotated, like every latency row, so the noise is
//! started at the beginning of each noisy block and stopped (every noise thread joined)
//! at its end: it runs exactly while the noisy lane measures, and never into the alone
//! lane or another row. A block only counts if the noise was really running: the
//! stream stalled and the peer's queue full before the first echo, the stream still
//! stalled and the flood still sending after the last one. If not, the noisy lane is
//! left out with a failure line.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use guest_client::{GuestLoop, TcpListener, TcpStream, UdpSocket};
use sidecar_protocol::StatsParams;

use super::echo::{self, Kind};
use super::{port_of, run_latency, Budget, Lane, Runner};
use crate::env::{Connector, NOISY_VM};
use crate::result::RowResult;

pub const ROW: &str = "isolation_p99";

/// Guests per round trip: the echo's client and server.
pub const GUEST_ENDPOINTS: u32 = 2;

const SIZE: usize = 64;
const HOST: &str = "127.0.0.1";
/// The flood's datagrams.
const DATAGRAM: usize = 1024;
/// Datagrams sent `noreply` per round trip of the flooder: the in-process pipe is
/// unbounded, so the flooder waits for the sidecar to take each batch (a kernel socket
/// would block the writer instead). Paced, a batch is one burst.
const BATCH: u64 = 64;
/// The flood's pace once the stopped peer's queue is full, in datagrams/s (50 MB/s);
/// `None`: as fast as the sidecar takes them (see the module docs).
const FLOOD_RATE: Option<f64> = Some(50_000.0);
/// How long starting or stopping the noise may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the noisy lane's blocks saw of the noise.
#[derive(Default)]
struct Tally {
    blocks: u32,
    datagrams: u64,
    measured: Duration,
    /// The first block whose noise was not running as it should.
    error: Option<String>,
}

/// The row; the noisy lane is left out (a failure line) if its noise failed.
pub fn measure(
    connector: &Connector,
    budget: Budget,
    failures: &mut Vec<String>,
) -> Vec<RowResult> {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let alone = echo::guest_stream(connector, false, Kind::Unix, SIZE, "isolation-alone");
    let noisy = echo::guest_stream(connector, false, Kind::Unix, SIZE, "isolation-noisy");
    let lanes = vec![
        Lane {
            name: "guest-push",
            run: alone,
            per_block: budget.fast,
        },
        Lane {
            name: "guest-push-noisy",
            run: with_noise(connector, noisy, Rc::clone(&tally)),
            per_block: budget.fast,
        },
    ];
    let mut rows = run_latency(ROW, lanes, budget, GUEST_ENDPOINTS, None);
    let mut tally = tally.borrow_mut();
    if tally.datagrams == 0 {
        // A paced burst goes out every 1.3 ms: some must fall in the measured time.
        let none = "no datagram was sent while the echoes ran".to_owned();
        tally.error.get_or_insert(none);
    }
    match &tally.error {
        Some(e) => {
            failures.push(format!("{ROW} guest-push-noisy: {e}"));
            rows.retain(|r| r.lane != "guest-push-noisy");
        }
        None => eprintln!(
            "  {ROW}: noise in {} blocks: a stalled stream, a full queue, {} datagrams of \
             {DATAGRAM} B ({:.0}/s) while measuring",
            tally.blocks,
            tally.datagrams,
            tally.datagrams as f64 / tally.measured.as_secs_f64().max(1e-9)
        ),
    }
    rows
}

/// `echo` with the noise running around each block.
fn with_noise(connector: &Connector, mut echo: Runner, tally: Rc<RefCell<Tally>>) -> Runner {
    let connector = connector.clone();
    Box::new(move |n, hist| {
        let noise = match Noise::start(&connector) {
            Ok(noise) => noise,
            Err(e) => {
                tally.borrow_mut().error.get_or_insert(e);
                return;
            }
        };
        let (sent, start) = (noise.sent(), Instant::now());
        echo(n, hist);
        let (sent, measured) = (noise.sent() - sent, start.elapsed());
        let stopped = noise.stop();
        let mut tally = tally.borrow_mut();
        match stopped {
            Ok(()) => {
                tally.blocks += 1;
                tally.datagrams += sent;
                tally.measured += measured;
            }
            Err(e) => {
                tally.error.get_or_insert(e);
            }
        }
    })
}

/// How far the noise has got, as its threads report it.
enum Step {
    /// The stopped peer's ports: its listener and its UDP socket.
    Sink(u16, u16),
    /// The stream's writer waits for a `drain` that will not come.
    Stalled,
    /// The stopped peer's event queue is full: its datagrams are being dropped.
    Flooding,
}

/// The noise of one block: three guests of [`NOISY_VM`], each on a thread of its own.
struct Noise {
    /// Unfreezes the stopped peer, which then ends (its session with it).
    wake_sink: Option<mpsc::Sender<()>>,
    /// Tells the datagram flooder to stop.
    stop_flood: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    sink: Option<JoinHandle<Result<(), String>>>,
    stream: Option<JoinHandle<Result<(), String>>>,
    flood: Option<JoinHandle<Result<(), String>>>,
}

impl Noise {
    /// Starts the three guests; returns once the stream is stalled and the flood runs.
    fn start(connector: &Connector) -> Result<Noise, String> {
        let (steps_tx, steps) = mpsc::channel::<Result<Step, String>>();
        let (wake_sink, frozen) = mpsc::channel::<()>();
        let mut noise = Noise {
            wake_sink: Some(wake_sink),
            stop_flood: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            sink: None,
            stream: None,
            flood: None,
        };
        let next = || match steps.recv_timeout(DEADLINE) {
            Ok(step) => step,
            Err(_) => Err(format!("the noise did not start within {DEADLINE:?}")),
        };
        noise.sink = Some(guest(
            connector,
            "noisy-sink",
            &steps_tx,
            move |lp, steps| {
                lp.block_on(async {
                    let listener = TcpListener::bind(lp, HOST, 0).map_err(|e| e.to_string())?;
                    let udp = UdpSocket::bind(lp, HOST, 0).map_err(|e| e.to_string())?;
                    let udp_port = port_of(&udp.local_addr().map_err(|e| e.to_string())?);
                    let _ = steps.send(Ok(Step::Sink(port_of(&listener.local_addr()), udp_port)));
                    // Stopped: this guest's thread reads nothing more of its session (no
                    // accept, no credit, no event) until the block ends.
                    let _ = frozen.recv();
                    Ok(())
                })
            },
        )?);
        let Step::Sink(tcp_port, udp_port) = next()? else {
            return Err("the stopped peer did not report its ports".into());
        };
        noise.stream = Some(guest(
            connector,
            "noisy-stream",
            &steps_tx,
            move |lp, steps| {
                lp.block_on(async {
                    let stream = TcpStream::connect(lp, HOST, tcp_port)
                        .await
                        .map_err(|e| format!("stream flood connect: {e}"))?;
                    let chunk = vec![0x5a; 64 * 1024];
                    let mut stalled = false;
                    loop {
                        if !stalled && lp.counters().drain_waits > 0 {
                            stalled = true;
                            let _ = steps.send(Ok(Step::Stalled));
                        }
                        // Once stalled, this waits for a drain; it ends when the stopped
                        // peer's session does (the only way a stalled flood may end).
                        if let Err(e) = stream.write_all(&chunk).await {
                            return match stalled {
                                true => Ok(()),
                                false => Err(format!("stream flood: {e}")),
                            };
                        }
                    }
                })
            },
        )?);
        let (stop, sent) = (Arc::clone(&noise.stop_flood), Arc::clone(&noise.sent));
        noise.flood = Some(guest(
            connector,
            "noisy-udp",
            &steps_tx,
            move |lp, steps| {
                lp.block_on(async {
                    let failed = |e: std::io::Error| format!("datagram flood: {e}");
                    let socket = UdpSocket::bind(lp, HOST, 0).map_err(failed)?;
                    let payload = [0x33u8; DATAGRAM];
                    let dropped_before = dropped(lp)?;
                    let (mut full, mut due) = (false, Instant::now());
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..BATCH {
                            socket
                                .send_to(&payload, HOST, udp_port)
                                .await
                                .map_err(failed)?;
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        // A round trip per batch (see BATCH); until the stopped peer's queue
                        // is full, one that tells whether datagrams are being dropped yet.
                        if !full {
                            full = dropped(lp)? > dropped_before;
                            if full {
                                let _ = steps.send(Ok(Step::Flooding));
                                due = Instant::now();
                            }
                            continue;
                        }
                        lp.lookup_host("localhost").map_err(failed)?;
                        if let Some(rate) = FLOOD_RATE {
                            due += Duration::from_secs_f64(BATCH as f64 / rate);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                thread::sleep(wait);
                            }
                        }
                    }
                    Ok(())
                })
            },
        )?);
        for _ in 0..2 {
            next()?;
        }
        Ok(noise)
    }

    /// Datagrams sent so far.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the noise and joins its threads; an error if it was not running as it
    /// should up to now (a flood ended early, the stream was no longer stalled).
    fn stop(mut self) -> Result<(), String> {
        let still_stalled = self.stream.as_ref().is_some_and(|t| !t.is_finished());
        let flooding = self.flood.as_ref().is_some_and(|t| !t.is_finished());
        let ended = self.shutdown();
        match (still_stalled, flooding) {
            (true, true) => ended,
            (false, _) => Err(ended
                .err()
                .unwrap_or("the stalled stream ended early".into())),
            (_, false) => Err(ended
                .err()
                .unwrap_or("the datagram flood ended early".into())),
        }
    }

    /// Ends every guest of the noise: the flood when told, the stopped peer when woken,
    /// the stream writer when its peer's session ends. Each thread is joined, or
    /// reported if it does not end in time.
    fn shutdown(&mut self) -> Result<(), String> {
        self.stop_flood.store(true, Ordering::Relaxed);
        let mut result = join(self.flood.take(), "noisy-udp");
        drop(self.wake_sink.take());
        for (thread, name) in [
            (self.sink.take(), "noisy-sink"),
            (self.stream.take(), "noisy-stream"),
        ] {
            let ended = join(thread, name);
            result = result.and(ended);
        }
        result
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Runs `body` as a guest of [`NOISY_VM`] on a thread named `name`; its errors are also
/// sent as steps, so a start waiting for the next step learns of them at once.
fn guest<F>(
    connector: &Connector,
    name: &str,
    steps: &mpsc::Sender<Result<Step, String>>,
    body: F,
) -> Result<JoinHandle<Result<(), String>>, String>
where
    F: FnOnce(&GuestLoop, &mpsc::Sender<Result<Step, String>>) -> Result<(), String>
        + Send
        + 'static,
{
    let (connector, steps) = (connector.clone(), steps.clone());
    let name = name.to_owned();
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let result = GuestLoop::new(connector.client_in(NOISY_VM, false))
                .map_err(|e| e.to_string())
                .and_then(|lp| body(&lp, &steps));
            if let Err(e) = &result {
                let _ = steps.send(Err(format!("{name}: {e}")));
            }
            result
        })
        .map_err(|e| e.to_string())
}

/// Datagrams [`NOISY_VM`] has dropped because their receiver's queue was full (its
/// `stats`).
fn dropped(lp: &GuestLoop) -> Result<u64, String> {
    let stats = lp
        .call(&StatsParams {})
        .map_err(|e| format!("stats: {e}"))?;
    Ok(stats["vm"]["udp_dropped_no_room"].as_u64().unwrap_or(0))
}

/// Joins a noise thread, waiting at most [`DEADLINE`] (a thread that does not end is
/// reported and left behind rather than hanging the run).
fn join(thread: Option<JoinHandle<Result<(), String>>>, name: &str) -> Result<(), String> {
    let Some(thread) = thread else {
        return Ok(());
    };
    let deadline = Instant::now() + DEADLINE;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return Err(format!("{name} did not end within {DEADLINE:?}"));
        }
        thread::sleep(Duration::from_millis(1));
    }
    match thread.join() {
        Ok(result) => result.map_err(|e| format!("{name}: {e}")),
        Err(_) => Err(format!("{name} panicked")),
    }
}
