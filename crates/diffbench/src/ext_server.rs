//! The native peer of the `*_ext` rows, `scale_10k` and `tcp_bulk_ext`: a separate
//! process (this binary re-executed with the hidden `--ext-server` flag, see
//! [`crate::selfexec`]) serving on the host's loopback, so a guest reaches it only
//! through the sidecar's host kernel sockets, and a native client in the `host` lane
//! talks to the very same servers across the same process boundary.
//!
//! It binds, on `127.0.0.1` ephemeral ports: a TCP echo and an HTTP/1.1 keep-alive
//! server (a thread per connection, as the in-VM rows' native servers), a UDP echo (one
//! thread), a TCP sink (length-prefixed transfers, one byte back when each is complete),
//! and a second TCP echo on a tokio event loop for `scale_10k`'s 10,000 connections
//! (a thread each would not scale). It prints its ports as one JSON line on stdout and
//! exits when its stdin closes, so it never outlives the bench, even one that crashed.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::rows::http::serve_keep_alive;

/// The server's ports, all on `127.0.0.1`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExtPorts {
    /// TCP echo, a thread per connection (`tcp_echo_ext`).
    pub tcp_echo: u16,
    /// UDP echo (`udp_echo_ext`).
    pub udp_echo: u16,
    /// HTTP/1.1 keep-alive GET (`http_get_ext`).
    pub http: u16,
    /// TCP sink: an 8-byte little-endian length, that many bytes, one byte back
    /// (`tcp_bulk_ext`).
    pub sink: u16,
    /// TCP echo on an event loop (`scale_10k`).
    pub scale_echo: u16,
}

/// The running server process; dropping it closes its stdin, which ends it.
pub struct ExtServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pub ports: ExtPorts,
}

impl ExtServer {
    /// Starts the server process and waits for its ports.
    pub fn start() -> Result<ExtServer> {
        let mut child = crate::selfexec::command("--ext-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the native server process")?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let read = stdout.read_line(&mut line);
        // From here on, dropping `server` ends the child whatever happens below.
        let mut server = ExtServer {
            child,
            stdin,
            ports: ExtPorts {
                tcp_echo: 0,
                udp_echo: 0,
                http: 0,
                sink: 0,
                scale_echo: 0,
            },
        };
        if read? == 0 {
            bail!("the native server process exited before printing its ports");
        }
        server.ports = serde_json::from_str(line.trim()).context("the native server's ports")?;
        Ok(server)
    }
}

impl Drop for ExtServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The child's side (`--ext-server`): serve until stdin closes.
pub fn serve_main() -> Result<()> {
    crate::fdlimit::raise_to_hard();
    let ports = ExtPorts {
        tcp_echo: serve_tcp("tcp-echo", echo)?,
        udp_echo: serve_udp()?,
        http: serve_tcp("http", serve_keep_alive)?,
        sink: serve_tcp("sink", sink)?,
        scale_echo: scale::serve()?,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&ports)?)?;
    stdout.flush()?;
    drop(stdout);
    // Returning from main ends the process, and every server thread with it.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    Ok(())
}

/// A listener on an ephemeral loopback port, each connection served by `serve` on a
/// thread of its own; returns the port.
fn serve_tcp(name: &str, serve: fn(TcpStream)) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let name = name.to_owned();
    thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_nodelay(true);
                let _ = thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || serve(stream));
            }
        })?;
    Ok(port)
}

fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Transfers until the client closes: an 8-byte little-endian length, the bytes, then
/// one byte back once the last of them was read.
fn sink(mut stream: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = [0u8; 8];
    while stream.read_exact(&mut head).is_ok() {
        let mut left = u64::from_le_bytes(head);
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match stream.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n as u64,
            }
        }
        if stream.write_all(b"!").is_err() {
            return;
        }
    }
}

fn serve_udp() -> Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    thread::Builder::new()
        .name("udp-echo".into())
        .spawn(move || {
            let mut buf = [0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                crate::stages::stamp_peer(&mut buf[..n], stage_trace::now_ns());
                let _ = socket.send_to(&buf[..n], from);
            }
        })?;
    Ok(port)
}

/// `scale_10k`'s echo: every connection a task on one current-thread tokio loop.
mod scale {
    use super::*;
    use tokio::net::{TcpSocket, TcpStream};

    /// Pending connections the kernel queues for us: 100 guests connect at once.
    const BACKLOG: u32 = 4096;

    pub fn serve() -> Result<u16> {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("scale-echo".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let bound = (|| {
                        let socket = TcpSocket::new_v4()?;
                        socket.bind("127.0.0.1:0".parse().expect("an address"))?;
                        socket.listen(BACKLOG)
                    })();
                    let listener = match bound {
                        Ok(listener) => listener,
                        Err(e) => return tx.send(Err(e)).expect("waiting"),
                    };
                    tx.send(listener.local_addr().map(|a| a.port()))
                        .expect("waiting");
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                let _ = stream.set_nodelay(true);
                                tokio::spawn(echo(stream));
                            }
                            Err(e) => {
                                // Out of descriptors, most likely: say so, let some close.
                                eprintln!("ext-server: scale echo accept: {e}");
                                thread::sleep(std::time::Duration::from_millis(10));
                            }
                        }
                    }
                })
            })?;
        Ok(rx.recv().context("the scale echo thread")??)
    }

    async fn echo(stream: TcpStream) {
        let mut buf = [0u8; 1024];
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            let n = match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => return,
            };
            let mut sent = 0;
            while sent < n {
                if stream.writable().await.is_err() {
                    return;
                }
                match stream.try_write(&buf[sent..n]) {
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    }
}
