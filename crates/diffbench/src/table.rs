//! The printed table, its derived columns, and the gates.
//!
//! Derived columns for latency rows: the guest lanes' tax vs host (p50 ratio), the push
//! lane's speed-up vs poll, and the **hop floor ratio**: guest-push p50 / (host p50 +
//! k × pipe_rtt p50), k = `guest_endpoints` — what a guest pays beyond its hops.
//! `scale_10k` is a latency row too, but under a paced load: its yardstick is its own
//! 10-socket baseline (`baseline_p99_us`), not the hop floor.

use crate::result::RowResult;

fn find<'a>(rows: &'a [RowResult], row: &str, lane: &str) -> Option<&'a RowResult> {
    rows.iter().find(|r| r.row == row && r.lane == lane)
}

fn p50(rows: &[RowResult], row: &str, lane: &str) -> Option<f64> {
    find(rows, row, lane).and_then(|r| r.p50_us)
}

/// guest-push p50 / (host p50 + k × pipe_rtt p50).
pub fn hop_floor_ratio(rows: &[RowResult], row: &str) -> Option<f64> {
    let push = find(rows, row, "guest-push")?;
    let k = push.guest_endpoints? as f64;
    let floor = p50(rows, row, "host")? + k * p50(rows, "pipe_rtt", "host")?;
    Some(push.p50_us? / floor)
}

pub fn speedup(rows: &[RowResult], row: &str) -> Option<f64> {
    Some(p50(rows, row, "guest-poll")? / p50(rows, row, "guest-push")?)
}

fn opt(v: Option<f64>, width: usize, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.digits$}"),
        None => format!("{:>width$}", "-"),
    }
}

