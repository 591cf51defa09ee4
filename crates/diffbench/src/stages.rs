//! `diffbench --stage-trace`: where a guest's `udp_echo_ext` round trip spends its time,
//! split by how many of its four hand-offs crossed CPUs.
//!
//! # Why
//!
//! On a small VM a thread hand-off costs a few µs when both threads share a vCPU and
//! ~30 µs when it wakes the other one, and the scheduler, not the sidecar, decides which.
//! A row's p50 mixes the two; this report separates them, so the `_ext` hop-floor figures
//! in `docs/benchmarks.md` can be reproduced and a change can be judged per placement.
//!
//! # How
//!
//! The path: the guest (this thread) → the RPC loop (hop 1) → `sendto` → the native echo
//! in the server process (hop 2) → the readiness thread (hop 3) → the guest (hop 4). The
//! sidecar and the guest client mark each hand-off through `stage_trace` (compiled in
//! only with `--features stage-trace`); the peer writes its receive and send times and
//! its CPU into the echoed datagram, after [`PEER_MAGIC`] (see [`stamp_peer`]). Clocks:
//! CLOCK_MONOTONIC, one clock for both processes.

use std::collections::BTreeMap;
use std::io;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use stage_trace::Stage;

use crate::env::Connector;
use crate::ext_server::ExtPorts;

/// The start of a datagram that asks the native echo to stamp it.
pub const PEER_MAGIC: &[u8; 8] = b"STAGETRC";
/// Magic, receive time, send time (u64 ns each), CPU (u32; `u32::MAX` unknown).
const PEER_STAMP_LEN: usize = 28;
const SIZE: usize = 64;
const WARM_UP: usize = 500;

/// The native echo's side: stamps a datagram that starts with [`PEER_MAGIC`] (only in a
/// `stage-trace` build; otherwise, and for every other datagram, does nothing).
pub fn stamp_peer(datagram: &mut [u8], received_ns: u64) {
    if !stage_trace::ENABLED
        || datagram.len() < PEER_STAMP_LEN
        || &datagram[..PEER_MAGIC.len()] != PEER_MAGIC
    {
        return;
    }
    let cpu = stage_trace::current_cpu().unwrap_or(u32::MAX);
    datagram[8..16].copy_from_slice(&received_ns.to_le_bytes());
    datagram[24..28].copy_from_slice(&cpu.to_le_bytes());
    datagram[16..24].copy_from_slice(&stage_trace::now_ns().to_le_bytes());
}

/// The stages of the report, each the time between two marks.
const COLUMNS: [&str; 10] = [
    "guest encode",
    "hop1 guest>loop",
    "loop decode",
    "loop sendto",
    "hop2 sent>peer",
    "peer",
    "hop3 peer>ready",
    "readiness",
    "hop4 ready>guest",
    "guest decode",
];

/// One traced round trip.
struct Trip {
    total_ns: u64,
    /// Which of the four hand-offs crossed CPUs.
    crossed: [bool; 4],
    stages_ns: [i64; COLUMNS.len()],
}

/// One round trip's trace, or `None` when a mark or the peer's stamp falls outside the
/// round trip (the datagram did not take the traced path: it would be garbage here).
fn trip(start_ns: u64, end_ns: u64, start_cpu: Option<u32>, echoed: &[u8]) -> Option<Trip> {
    let marks = stage_trace::snapshot();
    let at = |s: Stage| marks[s as usize];
    let word = |range: std::ops::Range<usize>| {
        u64::from_le_bytes(echoed[range].try_into().expect("8 bytes"))
    };
    let (peer_rx, peer_tx) = (word(8..16), word(16..24));
    let peer_cpu = u32::from_le_bytes(echoed[24..28].try_into().expect("4 bytes"));
    let peer_cpu = (peer_cpu != u32::MAX).then_some(peer_cpu);
    let times = [
        start_ns,
        at(Stage::GuestSend).ns,
        at(Stage::LoopWoken).ns,
        at(Stage::CallHandled).ns,
        at(Stage::KernelSent).ns,
        peer_rx,
        peer_tx,
        at(Stage::ReadinessWoken).ns,
        at(Stage::PushQueued).ns,
        at(Stage::GuestWoken).ns,
        end_ns,
    ];
    if times.iter().any(|&t| t < start_ns || t > end_ns) {
        return None;
    }
    let stages_ns = std::array::from_fn(|i| times[i + 1] as i64 - times[i] as i64);
    let crossed = |a: Option<u32>, b: Option<u32>| matches!((a, b), (Some(a), Some(b)) if a != b);
    Some(Trip {
        total_ns: end_ns.saturating_sub(start_ns),
        crossed: [
            crossed(start_cpu, at(Stage::LoopWoken).cpu),
            crossed(at(Stage::KernelSent).cpu, peer_cpu),
            crossed(peer_cpu, at(Stage::ReadinessWoken).cpu),
            crossed(at(Stage::PushQueued).cpu, at(Stage::GuestWoken).cpu),
        ],
        stages_ns,
    })
}

