//! The differential bench: the same programs in three lanes — `host` (native sockets, no
//! sidecar), `guest-poll` (the old way: re-poll with `wait_ms = 0` on a 4 ms timer) and
//! `guest-push` — in one run, one table, a JSON file and an SVG chart. Run it through
//! `scripts/benchmarks/run`, which builds it in release mode first.
//!
//! The binary is also its own helper processes, selected by hidden flags handled before
//! anything else (see `selfexec.rs`): `--pipe-echo` (the far end of `pipe_rtt`) and
//! `--ext-server` (the native servers of the `*_ext` rows, `scale_10k`, `tcp_bulk_ext`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use diffbench::env::Env;
use diffbench::ext_server::{self, ExtServer};
use diffbench::result::RowResult;
use diffbench::rows::echo::{self, Kind};
use diffbench::rows::{
    accept, bulk, bulk_ext, cpu, ext, hostile, http, idle, isolation, node, paired, pipe,
    published, run_latency, scale, startup, Budget, HopFloor, Lane,
};
use diffbench::{fdlimit, table};

#[derive(Parser)]
#[command(
    name = "diffbench",
    about = "host vs guest-poll vs guest-push, one run, one table"
)]
struct Args {
    /// A short run (under a minute after the build).
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/benchmarks/latest.json"
    )]
    json: PathBuf,
    /// Where to write the SVG chart.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/benchmarks/latest.svg"
    )]
    svg: PathBuf,
    /// Only these rows (comma-separated).
    #[arg(long, value_delimiter = ',')]
    rows: Option<Vec<String>>,
    /// Exit non-zero if a gate fails.
    #[arg(long)]
    gate: bool,
    /// `inproc`: the sidecar embedded (in-process transport); `unix`: a separate
    /// `sidecar serve --listen` process.
    #[arg(long, default_value = "inproc", value_parser = ["inproc", "unix"])]
    transport: String,
    /// Keep every thread and process of the run on one CPU (Linux): the figures are then
    /// CPU cost and same-core hand-offs, with no cross-CPU wake-up (diagnostic: how much
    /// of a latency is the machine's wake-ups). The hop floor assumes cross-core hops, so
    /// gates are not evaluated.
    #[arg(long)]
    one_cpu: bool,
    /// Leave out the Node lanes of the seed rows (`node-host`, `node-guest-poll`,
    /// `node-guest-push`: `scripts/benchmarks/node/lane.js` under `node`, and as a guest
    /// under `sidecar run`).
    #[arg(long)]
    no_node: bool,
    /// Diagnostic instead of the table: trace guest-push `udp_echo_ext` round trips hand-off
    /// by hand-off and print where the time goes, by how many hand-offs crossed CPUs.
    /// Needs a build with `--features stage-trace`.
    #[arg(long)]
    stage_trace: bool,
    /// Internal: the child side of `pipe_rtt`.
    #[arg(long, hide = true)]
    pipe_echo: bool,
    /// Internal: the native server process of the `*_ext` rows.
    #[arg(long, hide = true)]
    ext_server: bool,
}

const LATENCY_ROWS: [&str; 5] = [
    "udp_echo_small",
    "unix_echo_small",
    "unix_accept",
    "tcp_echo_64k",
    "http_loopback_get",
];

/// Rows that need the native server process.
const EXT_ROWS: [&str; 5] = [
    ext::ROWS[0],
    ext::ROWS[1],
    ext::ROWS[2],
    scale::ROW,
    bulk_ext::ROW,
];

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "os": run("uname", &["-sr"]),
        "date": run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    })
}

/// A row's budget: paced rows (each sample waits `accept::GAP` first) fit fewer samples.
fn row_budget(row: &str, budget: Budget) -> Budget {
    match row {
        "unix_accept" => Budget {
            fast: budget.fast / 4,
            ..budget
        },
        _ => budget,
    }
}

