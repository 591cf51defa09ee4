//! Where one round trip's time goes: the time and the CPU of each hand-off on the path of
//! a guest's UDP echo through a host socket (guest → RPC loop → kernel → native peer →
//! readiness thread → guest).
//!
//! # Why
//!
//! The `_ext` bench rows pay four thread hand-offs per round trip, and on a small VM what
//! they cost depends mostly on where the scheduler puts each thread: a hand-off between
//! two threads on one vCPU costs a few µs, one that wakes the other vCPU ~30 µs. A p50
//! alone cannot say which; this trace can. `diffbench --stage-trace` (built with
//! `--features stage-trace`) uses it to split round trips by how many hand-offs crossed
//! vCPUs and to time each stage; the figures on the `_ext` hop floor in `docs/benchmarks.md`
//! come from it.
//!
//! # Cost
//!
//! Without the `enabled` feature (the default, and every normal build) [`mark`] is an
//! empty inline function. With it, marks write process-global slots: one traced round
//! trip at a time, one guest. A diagnostic, never a production setting.

/// The hand-offs of a traced round trip, in path order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Stage {
    /// The guest queues its `dgram.send` frame (after encoding it).
    GuestSend,
    /// The RPC loop has the frame (woken by the guest).
    LoopWoken,
    /// The RPC loop starts handling the decoded frame.
    CallHandled,
    /// The host socket's `sendto` returned.
    KernelSent,
    /// The readiness thread runs the socket's handler (woken by the kernel).
    ReadinessWoken,
    /// The handler queues the push frame to the guest (and wakes it).
    PushQueued,
    /// The guest has the push frame (woken by the readiness thread).
    GuestWoken,
}

/// How many [`Stage`]s there are.
pub const STAGES: usize = 7;

/// One mark: when (see [`now_ns`]) and on which CPU (`None` where unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub ns: u64,
    pub cpu: Option<u32>,
}

/// Whether marks are recorded (the `enabled` feature).
pub const ENABLED: bool = cfg!(feature = "enabled");

#[cfg(feature = "enabled")]
mod imp {
    use super::{Mark, Stage, STAGES};
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    static NS: [AtomicU64; STAGES] = [const { AtomicU64::new(0) }; STAGES];
    static CPU: [AtomicI64; STAGES] = [const { AtomicI64::new(-1) }; STAGES];

    pub fn mark(stage: Stage) {
        NS[stage as usize].store(now_ns(), Ordering::Relaxed);
        CPU[stage as usize].store(current_cpu().map_or(-1, i64::from), Ordering::Relaxed);
    }

    pub fn snapshot() -> [Mark; STAGES] {
        std::array::from_fn(|i| Mark {
            ns: NS[i].load(Ordering::Relaxed),
            cpu: u32::try_from(CPU[i].load(Ordering::Relaxed)).ok(),
        })
    }

    /// CLOCK_MONOTONIC: one clock for every process of the machine, so the native peer
    /// (another process) can stamp the same round trip.
    pub fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }

    #[cfg(target_os = "linux")]
    pub fn current_cpu() -> Option<u32> {
        // SAFETY: no arguments, no memory; -1 on failure.
        u32::try_from(unsafe { libc::sched_getcpu() }).ok()
    }

    /// macOS has no supported way to ask which CPU a thread is on.
    #[cfg(not(target_os = "linux"))]
    pub fn current_cpu() -> Option<u32> {
        None
    }
}

#[cfg(not(feature = "enabled"))]
mod imp {
    use super::{Mark, Stage, STAGES};

    #[inline(always)]
    pub fn mark(_stage: Stage) {}

    pub fn snapshot() -> [Mark; STAGES] {
        [Mark::default(); STAGES]
    }

    pub fn now_ns() -> u64 {
        0
    }

    pub fn current_cpu() -> Option<u32> {
        None
    }
}

/// Records that the traced round trip reached `stage`, now, on this CPU. A no-op unless
/// the `enabled` feature is on.
#[inline(always)]
pub fn mark(stage: Stage) {
    imp::mark(stage);
}

/// The last mark of every stage (all zero unless enabled).
pub fn snapshot() -> [Mark; STAGES] {
    imp::snapshot()
}

/// Nanoseconds on the machine-wide monotonic clock (0 unless enabled).
pub fn now_ns() -> u64 {
    imp::now_ns()
}

/// The CPU the calling thread runs on, where the platform can say (`None` unless enabled).
pub fn current_cpu() -> Option<u32> {
    imp::current_cpu()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_recorded_only_when_enabled() {
        mark(Stage::PushQueued);
        let got = snapshot()[Stage::PushQueued as usize];
        if ENABLED {
            assert!(got.ns > 0, "an enabled mark has a time");
            #[cfg(target_os = "linux")]
            assert!(got.cpu.is_some(), "Linux says which CPU");
        } else {
            assert_eq!(got, Mark::default());
        }
    }

    #[test]
    fn the_clock_moves_forward_when_enabled() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert_eq!(a > 0, ENABLED);
    }
}
