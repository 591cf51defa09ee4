//! `cpu_per_event`: over a long in-VM echo, the sidecar's CPU µs per pushed event (its
//! threads' CPU clocks when embedded, the whole sidecar process with `--transport unix`),
//! next to the native program's CPU µs per delivered message.
//!
//! Both lanes run in alternating rounds and report the median round: on a small VM one
//! lane's figure moves by 3× with the vCPUs' idle state, and a single long run of each
//! lane would compare two different machine states.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use crate::env::Env;
use crate::osstat;
use crate::result::RowResult;
use crate::rows::echo::{guest_stream, Kind};
use crate::rows::{histogram, median, Runner};

/// `rounds` alternating rounds of `round_trips` 64 B echoes in each lane: the host lane's
/// row and the guest-push lane's row, each the median round.
pub fn measure(env: &Env, round_trips: usize, rounds: usize) -> Vec<RowResult> {
    let mut guest = guest_stream(&env.connector, false, Kind::Unix, 64, "cpu");
    guest(100, &mut histogram());
    let (mut host_rounds, mut guest_rounds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        host_rounds.push(host_round(round_trips));
        if let Some(v) = guest_round(env, &mut guest, round_trips) {
            guest_rounds.push(v);
        }
    }
    // Each round trip is two messages: two pushed `data` events in the guest lane (to the
    // server, back to the client), two delivered messages in the host lane.
    let events = (2 * round_trips * rounds) as u64;
    vec![
        RowResult {
            row: "cpu_per_event".into(),
            lane: "host".into(),
            samples: events,
            cpu_us_per_event: median(host_rounds),
            ..RowResult::default()
        },
        RowResult {
            row: "cpu_per_event".into(),
            lane: "guest-push".into(),
            samples: events,
            cpu_us_per_event: median(guest_rounds),
            ..RowResult::default()
        },
    ]
}

/// The sidecar's CPU µs per pushed event over one round (`None` without /proc).
fn guest_round(env: &Env, run: &mut Runner, round_trips: usize) -> Option<f64> {
    let pid = env.sidecar_pid();
    let embedded = env.process.is_none();
    let select = |comm: &str| !embedded || osstat::is_sidecar_thread(comm);
    let before = osstat::sample(pid, select);
    run(round_trips, &mut histogram());
    let after = osstat::sample(pid, select)?;
    Some(after.since(before?).cpu_ns as f64 / 1000.0 / (2 * round_trips) as f64)
}

/// CPU time of the calling thread (portable: Linux and macOS have this clock).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The native program's CPU µs per delivered message over one round.
fn host_round(round_trips: usize) -> f64 {
    let (mut client, mut server) = UnixStream::pair().unwrap();
    let echo = thread::spawn(move || {
        let start = thread_cpu_ns();
        let mut buf = [0u8; 64];
        while server.read_exact(&mut buf).is_ok() {
            if server.write_all(&buf).is_err() {
                break;
            }
        }
        thread_cpu_ns() - start
    });
    let driver = thread::spawn(move || {
        let start = thread_cpu_ns();
        let mut buf = [0u8; 64];
        for _ in 0..round_trips {
            client.write_all(&[7u8; 64]).unwrap();
            client.read_exact(&mut buf).unwrap();
        }
        thread_cpu_ns() - start
    });
    let cpu_ns = driver.join().unwrap() + echo.join().unwrap();
    cpu_ns as f64 / 1000.0 / (2 * round_trips) as f64
}
