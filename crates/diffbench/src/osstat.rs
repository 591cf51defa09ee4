//! Per-thread wake-ups and CPU time from the OS, for the `idle_wakeups` and
//! `cpu_per_event` rows: `/proc/<pid>/task/*/status` (voluntary context switches: each is
//! a sleep the thread was later woken from) and `/proc/<pid>/task/*/schedstat` (CPU time
//! in ns). Linux only; elsewhere the rows fall back to the project's own counters and say
//! so in the JSON.

/// Sums over the selected threads of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadSample {
    pub wakes: u64,
    pub cpu_ns: u64,
    pub threads: u64,
}

impl ThreadSample {
    pub fn since(self, earlier: ThreadSample) -> ThreadSample {
        ThreadSample {
            wakes: self.wakes.saturating_sub(earlier.wakes),
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            threads: self.threads,
        }
    }
}

/// Threads of `pid` whose name (`comm`) passes `select`; `None` where /proc is absent.
#[cfg(target_os = "linux")]
pub fn sample(pid: u32, select: impl Fn(&str) -> bool) -> Option<ThreadSample> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = ThreadSample::default();
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !select(comm.trim()) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let wakes = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let cpu_ns = schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        total.wakes += wakes;
        total.cpu_ns += cpu_ns;
        total.threads += 1;
    }
    Some(total)
}

#[cfg(not(target_os = "linux"))]
pub fn sample(_pid: u32, _select: impl Fn(&str) -> bool) -> Option<ThreadSample> {
    None
}

/// The sidecar's own threads when embedded (the RPC loop and the readiness thread).
pub fn is_sidecar_thread(comm: &str) -> bool {
    comm == "sidecar-rpc" || comm == "readiness"
}