/// The median of nanosecond figures, in µs (a group is never empty).
fn median_us(values: impl Iterator<Item = i64>) -> f64 {
    crate::rows::median(values.map(|ns| ns as f64 / 1000.0).collect()).unwrap_or(0.0)
}

/// Whether `--stage-trace` can run here: a build with the marks in, the in-process
/// transport (the marks are read in this process).
pub fn check_usable(transport: &str) -> Result<()> {
    if !stage_trace::ENABLED {
        bail!(
            "--stage-trace needs the marks compiled in: \
             cargo run --release -p diffbench --features stage-trace -- --stage-trace"
        );
    }
    if transport != "inproc" {
        bail!("--stage-trace needs the in-process transport: its marks are read in this process");
    }
    Ok(())
}

/// Runs `n` traced guest-push round trips to the native UDP echo and prints the report.
pub fn run(connector: &Connector, ports: &ExtPorts, n: usize) -> Result<()> {
    if stage_trace::current_cpu().is_none() {
        eprintln!("note: this platform does not say which CPU a thread is on: no crossings");
    }
    let lp = connector.guest(false);
    let trips = lp.block_on(async {
        let socket = crate::rows::ext::connect_udp_apart(&lp, ports.udp_echo)?;
        let mut message = [7u8; SIZE];
        message[..PEER_MAGIC.len()].copy_from_slice(PEER_MAGIC);
        let mut buf = [0u8; 2048];
        let mut trips = Vec::with_capacity(n);
        for i in 0..WARM_UP + n {
            let start_cpu = stage_trace::current_cpu();
            let start_ns = stage_trace::now_ns();
            socket.send(&message).await?;
            let got = socket.recv(&mut buf).await?;
            let end_ns = stage_trace::now_ns();
            if got != SIZE {
                return Err(io::Error::other(format!(
                    "echo of {got} bytes, sent {SIZE}"
                )));
            }
            if i >= WARM_UP {
                trips.push(trip(start_ns, end_ns, start_cpu, &buf[..got]));
            }
        }
        Ok::<_, io::Error>(trips)
    })?;
    let all = trips.len();
    let trips: Vec<Trip> = trips.into_iter().flatten().collect();
    if trips.is_empty() {
        bail!("none of {all} round trips took the traced path (guest > loop > host socket > native echo > readiness > guest)");
    }
    print!("{}", report(&trips));
    if trips.len() < all {
        println!(
            "({} of {all} round trips left out: a mark or the echo's stamp fell outside the round trip)",
            all - trips.len()
        );
    }
    Ok(())
}

/// A placement, e.g. `x--x`: hand-offs 1 and 4 crossed CPUs, 2 and 3 did not.
fn placement(crossed: [bool; 4]) -> String {
    crossed.iter().map(|&c| if c { 'x' } else { '-' }).collect()
}

/// Placements that hold under this share of the trips are left out of the table.
const MIN_SHARE: f64 = 1.0;

