//! `sandbox_startup`: what starting a guest costs, from spawn to exit of `node -e 0`:
//! plain `node` (`node-host`), `sidecar run --no-sandbox -- node -e 0`
//! (`node-unsandboxed`: the embedded sidecar and the guest runtime's attach) and
//! `sidecar run -- node -e 0` (`node-guest-push`: the same inside the network sandbox, as
//! users run it). The `other` column shows what the sandbox adds (push p50 - unsandboxed
//! p50). Wall time of whole processes, so figures are in µs like every row but are
//! milliseconds in size; the lanes are interleaved in rotated blocks like any latency row.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::node::node_guest;
use super::{Budget, Lane, Runner};

pub const ROW: &str = "sandbox_startup";

pub const HOST: &str = "node-host";
pub const NO_SANDBOX: &str = "node-unsandboxed";
pub const SANDBOXED: &str = "node-guest-push";

/// Processes per lane and block: a start-up is tens of milliseconds.
fn per_block(budget: Budget) -> usize {
    if budget.quick {
        3
    } else {
        5
    }
}

/// The command line of a lane.
fn command(lane: &str) -> Result<Command> {
    let mut command = match lane {
        HOST => Command::new("node"),
        NO_SANDBOX => node_guest(&["--no-sandbox"])?,
        _ => node_guest(&[])?,
    };
    command
        .args(["-e", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(command)
}

/// One start-up, its wall time in ns.
fn start_once(lane: &str) -> Result<u64> {
    let mut command = command(lane)?;
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("{command:?} exited with {status}");
    }
    Ok(elapsed.as_nanos() as u64)
}

fn runner(lane: &'static str) -> Runner {
    Box::new(move |n, hist| {
        for _ in 0..n {
            let ns = start_once(lane).expect("a start-up lane failed mid-run");
            hist.record(ns.max(1)).expect("within the histogram");
        }
    })
}

/// The row's lanes; one that cannot start once is listed in `failures` instead.
pub fn lanes(budget: Budget, failures: &mut Vec<String>) -> Vec<Lane> {
    [HOST, NO_SANDBOX, SANDBOXED]
        .into_iter()
        .filter_map(|lane| match start_once(lane) {
            Ok(_) => Some(Lane {
                name: lane,
                run: runner(lane),
                per_block: per_block(budget),
            }),
            Err(e) => {
                failures.push(format!("{ROW} {lane}: {e:#}"));
                None
            }
        })
        .collect()
}
