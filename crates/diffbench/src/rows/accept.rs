//! `unix_accept`: connect + close, measured from the client's connect to the server's
//! accept. Client and server are separate guests (threads); the server stamps each accept
//! and hands the stamp back (`Instant` is one monotonic clock for every thread).
//!
//! Connections arrive paced, [`GAP`] apart, as from independent clients: back to back,
//! the next connect would land while a poll-mode server is still re-polling after the
//! previous accept, and the poll lane would measure its burst instead of its timer.

use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use guest_client::{UnixListener, UnixStream};

use super::Runner;
use crate::env::Connector;

/// Time between one accept and the next connect, in every lane.
pub const GAP: Duration = Duration::from_millis(1);

pub fn guest(connector: &Connector, poll: bool) -> Runner {
    let path = format!("/bench/accept-{}.sock", if poll { "poll" } else { "push" });
    let (stamps_tx, stamps) = mpsc::channel::<Instant>();
    let (ready_tx, ready) = mpsc::channel();
    let server_path = path.clone();
    let server = connector.spawn("accept-server", poll, move |lp| async move {
        let listener = UnixListener::bind(&lp, &server_path).unwrap();
        ready_tx.send(()).unwrap();
        while let Ok((stream, _)) = listener.accept().await {
            if stamps_tx.send(Instant::now()).is_err() {
                return;
            }
            drop(stream);
        }
    });
    ready.recv().unwrap();
    let lp = connector.guest(poll);
    Box::new(move |n, hist| {
        let _server = &server;
        for _ in 0..n {
            thread::sleep(GAP);
            let start = Instant::now();
            let stream = lp.block_on(async { UnixStream::connect(&lp, &path).await.unwrap() });
            drop(stream);
            let accepted = stamps
                .recv_timeout(Duration::from_secs(30))
                .expect("accept");
            hist.record(accepted.saturating_duration_since(start).as_nanos() as u64)
                .unwrap();
        }
    })
}

pub fn host() -> Runner {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accept.sock");
    let listener = StdUnixListener::bind(&path).unwrap();
    let (stamps_tx, stamps) = mpsc::channel::<Instant>();
    thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            if stamps_tx.send(Instant::now()).is_err() {
                return;
            }
            drop(stream);
        }
    });
    Box::new(move |n, hist| {
        let _keep = &dir;
        for _ in 0..n {
            thread::sleep(GAP);
            let start = Instant::now();
            drop(StdUnixStream::connect(&path).unwrap());
            let accepted = stamps
                .recv_timeout(Duration::from_secs(30))
                .expect("accept");
            hist.record(accepted.saturating_duration_since(start).as_nanos() as u64)
                .unwrap();
        }
    })
}