fn report(trips: &[Trip]) -> String {
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for t in trips {
        all.record(t.total_ns.max(1)).expect("in range");
    }
    let mut out = format!(
        "udp_echo_ext guest-push, {} traced round trips: p50 {:.1} µs, p99 {:.1} µs\n\
         hand-offs: 1 guest>loop, 2 loop>peer, 3 peer>readiness, 4 readiness>guest; \
         placement: x = that hand-off crossed CPUs\n\
         medians in µs; a stage reads negative when the next thread ran inside the \
         previous one's system call\n\n",
        trips.len(),
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
    );
    out += &format!(
        "{:>9} {:>9} {:>7} {:>8}",
        "placement", "crossings", "share", "p50"
    );
    for c in COLUMNS {
        out += &format!(" {c:>17}");
    }
    out.push('\n');
    let mut groups: BTreeMap<[bool; 4], Vec<&Trip>> = BTreeMap::new();
    for t in trips {
        groups.entry(t.crossed).or_default().push(t);
    }
    let mut groups: Vec<([bool; 4], Vec<&Trip>)> = groups.into_iter().collect();
    // Fewest crossings first, then the most common.
    groups.sort_by_key(|(p, group)| {
        (
            p.iter().filter(|&&c| c).count(),
            std::cmp::Reverse(group.len()),
        )
    });
    let mut left_out = 0;
    for (p, group) in groups {
        let share = 100.0 * group.len() as f64 / trips.len() as f64;
        if share < MIN_SHARE {
            left_out += group.len();
            continue;
        }
        let crossings = p.iter().filter(|&&c| c).count();
        let total = median_us(group.iter().map(|t| t.total_ns as i64));
        out += &format!(
            "{:>9} {crossings:>9} {share:>6.1}% {total:>8.1}",
            placement(p)
        );
        for i in 0..COLUMNS.len() {
            let stage = median_us(group.iter().map(|t| t.stages_ns[i]));
            out += &format!(" {stage:>17.1}");
        }
        out.push('\n');
    }
    if left_out > 0 {
        out +=
            &format!("({left_out} trips in placements under {MIN_SHARE} % each are not listed)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_magic_datagram_is_stamped_and_only_in_a_trace_build() {
        let mut plain = [7u8; SIZE];
        stamp_peer(&mut plain, 5);
        assert_eq!(plain, [7u8; SIZE], "an ordinary echo is never touched");

        let mut traced = [7u8; SIZE];
        traced[..8].copy_from_slice(PEER_MAGIC);
        stamp_peer(&mut traced, 5);
        let received = u64::from_le_bytes(traced[8..16].try_into().unwrap());
        assert_eq!(received == 5, stage_trace::ENABLED);
        assert_eq!(&traced[..8], PEER_MAGIC);
        assert_eq!(
            traced[28..],
            [7u8; SIZE - 28],
            "the rest of the payload is kept"
        );
    }

    #[test]
    fn a_build_without_the_marks_or_another_transport_is_refused_with_the_reason() {
        let inproc = check_usable("inproc");
        let unix = check_usable("unix").expect_err("never over another transport");
        if stage_trace::ENABLED {
            assert!(inproc.is_ok());
            assert!(unix.to_string().contains("in-process transport"), "{unix}");
        } else {
            let e = inproc.expect_err("no marks, no trace");
            assert!(e.to_string().contains("--features stage-trace"), "{e}");
        }
    }

    #[test]
    fn the_report_groups_trips_by_placement() {
        let trip = |total_ns, crossed| Trip {
            total_ns,
            crossed,
            stages_ns: [1000; COLUMNS.len()],
        };
        let one = [false, false, true, false];
        let two = [true, false, false, true];
        let mut trips = vec![trip(60_000, one), trip(62_000, one), trip(85_000, two)];
        let text = report(&trips);
        let row = |text: &str, p: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(p))
                .map(str::to_owned)
        };
        assert!(row(&text, "--x-").expect("one crossing").contains("66.7%"));
        assert!(row(&text, "x--x").expect("two crossings").contains("85.0"));
        assert!(row(&text, "----").is_none(), "no empty group");
        assert!(text.contains("3 traced round trips"));

        // A rare placement is counted, not listed.
        trips.extend((0..200).map(|_| trip(60_000, one)));
        let text = report(&trips);
        assert!(row(&text, "x--x").is_none());
        assert!(text.contains("(1 trips in placements under 1 % each"));
    }
}
