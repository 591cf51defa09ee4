//! `tcp_bulk`: one in-VM guest → guest TCP stream (lane `guest-push`) next to host
//! loopback TCP (lane `host`), GiB/s from the first write to the last byte read.
//! The lanes alternate over a few rounds and each reports its median round.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use guest_client::{TcpListener as GTcpListener, TcpStream};

use crate::env::Env;
use crate::result::RowResult;
use crate::rows::{median, port_of};

const CHUNK: usize = 256 * 1024;

/// `rounds` alternating transfers of `total` bytes per lane: the host row and the
/// guest-push row, each the median round (`samples` = rounds).
pub fn measure(env: &Env, total: usize, rounds: usize) -> Vec<RowResult> {
    let (mut host_rounds, mut guest_rounds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        host_rounds.push(host(total));
        guest_rounds.push(guest_push(env, total));
    }
    let row = |lane: &str, rounds: Vec<f64>| RowResult {
        row: "tcp_bulk".into(),
        lane: lane.into(),
        samples: rounds.len() as u64,
        gib_per_s: median(rounds),
        ..RowResult::default()
    };
    vec![row("host", host_rounds), row("guest-push", guest_rounds)]
}

fn gib_per_s(total: usize, seconds: f64) -> f64 {
    total as f64 / seconds / (1u64 << 30) as f64
}

fn guest_push(env: &Env, total: usize) -> f64 {
    let (port_tx, port_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let reader = env
        .connector
        .spawn("bulk-reader", false, move |lp| async move {
            let listener = GTcpListener::bind(&lp, "127.0.0.1", 0).unwrap();
            port_tx.send(port_of(&listener.local_addr())).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0;
            while got < total {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the stream ended early");
                got += n;
            }
            done_tx.send(Instant::now()).unwrap();
        });
    let port = port_rx.recv().unwrap();
    let (start_tx, start_rx) = mpsc::channel();
    let writer = env
        .connector
        .spawn("bulk-writer", false, move |lp| async move {
            let stream = TcpStream::connect(&lp, "127.0.0.1", port).await.unwrap();
            let chunk = vec![0x5au8; CHUNK];
            start_tx.send(Instant::now()).unwrap();
            let mut sent = 0;
            while sent < total {
                let n = CHUNK.min(total - sent);
                stream.write_all(&chunk[..n]).await.unwrap();
                sent += n;
            }
        });
    let start = start_rx.recv().unwrap();
    let done = done_rx.recv().unwrap();
    writer.join();
    reader.join();
    gib_per_s(total, done.duration_since(start).as_secs_f64())
}

fn host(total: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < total {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
        Instant::now()
    });
    let mut stream = StdTcpStream::connect(addr).unwrap();
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        stream.write_all(&chunk[..n]).unwrap();
        sent += n;
    }
    let done = reader.join().unwrap();
    gib_per_s(total, done.duration_since(start).as_secs_f64())
}