pub fn print(rows: &[RowResult]) {
    println!(
        "{:<18} {:<11} {:>8} {:>11} {:>11} {:>9} {:>9} {:>9}  other",
        "row", "lane", "samples", "p50 µs", "p99 µs", "tax×host", "push×poll", "hop-floor"
    );
    for r in rows {
        let host = p50(rows, &r.row, "host");
        let tax = match (r.lane.as_str(), r.p50_us, host) {
            ("host", ..) => None,
            (_, Some(p), Some(h)) => Some(p / h),
            _ => None,
        };
        let is_push = r.lane == "guest-push";
        let other = [
            r.gib_per_s.map(|v| format!("{v:.2} GiB/s")),
            r.wakeups_per_s
                .map(|v| format!("{v:.1} wakeups/s ({} sockets)", r.sockets.unwrap_or(0))),
            r.cpu_us_per_event.map(|v| format!("{v:.2} CPU µs/event")),
            r.baseline_p99_us.map(|b| {
                let sockets = r.sockets.unwrap_or(0);
                format!(
                    "{sockets} sockets over {} VMs; 10-socket p99 {b:.1} µs",
                    sockets / 100
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        println!(
            "{:<18} {:<11} {:>8} {} {} {} {} {}  {}",
            r.row,
            r.lane,
            r.samples,
            opt(r.p50_us, 11, 1),
            opt(r.p99_us, 11, 1),
            opt(tax, 8, 1),
            opt(is_push.then(|| speedup(rows, &r.row)).flatten(), 8, 1),
            opt(
                is_push.then(|| hop_floor_ratio(rows, &r.row)).flatten(),
                9,
                2
            ),
            other
        );
    }
}

/// One gate: its description, the measured figure, and whether it passed (`None`:
/// not measured in this run).
pub struct Gate {
    pub name: String,
    pub figure: String,
    pub passed: Option<bool>,
}

/// Guest lanes that could not start, listed under the table.
pub fn print_failures(failures: &[String]) {
    if failures.is_empty() {
        return;
    }
    println!("\nlanes left out (they could not start):");
    for failure in failures {
        println!("  {failure}");
    }
}

pub fn gates(
    rows: &[RowResult],
    timer_origin_wakes: Option<u64>,
    failures: &[String],
) -> Vec<Gate> {
    let mut gates = Vec::new();
    gates.push(Gate {
        name: "every lane started".into(),
        figure: match failures.len() {
            0 => "all".into(),
            n => format!("{n} left out"),
        },
        passed: Some(failures.is_empty()),
    });
    let latency_rows: Vec<&str> = {
        let mut names: Vec<&str> = rows
            .iter()
            .filter(|r| r.p50_us.is_some() && r.row != "pipe_rtt")
            .filter(|r| r.row != "scale_10k")
            .map(|r| r.row.as_str())
            .collect();
        names.dedup();
        names
    };
    for row in &latency_rows {
        let ratio = hop_floor_ratio(rows, row);
        gates.push(Gate {
            name: format!("hop floor ratio ≤ 1.25 on {row}"),
            figure: ratio.map_or("-".into(), |r| format!("{r:.2}")),
            passed: ratio.map(|r| r <= 1.25),
        });
    }
    for row in ["udp_echo_small", "unix_echo_small", "udp_echo_ext"] {
        let s = speedup(rows, row);
        gates.push(Gate {
            name: format!("push speed-up ≥ 30× over poll on {row}"),
            figure: s.map_or("-".into(), |s| format!("{s:.1}×")),
            passed: s.map(|s| s >= 30.0),
        });
    }
    gates.push(Gate {
        name: "0 timer-origin wakes in push mode".into(),
        figure: timer_origin_wakes.map_or("-".into(), |w| w.to_string()),
        passed: timer_origin_wakes.map(|w| w == 0),
    });
    let idle = find(rows, "idle_wakeups", "guest-push").and_then(|r| r.wakeups_per_s);
    gates.push(Gate {
        name: "idle wake-ups ≤ 1/s in push mode".into(),
        figure: idle.map_or("-".into(), |w| format!("{w:.2}/s")),
        passed: idle.map(|w| w <= 1.0),
    });
    let cpu = find(rows, "cpu_per_event", "guest-push")
        .and_then(|r| r.cpu_us_per_event)
        .zip(find(rows, "cpu_per_event", "host").and_then(|r| r.cpu_us_per_event));
    gates.push(Gate {
        name: "sidecar CPU per event ≤ 1.5× host CPU per message".into(),
        figure: cpu.map_or("-".into(), |(g, h)| {
            format!("{g:.2} µs vs {h:.2} µs = {:.2}×", g / h)
        }),
        passed: cpu.map(|(g, h)| g <= 1.5 * h),
    });
    gates.push(bulk_gate(rows, "tcp_bulk", "tcp_bulk guest ≥ 40 % of host"));
    let scale = find(rows, "scale_10k", "guest-push")
        .and_then(|r| Some((r.p99_us?, r.baseline_p99_us?, r.sockets.unwrap_or(0))));
    gates.push(Gate {
        name: "scale_10k p99 ≤ 2× its 10-socket baseline".into(),
        figure: scale.map_or("-".into(), |(p, b, n)| {
            format!("{p:.1} µs vs {b:.1} µs = {:.2}× ({n} sockets)", p / b)
        }),
        passed: scale.map(|(p, b, _)| p <= 2.0 * b),
    });
    gates.push(bulk_gate(
        rows,
        "tcp_bulk_ext",
        "tcp_bulk_ext guest ≥ 40 % of native",
    ));
    gates
}

/// A throughput row's gate: its guest-push lane at least 40 % of its host lane.
fn bulk_gate(rows: &[RowResult], row: &str, name: &str) -> Gate {
    let bulk = find(rows, row, "guest-push")
        .and_then(|r| r.gib_per_s)
        .zip(find(rows, row, "host").and_then(|r| r.gib_per_s));
    Gate {
        name: name.into(),
        figure: bulk.map_or("-".into(), |(g, h)| format!("{:.0} %", 100.0 * g / h)),
        passed: bulk.map(|(g, h)| g >= 0.4 * h),
    }
}

pub fn print_gates(gates: &[Gate]) {
    println!();
    for gate in gates {
        let verdict = match gate.passed {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a ",
        };
        println!("gate {verdict}  {:<55} {}", gate.name, gate.figure);
    }
}
