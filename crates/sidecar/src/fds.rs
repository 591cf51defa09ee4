//! File descriptors: the process's limit, a reserve kept back for what must always work,
//! and what the sockets of the guests may take.
//!
//! Why: every host socket, published connection and session costs the process one fd,
//! and the fd table is shared by every tenant. A host client that holds a thousand
//! connections to a published port, or a guest that opens host sockets in a loop, must
//! not leave the sidecar unable to accept an attach, or make its accept loops spin on
//! `EMFILE`. So:
//!
//! - At start `serve` and `run` raise the soft `RLIMIT_NOFILE` to the hard limit
//!   ([`raise_limit`]); `run`'s child gets the original soft limit back before exec
//!   ([`restore_in_child`]), so a guest never inherits the raised one.
//! - Guest sockets that hold a kernel fd (host connects and UDP sockets, published
//!   connections) fit in the **budget**: the limit less [`crate::Limits::fd_reserve`]
//!   ([`crate::core::Core::check_fd_room`]: `ENFILE` for that guest beyond it: the
//!   sidecar as a whole is out, as a system whose file table is full, where `EMFILE` is
//!   the guest's own VM at its socket limit). The reserve is for attaches (the Unix listener takes its
//!   connections up to the real limit), the readiness thread, logging, DNS.
//! - An accept that still fails `EMFILE`/`ENFILE` sheds: the one spare fd kept open
//!   (`/dev/null`) is closed, the connection is accepted and closed at once, the spare
//!   is opened again (the nginx/HAProxy trick), and the acceptor backs off ([`Backoff`],
//!   10 ms doubling to 200 ms, on a timer of the RPC loop, which serves everything else
//!   meanwhile). Both are counted (`accept_shed`, `accept_backoff`).
//!
//! The count of open fds ([`FdGauge::open`]) is exact for what the sidecar opens after it starts
//! (the readiness thread's registrations are every host socket and publication; the
//! byte-stream transports count their own) plus the fds the process held when the
//! sidecar started, counted once then. An embedder's own fds opened later are not seen:
//! the reserve is there for those too.

// `rlim_t` is u64 where this is built, not on every Unix: the casts stay.
#![allow(clippy::unnecessary_cast)]

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// The default of [`crate::Limits::fd_reserve`].
pub const DEFAULT_RESERVE: usize = 64;

/// Where the hard limit is unlimited (macOS), the soft limit is raised to this at most
/// (macOS's `OPEN_MAX`, what its libc and Go's runtime use).
pub const UNLIMITED_CAP: u64 = 10_240;

/// The soft limit before [`raise_limit`] raised it (`u64::MAX`: not raised).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

fn get_nofile() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// The process's soft fd limit now.
pub fn limit() -> u64 {
    get_nofile().map_or(1024, |lim| lim.rlim_cur as u64)
}

/// The most the soft limit may be raised to, given the hard limit.
#[cfg(not(target_os = "macos"))]
fn target(hard: u64) -> u64 {
    if hard == libc::RLIM_INFINITY as u64 {
        UNLIMITED_CAP
    } else {
        hard
    }
}

