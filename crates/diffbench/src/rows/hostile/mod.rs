//! `hostile_p99`: one tenant attacks the sidecar; does another notice? The measured
//! program is a bystander VM's 64 B in-VM stream echo (two guests, `guest_endpoints` =
//! 2) on a `sidecar serve` process of the row's own ([`process`]), and the figure is its
//! p99: alone (lane `alone`, half measured before the attacks and half after, so drift
//! hits both) and under each attack of [`attacks::ALL`], run one after another, each
//! established before the first echo and running until the last.
//!
//! Per attack, the JSON also carries what the sidecar held: its peak resident set
//! (`VmHWM`, reset before the attack), its peak fd count (sampled), its CPU while idle
//! again after the attack, whether a new session of the bystander's VM could attach
//! during the attack, and what the attack did (`note`). The gates ([`gates`]): bystander
//! p99 ≤ 2× alone, peak RSS ≤ 64 MiB plus the configured limits' worth, fds never above
//! the sidecar's open-file limit, idle CPU ≈ 0, the bystander attaches, the sidecar
//! survives. `/proc` figures are Linux only (absent elsewhere; their gates say `-`).

pub mod attacks;
pub mod process;
pub mod raw;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use guest_client::{connect_unix, Client};

use super::echo::{self, Kind};
use super::{histogram, Budget, Runner};
use crate::env::{secret_of, VM};
use crate::result::RowResult;
use crate::table::Gate;
use attacks::{Attack, Target};
use process::{probe, HostileSidecar, CONFIGURED, FD_LIMIT};

pub const ROW: &str = "hostile_p99";
pub const ALONE: &str = "alone";
const GUEST_ENDPOINTS: u32 = 2;

/// Resident memory the sidecar may use under any attack, KiB: 64 MiB for itself plus
/// the configured limits' worth (the attacker VM's buffers, and four sessions' queues).
pub fn rss_budget_kib() -> u64 {
    ((64 << 20) + CONFIGURED.buffered_bytes_per_vm + 4 * CONFIGURED.session_outbound_bytes) >> 10
}

/// How long the bystander's echoes may take under an attack before the attack is
/// stopped and the lane reported as a failure (they take well under a second when the
/// sidecar withstands it).
const STALL_LIMIT: Duration = Duration::from_secs(20);

/// CPU the sidecar may use while idle after an attack, in percent of one CPU.
const IDLE_CPU_MAX_PCT: f64 = 2.0;

/// The row; an attack that cannot run is listed in `failures` and left out.
pub fn measure(budget: Budget, failures: &mut Vec<String>) -> Vec<RowResult> {
    let mut sidecar = match HostileSidecar::start() {
        Ok(sidecar) => sidecar,
        Err(e) => {
            failures.push(format!("{ROW}: {e:#}"));
            return Vec::new();
        }
    };
    let target = Target {
        connector: sidecar.connector(),
        socket: sidecar.socket().to_owned(),
        published: sidecar.published,
        quick: budget.quick,
        pid: sidecar.pid(),
    };
    let echoes = if budget.quick { 600 } else { 4000 };
    let mut bystander = echo::guest_stream(&target.connector, false, Kind::Unix, 64, "hostile");
    bystander(echoes / 10, &mut histogram());
    let mut alone = histogram();
    bystander(echoes / 2, &mut alone);
    let mut rows = Vec::new();
    for attack in attacks::ALL {
        eprintln!("  {ROW}: {}", attack.name());
        match under(attack, &target, &mut sidecar, &mut bystander, echoes) {
            Ok(row) => rows.push(row),
            Err(e) => failures.push(format!("{ROW} {}: {e}", attack.name())),
        }
        if !sidecar.alive() {
            failures.push(format!("{ROW}: the sidecar died under {}", attack.name()));
            return rows;
        }
    }
    bystander(echoes - echoes / 2, &mut alone);
    let lines = sidecar.log_lines.load(Ordering::Relaxed);
    eprintln!("  {ROW}: the sidecar logged {lines} lines over the row");
    let mut alone_row = super::summary(ROW, ALONE, &alone, Some(GUEST_ENDPOINTS));
    alone_row.log_lines = Some(lines);
    rows.insert(0, alone_row);
    rows
}

/// The bystander's echoes under `attack`, and what the sidecar held meanwhile.
fn under(
    attack: Attack,
    target: &Target,
    sidecar: &mut HostileSidecar,
    bystander: &mut Runner,
    echoes: usize,
) -> Result<RowResult, String> {
    let pid = sidecar.pid();
    probe::reset_peak_rss(pid);
    let fds = FdSampler::start(pid);
    let running = attack.start(target)?;
    let attached = attach_bystander(target);
    let mut hist = histogram();
    let watchdog = running.watchdog(STALL_LIMIT, pid);
    // A sidecar the watchdog had to kill fails the bystander's calls (it panics).
    let finished = panic::catch_unwind(AssertUnwindSafe(|| bystander(echoes, &mut hist)));
    let stalled = watchdog.done();
    if finished.is_err() {
        let _ = running.stop();
        return Err(format!(
            "the bystander's echoes failed under the attack (the sidecar {})",
            match sidecar.alive() {
                true => "still runs",
                false => "had to be killed: it never recovered",
            }
        ));
    }
    let note = running.stop()?;
    if stalled {
        return Err(format!(
            "the bystander's {echoes} echoes did not finish within {STALL_LIMIT:?} under the \
             attack (stopped then): {note}"
        ));
    }
    let peak_fds = fds.stop();
    let peak_rss_kib = probe::peak_rss_kib(pid);
    let idle_cpu_pct = idle_cpu(pid);
    Ok(RowResult {
        peak_rss_kib,
        rss_budget_kib: Some(rss_budget_kib()),
        peak_fds,
        fd_cap: Some(FD_LIMIT),
        idle_cpu_pct,
        bystander_attached: Some(attached),
        note: Some(note),
        ..super::summary(ROW, attack.name(), &hist, Some(GUEST_ENDPOINTS))
    })
}

