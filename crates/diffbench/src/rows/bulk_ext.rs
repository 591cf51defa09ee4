//! `tcp_bulk_ext`: one TCP stream from a guest through a host kernel socket to the native
//! server process's sink (lane `guest-push`), next to a native client sending to the same
//! sink (lane `host`), GiB/s from the first write to the sink's one-byte receipt for the
//! last byte. Each round opens a fresh connection (Nagle off in both lanes, so the last
//! partial segment never waits for an ACK), sends an 8-byte length and the bytes;
//! the lanes alternate over a few rounds and each reports its median round, as `tcp_bulk`.

use std::io::{self, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::time::Instant;

use guest_client::TcpStream;

use crate::env::Connector;
use crate::result::RowResult;
use crate::rows::median;

pub const ROW: &str = "tcp_bulk_ext";
const CHUNK: usize = 256 * 1024;
const HOST: &str = "127.0.0.1";

/// `rounds` alternating transfers of `total` bytes per lane; the guest lane is left out
/// (its error in `failures`) if its first round fails.
pub fn measure(
    connector: &Connector,
    port: u16,
    total: usize,
    rounds: usize,
    failures: &mut Vec<String>,
) -> Vec<RowResult> {
    let (mut host_rounds, mut guest_rounds) = (Vec::new(), Vec::new());
    let mut guest_ok = true;
    for _ in 0..rounds {
        host_rounds.push(host(port, total).expect("native transfer"));
        if guest_ok {
            match guest(connector, port, total) {
                Ok(v) => guest_rounds.push(v),
                Err(e) => {
                    failures.push(format!("{ROW} guest-push: {e}"));
                    guest_ok = false;
                }
            }
        }
    }
    let row = |lane: &str, rounds: Vec<f64>| RowResult {
        row: ROW.into(),
        lane: lane.into(),
        samples: rounds.len() as u64,
        gib_per_s: median(rounds),
        ..RowResult::default()
    };
    let mut rows = vec![row("host", host_rounds)];
    if !guest_rounds.is_empty() {
        rows.push(row("guest-push", guest_rounds));
    }
    rows
}

fn gib_per_s(total: usize, seconds: f64) -> f64 {
    total as f64 / seconds / (1u64 << 30) as f64
}

fn guest(connector: &Connector, port: u16, total: usize) -> io::Result<f64> {
    let lp = connector.guest(false);
    lp.block_on(async {
        let stream = TcpStream::connect(&lp, HOST, port).await?;
        stream.set_nodelay(true)?;
        let chunk = vec![0x5au8; CHUNK];
        let start = Instant::now();
        stream.write_all(&(total as u64).to_le_bytes()).await?;
        let mut sent = 0;
        while sent < total {
            let n = CHUNK.min(total - sent);
            stream.write_all(&chunk[..n]).await?;
            sent += n;
        }
        let mut done = [0u8; 1];
        stream.read_exact(&mut done).await?;
        Ok(gib_per_s(total, start.elapsed().as_secs_f64()))
    })
}

fn host(port: u16, total: usize) -> io::Result<f64> {
    let mut stream = StdTcpStream::connect((HOST, port))?;
    stream.set_nodelay(true)?;
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    stream.write_all(&(total as u64).to_le_bytes())?;
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        stream.write_all(&chunk[..n])?;
        sent += n;
    }
    let mut done = [0u8; 1];
    stream.read_exact(&mut done)?;
    Ok(gib_per_s(total, start.elapsed().as_secs_f64()))
}
