//! `cpu_per_event`: over a long in-VM echo, the sidecar's CPU µs per pushed event (its
//! threads' CPU clocks when embedded, the whole sidecar process with `--transport unix`),
//! next to the native program's CPU µs per delivered message.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use crate::env::Env;
use crate::osstat;
use crate::result::RowResult;
use crate::rows::echo::{guest_stream, Kind};
use crate::rows::histogram;

pub fn guest_push(env: &Env, round_trips: usize) -> RowResult {
    let mut run = guest_stream(&env.connector, false, Kind::Unix, 64, "cpu");
    run(100, &mut histogram());
    let pid = env.sidecar_pid();
    let embedded = env.process.is_none();
    let select = |comm: &str| !embedded || osstat::is_sidecar_thread(comm);
    let before = osstat::sample(pid, select);
    run(round_trips, &mut histogram());
    let after = osstat::sample(pid, select);
    // Each round trip is two pushed `data` events (to the server, back to the client).
    let events = 2 * round_trips;
    RowResult {
        row: "cpu_per_event".into(),
        lane: "guest-push".into(),
        samples: events as u64,
        cpu_us_per_event: before
            .zip(after)
            .map(|(b, a)| a.since(b).cpu_ns as f64 / 1000.0 / events as f64),
        ..RowResult::default()
    }
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

pub fn host(round_trips: usize) -> RowResult {
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
    let messages = 2 * round_trips;
    RowResult {
        row: "cpu_per_event".into(),
        lane: "host".into(),
        samples: messages as u64,
        cpu_us_per_event: Some(cpu_ns as f64 / 1000.0 / messages as f64),
        ..RowResult::default()
    }
}
