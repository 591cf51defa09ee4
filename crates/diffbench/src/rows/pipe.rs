//! `pipe_rtt`: a cross-process pipe round trip, the hop floor, measured in the same run.
//! The child is this very binary started with `--pipe-echo` (see [`crate::selfexec`]),
//! echoing stdin to stdout.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::Runner;

/// Set in helpers' environment when the run is confined to one CPU.
pub const ONE_CPU_ENV: &str = "DIFFBENCH_ONE_CPU";

static ONE_CPU: AtomicBool = AtomicBool::new(false);

/// Whether this run keeps every thread on one CPU (`--one-cpu`; helpers learn it from
/// their environment): then nothing is pinned elsewhere.
pub fn one_cpu() -> bool {
    ONE_CPU.load(Ordering::Relaxed) || std::env::var_os(ONE_CPU_ENV).is_some()
}

/// `--one-cpu` (Linux): confines this process, and so every thread and child it starts
/// from now on (the sidecar's threads, the native server, the Node lanes), to the CPU it
/// runs on now, and turns the cross-core pinning of `pipe_rtt` off. What the lanes then
/// measure is their CPU cost and same-core hand-offs, without any cross-CPU wake: on a VM
/// whose cross-vCPU wake-ups are slow, that separates the sidecar's own cost from the
/// machine's. Call it first thing in `main`, before any thread starts.
pub fn confine_to_one_cpu() -> Result<usize, String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: reads the calling thread's CPU; then a zeroed cpu_set_t with that one
        // bit set, applied to this thread (pid 0), which threads and children inherit.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 {
            return Err(format!("sched_getcpu: {}", std::io::Error::last_os_error()));
        }
        let set_ok = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        };
        if !set_ok {
            return Err(format!(
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        ONE_CPU.store(true, Ordering::Relaxed);
        Ok(cpu as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("--one-cpu needs Linux (sched_setaffinity)".into())
    }
}

/// Pins the calling thread to one CPU (Linux), so a pipe round trip always crosses
/// cores as a guest↔sidecar hop does: without it the scheduler sometimes runs both ends
/// on one core and the "floor" drops to two context switches. A no-op elsewhere.
pub fn pin_to_cpu(cpu: usize) -> Option<usize> {
    if one_cpu() {
        return None;
    }
    #[cfg(target_os = "linux")]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return None;
        }
        let cpu = cpu % cores;
        // SAFETY: a zeroed cpu_set_t with one bit set, applied to this thread (pid 0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        Some(cpu)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        None
    }
}

/// Lets the calling thread run on every CPU again (Linux; a no-op elsewhere).
pub fn unpin() {
    if one_cpu() {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: a cpu_set_t with every CPU set, applied to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The child's side: echo single bytes until stdin closes (pinned to the last CPU).
pub fn echo_main() {
    pin_to_cpu(usize::MAX);
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut byte = [0u8; 1];
    while input.read_exact(&mut byte).is_ok() {
        if output
            .write_all(&byte)
            .and_then(|()| output.flush())
            .is_err()
        {
            return;
        }
    }
}

/// The child and our end of its stdin: closing that end first lets the child finish, so
/// waiting for it cannot hang.
struct Echo {
    child: Child,
    to: Option<ChildStdin>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

pub fn host() -> Runner {
    let mut child = crate::selfexec::command("--pipe-echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the pipe echo");
    let to = child.stdin.take();
    let mut from = child.stdout.take().unwrap();
    let mut echo = Echo { child, to };
    Box::new(move |n, hist| {
        let to = echo.to.as_mut().expect("open until drop");
        pin_to_cpu(0);
        let mut byte = [0u8; 1];
        for _ in 0..n {
            let start = Instant::now();
            to.write_all(b"x").unwrap();
            from.read_exact(&mut byte).unwrap();
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
        unpin();
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The CPUs the calling thread may run on.
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: sched_getaffinity fills a zeroed cpu_set_t for this thread (pid 0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize)
                .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
                .collect()
        }
    }

    #[test]
    fn one_cpu_confines_the_thread_and_what_it_starts_and_turns_pinning_off() {
        // In a thread of its own: the confinement is the calling thread's (and its
        // children's), so the test harness's other threads are untouched.
        std::thread::spawn(|| {
            let cpu = confine_to_one_cpu().expect("confine");
            assert_eq!(allowed_cpus(), [cpu]);
            let started = std::thread::spawn(allowed_cpus).join().unwrap();
            assert_eq!(started, [cpu], "a thread started afterwards inherits it");
            assert!(one_cpu());
            assert_eq!(pin_to_cpu(cpu + 1), None, "pinning elsewhere is off");
            unpin();
            assert_eq!(allowed_cpus(), [cpu], "and so is unpinning");
        })
        .join()
        .unwrap();
    }
}