/// Whether a new session of the bystander's VM attaches (and answers a call) within
/// [`STALL_LIMIT`] now. On its own thread: a sidecar that does not withstand the attack
/// never answers the hello, and that thread is then left behind.
fn attach_bystander(target: &Target) -> bool {
    let (socket, (tx, rx)) = (target.socket.clone(), std::sync::mpsc::channel());
    thread::spawn(move || {
        let hello = Client::hello_params(VM, secret_of(VM));
        let attached = connect_unix(&socket)
            .ok()
            .and_then(|transport| Client::connect(transport, hello).ok())
            .is_some_and(|mut client| client.call(&sidecar_protocol::StatsParams {}).is_ok());
        let _ = tx.send(attached);
    });
    rx.recv_timeout(STALL_LIMIT).unwrap_or(false)
}

/// The sidecar's CPU while idle after an attack: once its fds have come back down (what
/// the attack held is released), CPU time over one second, in percent of one CPU.
fn idle_cpu(pid: u32) -> Option<f64> {
    attacks::settle_fds(pid);
    let (before, started) = (probe::cpu_ns(pid)?, Instant::now());
    thread::sleep(Duration::from_secs(1));
    let used = probe::cpu_ns(pid)?.saturating_sub(before) as f64;
    Some(100.0 * used / started.elapsed().as_nanos() as f64)
}

/// Samples a process's fd count every 50 ms; keeps the peak (each sample reads the
/// whole fd table of the sidecar, a thousand entries under the fd attack).
struct FdSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
    available: bool,
}

impl FdSampler {
    fn start(pid: u32) -> FdSampler {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let available = probe::fds(pid).is_some();
        let (halt, max) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(n) = probe::fds(pid) {
                    max.fetch_max(n, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        FdSampler {
            stop,
            peak,
            thread: Some(thread),
            available,
        }
    }

    fn stop(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.available.then(|| self.peak.load(Ordering::Relaxed))
    }
}

/// The row's gates (none if the row did not run).
pub fn gates(rows: &[RowResult]) -> Vec<Gate> {
    let attacked: Vec<&RowResult> = rows
        .iter()
        .filter(|r| r.row == ROW && r.lane != ALONE)
        .collect();
    let alone = rows
        .iter()
        .find(|r| r.row == ROW && r.lane == ALONE)
        .and_then(|r| r.p99_us);
    let ran = !attacked.is_empty();
    let worst = |f: &dyn Fn(&RowResult) -> Option<f64>| {
        attacked
            .iter()
            .filter_map(|r| f(r).map(|v| (v, r.lane.as_str())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let mut gates = Vec::new();
    let p99 = worst(&|r| Some(r.p99_us? / alone?));
    gates.push(Gate {
        name: format!("{ROW} bystander p99 ≤ 2× alone under every attack"),
        figure: p99.map_or("-".into(), |(x, lane)| format!("worst {x:.2}× ({lane})")),
        passed: p99.map(|(x, _)| x <= 2.0),
    });
    let rss = worst(&|r| Some(r.peak_rss_kib? as f64 / r.rss_budget_kib? as f64));
    gates.push(Gate {
        name: format!("{ROW} peak RSS ≤ 64 MiB + the configured limits' worth"),
        figure: rss.map_or("-".into(), |(x, lane)| {
            format!(
                "worst {:.0} % of {} MiB ({lane})",
                100.0 * x,
                rss_budget_kib() >> 10
            )
        }),
        passed: rss.map(|(x, _)| x <= 1.0),
    });
    let fds = worst(&|r| Some(r.peak_fds? as f64));
    gates.push(Gate {
        name: format!("{ROW} fds never above the sidecar's limit ({FD_LIMIT})"),
        figure: fds.map_or("-".into(), |(n, lane)| format!("peak {n:.0} ({lane})")),
        passed: fds.map(|(n, _)| n <= FD_LIMIT as f64),
    });
    let idle = worst(&|r| r.idle_cpu_pct);
    gates.push(Gate {
        name: format!("{ROW} sidecar idle CPU ≤ {IDLE_CPU_MAX_PCT} % after each attack"),
        figure: idle.map_or("-".into(), |(x, lane)| format!("worst {x:.2} % ({lane})")),
        passed: idle.map(|(x, _)| x <= IDLE_CPU_MAX_PCT),
    });
    let refused: Vec<&str> = attacked
        .iter()
        .filter(|r| r.bystander_attached == Some(false))
        .map(|r| r.lane.as_str())
        .collect();
    gates.push(Gate {
        name: format!("{ROW} a bystander session attaches under every attack"),
        figure: match (ran, refused.is_empty()) {
            (false, _) => "-".into(),
            (true, true) => "all".into(),
            (true, false) => format!("refused under {}", refused.join(", ")),
        },
        passed: ran.then_some(refused.is_empty()),
    });
    gates
}