fn latency_lanes(env: &Env, row: &str, budget: Budget) -> Vec<Lane> {
    let c = &env.connector;
    let budget = row_budget(row, budget);
    let (host, poll, push) = match row {
        "udp_echo_small" => (
            echo::host_udp(),
            echo::guest_udp(c, true),
            echo::guest_udp(c, false),
        ),
        "unix_echo_small" => (
            echo::host_stream(Kind::Unix, 64),
            echo::guest_stream(c, true, Kind::Unix, 64, "echo"),
            echo::guest_stream(c, false, Kind::Unix, 64, "echo"),
        ),
        "unix_accept" => (
            accept::host(),
            accept::guest(c, true),
            accept::guest(c, false),
        ),
        "tcp_echo_64k" => (
            echo::host_stream(Kind::Tcp, 64 * 1024),
            echo::guest_stream(c, true, Kind::Tcp, 64 * 1024, "tcp64k"),
            echo::guest_stream(c, false, Kind::Tcp, 64 * 1024, "tcp64k"),
        ),
        "http_loopback_get" => (http::host(), http::guest(c, true), http::guest(c, false)),
        other => unreachable!("unknown latency row {other}"),
    };
    echo::lanes(host, poll, push, budget)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Helper processes first: they must never reach a row (which could start helpers).
    if args.pipe_echo {
        pipe::echo_main();
        return Ok(());
    }
    if args.ext_server {
        return ext_server::serve_main();
    }
    if args.stage_trace {
        diffbench::stages::check_usable(&args.transport)?;
    }
    // Before any thread or child starts, so they all inherit it.
    let one_cpu = match args.one_cpu {
        true => Some(pipe::confine_to_one_cpu().map_err(|e| anyhow::anyhow!(e))?),
        false => None,
    };
    // Before any child starts, so they inherit it: scale_10k needs 10,000 descriptors.
    fdlimit::raise_to_hard();
    let wanted = |row: &str| {
        args.rows
            .as_ref()
            .is_none_or(|rows| rows.iter().any(|r| r == row))
    };
    let budget = match args.quick {
        true => Budget {
            blocks: 3,
            fast: 300,
            slow: 8,
            quick: true,
        },
        false => Budget {
            blocks: 10,
            fast: 2000,
            slow: 40,
            quick: false,
        },
    };
    let env = match args.transport.as_str() {
        "unix" => Env::process()?,
        _ => Env::embedded()?,
    };
    if args.stage_trace {
        let server = ExtServer::start()?;
        let trips = if args.quick { 3_000 } else { 20_000 };
        return diffbench::stages::run(&env.connector, &server.ports, trips);
    }
    // One native server process for the run, shared by every row that needs it.
    let ext = match EXT_ROWS.iter().any(|r| wanted(r)) {
        true => Some(ExtServer::start()?),
        false => None,
    };
    let ext_ports = ext.as_ref().map(|server| server.ports);
    // Guest lanes that could not start (e.g. host sockets not allowed): left out of the
    // table, listed after it, and failing a gate.
    let mut failures: Vec<String> = Vec::new();
    let mut results: Vec<RowResult> = Vec::new();
    let latency_rows: Vec<&str> = LATENCY_ROWS
        .into_iter()
        .chain(ext::ROWS)
        .chain([published::ROW])
        .filter(|r| wanted(r))
        .collect();
    if wanted("pipe_rtt") || !latency_rows.is_empty() {
        let mut floor = HopFloor::new(Lane {
            name: "host",
            run: pipe::host(),
            per_block: budget.fast,
        });
        if latency_rows.is_empty() {
            eprintln!("running pipe_rtt");
            run_latency("pipe_rtt", Vec::new(), budget, 0, Some(&mut floor));
        }
        for row in latency_rows {
            eprintln!("running {row} (and pipe_rtt)");
            let (lanes, k) = match ext_ports {
                _ if row == published::ROW => (
                    published::lanes(&env, budget, &mut failures),
                    published::GUEST_ENDPOINTS,
                ),
                Some(ports) if ext::ROWS.contains(&row) => (
                    ext::lanes(&env.connector, &ports, row, budget, &mut failures),
                    ext::GUEST_ENDPOINTS,
                ),
                _ => {
                    let mut lanes = latency_lanes(&env, row, budget);
                    if !args.no_node && node::ROWS.contains(&row) {
                        let budget = row_budget(row, budget);
                        lanes.extend(node::lanes(row, budget, &mut failures));
                    }
                    (lanes, 2)
                }
            };
            results.extend(run_latency(row, lanes, budget, k, Some(&mut floor)));
        }
        results.insert(0, floor.result());
    }
    // Latency rows whose yardstick is in the row (no hop floor in their rotation).
    if wanted(paired::ROW) {
        eprintln!(
            "running {} (and a second sidecar, pairing off)",
            paired::ROW
        );
        let kernel = env
            .kernel_path()
            .map_err(|e| format!("a second sidecar with pairing off: {e:#}"));
        let kernel_env = kernel.as_ref().map_err(String::clone);
        results.extend(paired::measure(&env, kernel_env, budget, &mut failures));
    }
    if wanted(isolation::ROW) {
        eprintln!("running {}", isolation::ROW);
        results.extend(isolation::measure(&env.connector, budget, &mut failures));
    }
    if wanted(startup::ROW) && !args.no_node {
        eprintln!("running {}", startup::ROW);
        let lanes = startup::lanes(budget, &mut failures);
        results.extend(run_latency(startup::ROW, lanes, budget, 0, None));
    }
    if wanted(hostile::ROW) {
        eprintln!(
            "running {} (its own sidecar process, attacked)",
            hostile::ROW
        );
        results.extend(hostile::measure(budget, &mut failures));
    }
    if wanted("idle_wakeups") {
        eprintln!("running idle_wakeups");
        let seconds = Duration::from_secs(if args.quick { 1 } else { 3 });
        results.push(idle::measure(&env, false, 1000, seconds));
        results.push(idle::measure(&env, true, 100, seconds));
    }
    if wanted("cpu_per_event") {
        eprintln!("running cpu_per_event");
        let (round_trips, rounds) = if args.quick { (2_000, 3) } else { (10_000, 5) };
        results.extend(cpu::measure(&env, round_trips, rounds));
    }
    if wanted("tcp_bulk") {
        eprintln!("running tcp_bulk");
        let (total, rounds) = if args.quick {
            (64 << 20, 3)
        } else {
            (256 << 20, 5)
        };
        results.extend(bulk::measure(&env, total, rounds));
    }
    if let (true, Some(ports)) = (wanted(scale::ROW), ext_ports) {
        eprintln!("running {}", scale::ROW);
        match scale::measure(&env.connector, ports.scale_echo, args.quick) {
            Ok(row) => results.push(row),
            Err(e) => failures.push(format!("{} guest-push: {e}", scale::ROW)),
        }
    }
    if let (true, Some(ports)) = (wanted(bulk_ext::ROW), ext_ports) {
        eprintln!("running {}", bulk_ext::ROW);
        let (total, rounds) = if args.quick {
            (64 << 20, 3)
        } else {
            (256 << 20, 5)
        };
        let rows = bulk_ext::measure(&env.connector, ports.sink, total, rounds, &mut failures);
        results.extend(rows);
    }
    drop(ext);
    // The sidecar's own count: wakes on the data path that a timer caused.
    let timer_origin_wakes = env
        .connector
        .client(false)
        .call(&sidecar_protocol::StatsParams {})
        .ok()
        .and_then(|stats| stats["health"]["timer_origin_wakes"].as_u64());

    let confined = one_cpu.map(|cpu| format!("   every thread on CPU {cpu} (--one-cpu)"));
    println!(
        "transport: {}   {}{}",
        env.transport,
        machine(),
        confined.unwrap_or_default()
    );
    table::print(&results);
    table::print_failures(&failures);
    // The hop floor is a cross-core round trip: on one CPU there is none to compare with.
    let gates = match one_cpu {
        None => table::gates(&results, timer_origin_wakes, &failures),
        Some(_) => Vec::new(),
    };
    match one_cpu {
        None => table::print_gates(&gates),
        Some(_) => println!(
            "\ngates: not evaluated with --one-cpu (the hop floor is a cross-core round trip)"
        ),
    }

    let json = serde_json::json!({
        "rows": results,
        "machine": machine(),
        "transport": env.transport,
        "quick": args.quick,
        "one_cpu": one_cpu,
        "timer_origin_wakes": timer_origin_wakes,
        "failures": failures,
        "gates": gates.iter().map(|g| serde_json::json!({"gate": g.name, "figure": g.figure, "passed": g.passed})).collect::<Vec<_>>(),
    });
    for path in [&args.json, &args.svg] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)?)?;
    let title = format!(
        "p50 latency, 64 B unless noted ({} transport)",
        env.transport
    );
    diffbench::svg::render_svg(&results, &title, &args.svg)?;
    println!("\nwrote {} and {}", args.json.display(), args.svg.display());
    if args.gate && gates.iter().any(|g| g.passed == Some(false)) {
        std::process::exit(1);
    }
    Ok(())
}
