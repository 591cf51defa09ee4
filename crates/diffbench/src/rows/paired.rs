//! `paired_echo`: a guest of one VM ([`PEER_VM`]) connects to a port the sidecar
//! publishes to another VM (the run's [`crate::env::VM`]), where a guest echo server
//! listens, and times 64 B echoes. Both ends are ours, so the sidecar **pairs** them
//! before the first byte and the bytes flow in memory, as between two guests of one VM;
//! without pairing each byte would cross the kernel twice and the readiness thread on
//! both sides. Two guests per round trip (`guest_endpoints` = 2); no hop-floor gate
//! (there is no native lane to floor against): what the row shows is the gain.
//!
//! Lanes, interleaved in blocks and rotated like every latency row:
//! - `guest-push`: the run's sidecar, pairing on;
//! - `guest-push-kernel`: the same program on a second sidecar of the same transport
//!   ([`Env::kernel_path`]) whose `pairing_wait` is 0, so the connection stays on the
//!   kernel path.
//!
//! The table's `other` column shows the gain (kernel p50 / paired p50). Each lane is
//! checked to be on the path it claims right after it connected, and left out (a
//! failure line) otherwise: embedded, by the sidecar's own counters (`pairs_made`,
//! `pairs_missed`); as a separate process (whose operator counters the bench cannot
//! reach), by the kernel's table of TCP connections (a paired connection keeps none
//! open on the published port, a kernel-path one two).

use std::io;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use guest_client::{GuestLoop, TcpListener, TcpStream};

use super::{run_latency, Budget, Lane, Runner};
use crate::env::{Env, PEER_VM};
use crate::ports::ECHO_PORT;
use crate::result::RowResult;

pub const ROW: &str = "paired_echo";

/// Guests per round trip: the client and the server.
pub const GUEST_ENDPOINTS: u32 = 2;

const SIZE: usize = 64;
const HOST: &str = "127.0.0.1";
/// How long the echo server's bind may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(5);

/// The row on `env` (pairing on) and `kernel` (the second sidecar, pairing off, or why
/// it could not start).
pub fn measure(
    env: &Env,
    kernel: Result<&Env, String>,
    budget: Budget,
    failures: &mut Vec<String>,
) -> Vec<RowResult> {
    let mut lanes = Vec::new();
    let before = pairs(env);
    match lane(env, true) {
        Ok(run) => lanes.push(Lane {
            name: "guest-push",
            run,
            per_block: budget.fast,
        }),
        Err(e) => failures.push(format!("{ROW} guest-push: {e}")),
    }
    match kernel.and_then(|kernel| lane(kernel, false)) {
        Ok(run) => lanes.push(Lane {
            name: "guest-push-kernel",
            run,
            per_block: budget.fast,
        }),
        Err(e) => failures.push(format!("{ROW} guest-push-kernel: {e}")),
    }
    let rows = run_latency(ROW, lanes, budget, GUEST_ENDPOINTS, None);
    // Every connect of the row paired: none waited in vain (the lanes connect once, so
    // this also covers a reconnect nobody asked for).
    if let (Some((_, missed0)), Some((_, missed))) = (before, pairs(env)) {
        if missed != missed0 {
            failures.push(format!(
                "{ROW} guest-push: {} pairing(s) missed during the row",
                missed - missed0
            ));
        }
    }
    rows
}

/// A lane on `env`: an echo server guest on [`ECHO_PORT`] of the run VM, a client guest
/// of [`PEER_VM`] connected through the published port, one echo done, and the path
/// checked (`paired`: in memory; else the kernel's).
fn lane(env: &Env, paired: bool) -> Result<Runner, String> {
    let (tx, rx) = mpsc::channel();
    let server = env
        .connector
        .spawn("paired-echo", false, move |lp| async move {
            let listener = match TcpListener::bind(&lp, HOST, ECHO_PORT) {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = tx.send(Err(format!("guest listen on port {ECHO_PORT}: {e}")));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            nodelay(&stream);
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    rx.recv_timeout(SETUP_DEADLINE)
        .unwrap_or_else(|_| Err(format!("no listener within {SETUP_DEADLINE:?}")))?;
    let before = pairs(env);
    let lp = GuestLoop::new(env.connector.client_in(PEER_VM, false)).map_err(|e| e.to_string())?;
    let port = env.published.echo;
    let stream = lp
        .block_on(async {
            let stream = TcpStream::connect(&lp, HOST, port).await?;
            nodelay(&stream);
            echo(&stream).await?;
            io::Result::Ok(stream)
        })
        .map_err(|e| format!("VM {PEER_VM} to {HOST}:{port}: {e}"))?;
    let how = check(env, before, paired)?;
    eprintln!(
        "  {ROW}: {}: {how}",
        if paired { "paired" } else { "kernel path" }
    );
    Ok(Box::new(move |n, hist| {
        let _server = &server;
        lp.block_on(async {
            for _ in 0..n {
                let start = Instant::now();
                echo(&stream).await.expect("echo");
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        })
    }))
}

async fn echo(stream: &TcpStream) -> io::Result<()> {
    let mut buf = [0u8; SIZE];
    stream.write_all(&[7u8; SIZE]).await?;
    stream.read_exact(&mut buf).await
}

/// Nagle off on both ends: on the kernel path the sidecar's sockets are real ones.
fn nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        eprintln!("warning: guest set_nodelay: {e}");
    }
}

/// The sidecar's `pairs_made` and `pairs_missed`, when the bench can read them.
fn pairs(env: &Env) -> Option<(u64, u64)> {
    let stats = env.operator_stats()?;
    Some((
        stats["pairs_made"].as_u64()?,
        stats["pairs_missed"].as_u64()?,
    ))
}

/// Whether the connection just made is on the path the lane claims (`paired`: in
/// memory; else the kernel's); says how it knows.
fn check(env: &Env, before: Option<(u64, u64)>, paired: bool) -> Result<String, String> {
    if let (Some((made0, missed0)), Some((made, missed))) = (before, pairs(env)) {
        let (made, missed) = (made - made0, missed - missed0);
        let figure = format!("pairs_made +{made}, pairs_missed +{missed}");
        return match (paired, made, missed) {
            (true, 1, 0) | (false, 0, _) => Ok(figure),
            (true, ..) => Err(format!("the connection did not pair ({figure})")),
            (false, ..) => Err(format!("pairing is off, yet {figure}")),
        };
    }
    // The kernel's view: a paired connection's two kernel sockets are closed once the
    // pair is made (shortly after the connect returns); on the kernel path both ends
    // stay open, established.
    let port = env.published.echo;
    let want = if paired { 0 } else { 2 };
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let Some(open) = established(port) else {
            return Ok("not verified (no pairing counters, no /proc/net/tcp)".into());
        };
        let figure = format!("{open} established kernel connection(s) on published port {port}");
        if open == want {
            return Ok(figure);
        }
        if Instant::now() >= deadline {
            return Err(match paired {
                true => format!("the connection did not pair ({figure})"),
                false => format!("the kernel lane is not on the kernel path ({figure})"),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// ESTABLISHED TCP connections (IPv4 and IPv6) with `port` at either end, from the
/// kernel's table; `None` where there is no such table (not Linux).
fn established(port: u16) -> Option<usize> {
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let mut found = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        let open = text
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 3 && f[3] == "01")
            .filter(|f| port_of(f[1]) == Some(port) || port_of(f[2]) == Some(port))
            .count();
        *found.get_or_insert(0) += open;
    }
    found
}