/// macOS: setrlimit refuses a soft limit above `kern.maxfilesperproc` (and the hard limit
/// is often unlimited), so that is the cap ([`UNLIMITED_CAP`] if it cannot be read).
#[cfg(target_os = "macos")]
fn target(hard: u64) -> u64 {
    let mut max: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: sysctlbyname writes at most `len` bytes into `max`.
    let ok = unsafe {
        libc::sysctlbyname(
            c"kern.maxfilesperproc".as_ptr(),
            (&mut max as *mut libc::c_int).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    } == 0;
    let per_proc = if ok && max > 0 {
        max as u64
    } else {
        UNLIMITED_CAP
    };
    hard.min(per_proc)
}

/// What [`raise_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped, see [`UNLIMITED_CAP`]) and
/// remembers the original for [`restore_in_child`]. Call once, at start.
pub fn raise_limit() -> io::Result<Raised> {
    let lim = get_nofile()?;
    let (before, hard) = (lim.rlim_cur as u64, lim.rlim_max as u64);
    ORIGINAL_SOFT.store(before, Ordering::Relaxed);
    let want = target(hard);
    if want <= before {
        return Ok(Raised {
            before,
            now: before,
            hard,
        });
    }
    let raised = libc::rlimit {
        rlim_cur: want as libc::rlim_t,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Raised {
        before,
        now: want,
        hard,
    })
}

/// In a forked child before exec: gives the soft fd limit back its value from before
/// [`raise_limit`] (nothing if it was not raised). Async-signal-safe: an atomic load and
/// two system calls.
pub fn restore_in_child() -> io::Result<()> {
    let original = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if original == u64::MAX {
        return Ok(());
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct of ours.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = (original as libc::rlim_t).min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether an accept (or any open) failed for want of an fd.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The fds the process holds now, counted once (at start): `/proc/self/fd` on Linux,
/// `/dev/fd` elsewhere (macOS), less the directory's own fd; probing every number below
/// the limit with `fcntl` when neither can be read.
pub fn count_open() -> u64 {
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        return (entries.count() as u64).saturating_sub(1);
    }
    let top = limit().min(65_536) as libc::c_int;
    // SAFETY: F_GETFD only asks whether the number is an open fd.
    (0..top)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .count() as u64
}

/// The sidecar's fd accounting (in [`Metrics`], so stats and the acceptors reach it).
pub struct FdGauge {
    /// The soft limit when the sidecar started.
    limit: AtomicU64,
    /// Fds open when the sidecar started (its runtime's and readiness thread's included).
    base: AtomicU64,
    /// Fds of the byte-stream transports (sessions, Unix listeners) and the spare.
    transports: AtomicU64,
    /// The spare fd closed to shed one connection when accepts fail `EMFILE`.
    spare: parking_lot::Mutex<Option<File>>,
}

impl Default for FdGauge {
    fn default() -> Self {
        FdGauge {
            limit: AtomicU64::new(limit()),
            base: AtomicU64::new(0),
            transports: AtomicU64::new(0),
            spare: parking_lot::Mutex::new(None),
        }
    }
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

impl FdGauge {
    /// Called once at start, after the runtime and the readiness thread exist and before
    /// anything else opens: records the limit, counts what is open, opens the spare.
    pub fn start(&self) {
        self.limit.store(limit(), Ordering::Relaxed);
        self.base.store(count_open(), Ordering::Relaxed);
        let spare = open_spare();
        if spare.is_some() {
            self.transports.fetch_add(1, Ordering::Relaxed);
        }
        *self.spare.lock() = spare;
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Fds open now, given the readiness thread's live registrations.
    pub fn open(&self, registrations: u64) -> u64 {
        self.base.load(Ordering::Relaxed) + self.transports.load(Ordering::Relaxed) + registrations
    }

    /// Sheds one connection when the process is out of fds: closes the spare, runs
    /// `accept_and_close` (which takes one pending connection and closes it), opens the
    /// spare again. Whether a connection was shed.
    pub fn shed(&self, accept_and_close: impl FnOnce() -> io::Result<()>) -> bool {
        let mut spare = self.spare.lock();
        let had = spare.take().is_some();
        let shed = accept_and_close().is_ok();
        *spare = open_spare();
        match (had, spare.is_some()) {
            (true, false) => drop(self.transports.fetch_sub(1, Ordering::Relaxed)),
            (false, true) => drop(self.transports.fetch_add(1, Ordering::Relaxed)),
            _ => {}
        }
        shed
    }
}

/// `n` fds of a transport, counted in the gauge while this lives.
pub struct FdHold {
    metrics: Arc<Metrics>,
    n: u64,
}

impl FdHold {
    pub fn new(metrics: &Arc<Metrics>, n: u64) -> FdHold {
        metrics.fds.transports.fetch_add(n, Ordering::Relaxed);
        FdHold {
            metrics: Arc::clone(metrics),
            n,
        }
    }
}

impl Drop for FdHold {
    fn drop(&mut self) {
        self.metrics
            .fds
            .transports
            .fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// An acceptor's wait after an accept failed: 10 ms, doubling to 200 ms, back to 10 ms
/// after an accept succeeds.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(10);
    pub const MAX: Duration = Duration::from_millis(200);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The wait to do now; the next one doubles (up to [`Backoff::MAX`]).
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        now
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::core::Core {
    /// Fds the sidecar holds now.
    pub fn fds_open(&self) -> u64 {
        self.metrics.fds.open(self.host.reactor.stats().sources)
    }

    /// Refuses `n` more kernel fds for guest sockets past the budget (the fd limit less
    /// `fd_reserve`): `ENFILE` (the sidecar as a whole is out, as a system's file table
    /// is; not the guest's own limit, which is `EMFILE`), counted (`fd_budget_refused`).
    pub fn check_fd_room(&self, n: u64) -> Result<(), sidecar_protocol::WireError> {
        let limit = self.metrics.fds.limit();
        let reserve = self.config.limits.fd_reserve as u64;
        let budget = limit.saturating_sub(reserve);
        let open = self.fds_open();
        if open + n <= budget {
            return Ok(());
        }
        crate::metrics::bump(&self.metrics.fd_budget_refused);
        Err(sidecar_protocol::WireError::new(
            sidecar_protocol::ErrorCode::Enfile,
            format!(
                "the sidecar holds {open} fds: its limit is {limit}, {reserve} of them reserved"
            ),
        ))
    }
}

/// The most sockets a VM may have open given the process's fd `limit` and the `reserve`:
/// its configured `sockets_per_vm`, clamped to the budget (`limit - reserve`, at least 1).
pub fn clamp_sockets(sockets_per_vm: usize, limit: u64, reserve: usize) -> usize {
    let budget = limit.saturating_sub(reserve as u64).max(1);
    sockets_per_vm.min(usize::try_from(budget).unwrap_or(usize::MAX))
}

/// Clamps every VM's `sockets_per_vm` in `config` (the global one and each VM's own) to
/// what the process can hold; logs once (info) if that changed anything.
pub fn clamp_config(config: &mut crate::SidecarConfig, limit: u64) {
    let reserve = config.limits.fd_reserve;
    let before = config.limits.sockets_per_vm;
    config.limits.sockets_per_vm = clamp_sockets(before, limit, reserve);
    let mut changed = before != config.limits.sockets_per_vm;
    for vm in config.vms.values_mut() {
        if let Some(own) = vm.limits.sockets_per_vm {
            let clamped = clamp_sockets(own, limit, reserve);
            changed |= clamped != own;
            vm.limits.sockets_per_vm = Some(clamped);
        }
    }
    if changed {
        tracing::info!(
            fd_limit = limit,
            fd_reserve = reserve,
            sockets_per_vm = config.limits.sockets_per_vm,
            "sockets_per_vm clamped to the fds this process can hold (its fd limit less fd_reserve)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_clamps_sockets_to_the_limit_less_the_reserve() {
        assert_eq!(clamp_sockets(65_536, 1024, 64), 960);
        assert_eq!(
            clamp_sockets(100, 1024, 64),
            100,
            "below the budget: as configured"
        );
        assert_eq!(
            clamp_sockets(10, 32, 64),
            1,
            "a reserve above the limit leaves one"
        );
        let mut config = crate::SidecarConfig::default()
            .with_vm("a", "sa")
            .with_vm("b", "sb");
        config.vms.get_mut("a").unwrap().limits.sockets_per_vm = Some(5000);
        config.vms.get_mut("b").unwrap().limits.sockets_per_vm = Some(50);
        clamp_config(&mut config, 256);
        assert_eq!(config.limits.sockets_per_vm, 192);
        assert_eq!(config.limits_for("a").sockets_per_vm, 192);
        assert_eq!(config.limits_for("b").sockets_per_vm, 50);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let steps: Vec<_> = (0..7).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, [10, 20, 40, 80, 160, 200, 200]);
        b.reset();
        assert_eq!(b.step(), Backoff::FIRST);
    }

    #[test]
    fn holds_count_while_they_live_and_the_spare_comes_back() {
        let metrics = Arc::new(Metrics::default());
        metrics.fds.start();
        let base = metrics.fds.open(0);
        assert!(base > 0, "stdio at least");
        let hold = FdHold::new(&metrics, 2);
        assert_eq!(metrics.fds.open(3), base + 5);
        drop(hold);
        assert_eq!(metrics.fds.open(0), base);
        // Shedding with nothing to accept: the spare is back, the count unchanged.
        assert!(!metrics.fds.shed(|| Err(io::ErrorKind::WouldBlock.into())));
        assert!(metrics.fds.spare.lock().is_some());
        assert_eq!(metrics.fds.open(0), base);
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(libc::EAGAIN)));
    }
}
