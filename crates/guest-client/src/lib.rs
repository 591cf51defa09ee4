//! The Rust guest client of the networking sidecar.
//!
//! A sandboxed guest reaches the network only through the sidecar, in two ways: **sync
//! calls** that freeze the guest until the answer comes, and **events** the sidecar
//! pushes as sockets become ready. This crate gives a Rust guest both, over any
//! transport, and a small runtime on top that turns pushed events into std-shaped socket
//! handles:
//!
//! - [`transport`]: what carries frames: in-process ([`InProcTransport`]), a Unix socket
//!   ([`connect_unix`]), or any `Read` + `Write` pair ([`StreamTransport`], e.g. a child
//!   sidecar's stdio).
//! - [`Client`]: `hello` (in [`Client::connect`]), a blocking typed [`Client::call`],
//!   [`Client::send_noreply`], and the event stream ([`Client::next_event`]). Events that
//!   arrive while a call waits are queued in order, never lost; a broken transport fails
//!   the pending call, every later call and the event stream with `ECONNRESET`.
//! - [`GuestLoop`]: a single-thread executor whose idle state is "blocked on the next
//!   pushed event", with [`TcpListener`], [`TcpStream`], [`UnixListener`], [`UnixStream`]
//!   and [`UdpSocket`]. No timers in push mode. Over a poll-mode session
//!   ([`Client::hello_params_poll`]) the same loop and handles reproduce the old
//!   polyfill, re-polling on a timer ([`GuestLoop::with_poll_interval`]): the measured
//!   baseline.
//!
//! It depends only on the protocol crate and the in-process pipe: never on the sidecar,
//! never on an async runtime, so a guest links only what a guest needs.
//!
//! ```no_run
//! use guest_client::{Client, GuestLoop, InProcTransport, TcpListener};
//!
//! # fn run(end: inproc_pipe::End) -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(InProcTransport::new(end), Client::hello_params("dev", "s3cret"))?;
//! let lp = GuestLoop::new(client)?;
//! lp.block_on(async {
//!     let listener = TcpListener::bind(&lp, "127.0.0.1", 8080)?;
//!     let (stream, _peer) = listener.accept().await?;
//!     let mut buf = [0; 1024];
//!     loop {
//!         let n = stream.read(&mut buf).await?;
//!         if n == 0 {
//!             break;
//!         }
//!         stream.write_all(&buf[..n]).await?;
//!     }
//!     std::io::Result::Ok(())
//! })?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod guest_loop;
pub mod transport;

pub use client::{Client, EventFrame, CLIENT_CAPABILITIES, LOCAL_SEQ};
pub use error::{error_code, ClientError};
pub use guest_loop::{
    GuestLoop, JoinHandle, LoopCounters, LoopHandle, TcpListener, TcpStream, UdpSocket,
    UnixListener, UnixStream, DEFAULT_POLL_INTERVAL,
};
#[cfg(unix)]
pub use transport::connect_unix;
pub use transport::{InProcTransport, StreamTransport, Transport, TransportError};

/// The wire types a guest needs alongside the client (ids, addresses, events, codes).
pub use sidecar_protocol as protocol;
