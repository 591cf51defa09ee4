//! `pipe_rtt`: a cross-process pipe round trip, the hop floor, measured in the same run.
//! The child is this very binary started with `--pipe-echo` (see [`crate::selfexec`]),
//! echoing stdin to stdout.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::time::Instant;

use super::Runner;

/// Pins the calling thread to one CPU (Linux), so a pipe round trip always crosses
/// cores as a guest↔sidecar hop does: without it the scheduler sometimes runs both ends
/// on one core and the "floor" drops to two context switches. A no-op elsewhere.
pub fn pin_to_cpu(cpu: usize) -> Option<usize> {
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
