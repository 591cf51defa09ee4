//! `idle_wakeups`: one guest holding many connected idle sockets (a read pending on
//! each) for a few seconds; wake-ups per second of the sidecar's threads plus that
//! guest's thread. Push mode should not wake at all; poll mode re-polls every socket on
//! its timer, as the old design did.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use guest_client::{UnixListener, UnixStream};
use sidecar_protocol::{Endpoint, ListenParams, WriteParams};

use crate::env::Env;
use crate::osstat::{self, ThreadSample};
use crate::result::RowResult;

const GUEST_THREAD: &str = "idle-guest";

pub fn measure(env: &Env, poll: bool, sockets: usize, duration: Duration) -> RowResult {
    let tag = if poll { "poll" } else { "push" };
    // The control guest: the idle guest connects to it; one byte from it ends the run.
    let mut control = env.connector.client(false);
    let stop_path = format!("/bench/idle-stop-{tag}");
    control
        .call(&ListenParams::new(Endpoint::unix(stop_path.clone())))
        .expect("control listen");
    let (ready_tx, ready) = mpsc::channel();
    let idle_path = format!("/bench/idle-{tag}");
    let guest = env
        .connector
        .spawn(GUEST_THREAD, poll, move |lp| async move {
            let listener = UnixListener::bind_with_backlog(&lp, &idle_path, Some(65_535)).unwrap();
            let mut readers = Vec::new();
            for _ in 0..sockets / 2 {
                let client = UnixStream::connect(&lp, &idle_path).await.unwrap();
                let (server, _) = listener.accept().await.unwrap();
                for stream in [client, server] {
                    readers.push(lp.spawn(async move {
                        let mut buf = [0u8; 16];
                        let _ = stream.read(&mut buf).await;
                        drop(stream);
                    }));
                }
            }
            let stop = UnixStream::connect(&lp, &stop_path).await.unwrap();
            ready_tx.send(()).unwrap();
            let mut byte = [0u8; 1];
            let _ = stop.read(&mut byte).await;
            drop(readers);
        });
    ready.recv().expect("idle guest set up");
    let stop_socket = loop {
        let (event, _) = control
            .next_event(Some(Instant::now() + Duration::from_secs(30)))
            .expect("control event")
            .expect("accept before the deadline");
        if let sidecar_protocol::EventBody::Accept { socket, .. } = event.body {
            break socket;
        }
    };
    // Let the last calls of the set-up settle before counting.
    std::thread::sleep(Duration::from_millis(200));
    let pid = env.sidecar_pid();
    let embedded = env.process.is_none();
    let sample = || -> Option<ThreadSample> {
        let sidecar = osstat::sample(pid, |comm| !embedded || osstat::is_sidecar_thread(comm))?;
        let guest = osstat::sample(std::process::id(), |comm| comm == GUEST_THREAD)?;
        Some(ThreadSample {
            wakes: sidecar.wakes + guest.wakes,
            cpu_ns: sidecar.cpu_ns + guest.cpu_ns,
            threads: sidecar.threads + guest.threads,
        })
    };
    let before = sample();
    let started = Instant::now();
    std::thread::sleep(duration);
    let after = sample();
    let elapsed = started.elapsed().as_secs_f64();
    let _ = control.send_noreply(
        &WriteParams {
            socket: stop_socket,
        },
        b"!",
    );
    let counters = guest.join();
    let (wakes, source) = match (before, after) {
        (Some(b), Some(a)) => (a.since(b).wakes as f64, "proc_task_status"),
        _ => (
            (counters.timer_wakes + counters.events) as f64,
            "own_counters",
        ),
    };
    RowResult {
        row: "idle_wakeups".into(),
        lane: if poll { "guest-poll" } else { "guest-push" }.into(),
        samples: 1,
        wakeups_per_s: Some(wakes / elapsed),
        sockets: Some(sockets as u64),
        wake_source: Some(source.into()),
        ..RowResult::default()
    }
}
