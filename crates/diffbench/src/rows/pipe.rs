//! `pipe_rtt`: a cross-process pipe round trip, the hop floor, measured in the same run.
//! The child is this very binary started with `--pipe-echo`, echoing stdin to stdout.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

use super::Runner;

/// The child's side: echo single bytes until stdin closes.
pub fn echo_main() {
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
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .arg("--pipe-echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the pipe echo");
    let to = child.stdin.take();
    let mut from = child.stdout.take().unwrap();
    let mut echo = Echo { child, to };
    Box::new(move |n, hist| {
        let to = echo.to.as_mut().expect("open until drop");
        let mut byte = [0u8; 1];
        for _ in 0..n {
            let start = Instant::now();
            to.write_all(b"x").unwrap();
            from.read_exact(&mut byte).unwrap();
            hist.record(start.elapsed().as_nanos() as u64).unwrap();
        }
    })
}
