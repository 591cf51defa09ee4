//! The Node lanes of the seed rows: `node-host` (plain `node`), `node-guest-poll` and
//! `node-guest-push` (the same program as a guest: `sidecar run --vm bench [--poll] --
//! node ...`). The program, `scripts/benchmarks/node/lane.js`, is an ordinary Node app
//! (`node:dgram`, `node:net`, `node:http`; client and server in one process): the guest
//! lanes run it unmodified, which is the point.
//!
//! Each lane is one child process for the whole row, driven over its stdin/stdout: a line
//! `N` runs N operations, and the answer is one line of their latencies in nanoseconds,
//! measured inside the program. So a Node lane interleaves with the Rust lanes and the hop
//! floor exactly as they interleave with each other, and the pipe between bench and
//! child is not part of any figure.
//!
//! Hop floors: the host lane of this family is `node-host`, and as in the Rust guest lanes
//! every operation crosses guest↔sidecar twice (`guest_endpoints` = 2).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::{Budget, Lane, Runner};
use crate::env::sidecar_binary;

/// The seed rows that have Node lanes.
pub const ROWS: [&str; 5] = [
    "udp_echo_small",
    "unix_echo_small",
    "unix_accept",
    "tcp_echo_64k",
    "http_loopback_get",
];

/// Lane names: the family's host lane, then its two guest lanes.
pub const HOST: &str = "node-host";
pub const POLL: &str = "node-guest-poll";
pub const PUSH: &str = "node-guest-push";

/// How long a lane may take to say `ready` (a cold `node` start plus the row's set-up).
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The lane program, from the repository (the bench runs from its root).
fn program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/benchmarks/node/lane.js")
}

/// The Node lanes of `row` that could start; each one that could not is listed in
/// `failures` (no `node` on PATH, a runtime error in the guest...).
pub fn lanes(row: &str, budget: Budget, failures: &mut Vec<String>) -> Vec<Lane> {
    let mut lanes = Vec::new();
    for (name, per_block) in [
        (HOST, budget.fast),
        (POLL, budget.slow),
        (PUSH, budget.fast),
    ] {
        match NodeLane::start(name, row) {
            Ok(lane) => lanes.push(Lane {
                name,
                run: lane.runner(),
                per_block,
            }),
            Err(e) => failures.push(format!("{row} {name}: {e:#}")),
        }
    }
    lanes
}

/// `sidecar run --vm bench FLAGS -- node`: Node as a guest of the bench's VM, as users
/// run it (inside the network sandbox unless `FLAGS` say `--no-sandbox`).
pub fn node_guest(flags: &[&str]) -> Result<Command> {
    let mut command = Command::new(sidecar_binary()?);
    command
        .args(["run", "--vm", "bench"])
        .args(flags)
        .args(["--", "node"]);
    Ok(command)
}

/// A lane's child process and its pipes.
struct NodeLane {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl NodeLane {
    fn start(lane: &str, row: &str) -> Result<NodeLane> {
        let program = program();
        let mut command = match lane {
            HOST => Command::new("node"),
            POLL => node_guest(&["--poll"])?,
            _ => node_guest(&[])?,
        };
        command
            .arg(&program)
            .arg(row)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let to = child.stdin.take();
        let from = BufReader::new(child.stdout.take().expect("piped"));
        let mut lane = NodeLane { child, to, from };
        lane.await_ready()?;
        Ok(lane)
    }

    /// Waits for `ready`, within [`READY_DEADLINE`] (a reader thread, so a child that
    /// hangs cannot hang the run: it is killed on drop).
    fn await_ready(&mut self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        let stdout = self.from.get_ref().as_fd().try_clone_to_owned()?;
        thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(stdout));
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
        });
        match rx.recv_timeout(READY_DEADLINE) {
            Ok(Ok(line)) if line.trim() == "ready" => Ok(()),
            Ok(Ok(line)) if line.is_empty() => bail!("exited before it was ready"),
            Ok(Ok(line)) => bail!("said {line:?} instead of ready"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => bail!("not ready within {READY_DEADLINE:?}"),
        }
    }

    fn runner(mut self) -> Runner {
        Box::new(move |n, hist| {
            for latency in self.run(n).expect("a Node lane failed mid-run") {
                hist.record(latency.max(1))
                    .expect("latency within the histogram");
            }
        })
    }

    /// Runs `n` operations in the child; their latencies in ns.
    fn run(&mut self, n: usize) -> Result<Vec<u64>> {
        let to = self.to.as_mut().expect("open until drop");
        writeln!(to, "{n}")?;
        to.flush()?;
        let mut line = String::new();
        if self.from.read_line(&mut line)? == 0 {
            bail!("the lane exited");
        }
        let latencies = line
            .split_whitespace()
            .map(|v| v.parse::<u64>().map_err(|e| anyhow!("{v:?}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        if latencies.len() != n {
            bail!("asked for {n} operations, got {}", latencies.len());
        }
        Ok(latencies)
    }
}

impl Drop for NodeLane {
    fn drop(&mut self) {
        // Stdin's end makes the program close its sockets and exit; a child that does
        // not is killed.
        drop(self.to.take());
        let (tx, rx) = mpsc::channel();
        let pid = self.child.id();
        thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(5)).is_err() {
                // SAFETY: signalling our own child, still unreaped (we wait for it below).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        let _ = self.child.wait();
        let _ = tx.send(());
    }
}
