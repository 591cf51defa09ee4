//! Stream socket handles: [`TcpStream`] and [`UnixStream`], shaped like std's and tokio's.
//!
//! Both are the same thing underneath (a sidecar socket id whose events the loop routes
//! here), so one private core does the work and the two public types only differ in how
//! they connect. Reads wait for `data` events; dropping a handle destroys the socket.
//! Errors are `io::Error`s whose kind matches the POSIX code and whose inner error is the
//! [`WireError`](sidecar_protocol::WireError) (see [`crate::error_code`]).
//!
//! # Writing: back-pressure without a round trip per write
//!
//! The sidecar buffers a socket's writes until the peer takes them; past a high-water
//! mark a blocking `net.write`'s reply says `need_drain` and a `drain` event follows once
//! the buffer falls below it; past a hard limit a write fails (`ENOBUFS`, nothing
//! accepted). A `noreply` write learns none of this. So `write_all` sends `noreply`
//! writes of at most 256 KiB, but once 256 KiB went out since the last blocking write,
//! the next one is blocking; if its reply says `need_drain`, writing waits for `drain`
//! before sending more. The sidecar's buffer for the socket thereby stays within about
//! the high-water mark plus two chunks (well under the hard limit), so bytes are never
//! refused, and a small-message echo pays one round trip per 256 KiB, not per write.
//! (256 KiB, measured: 64 KiB leaves a bulk stream over a Unix-socket transport waiting
//! on round trips; 1 MiB in flight falls out of cache and halves in-process throughput.)

use std::future::poll_fn;
use std::io;
use std::time::Duration;

use sidecar_protocol::{
    Address, ConnectParams, DestroyParams, Endpoint, SetKeepAliveParams, SetNoDelayParams,
    ShutdownParams, SocketId, WriteParams,
};

use super::LoopHandle;
use crate::error::{io_error, wire_to_io};

/// Bytes sent `noreply` after which the next write is a blocking call (flow control).
const SYNC_WRITE_EVERY: u64 = 256 * 1024;

/// The shared implementation of both stream types.
struct StreamCore {
    lp: LoopHandle,
    id: SocketId,
    local: Address,
    remote: Address,
}

impl StreamCore {
    async fn connect(lp: &LoopHandle, endpoint: Endpoint) -> io::Result<StreamCore> {
        let shared = lp.shared();
        let params = ConnectParams::new(endpoint);
        if !shared.nonblocking_connect() {
            let result = shared.call(&params)?;
            let (id, local, remote) = (result.socket, result.local, result.remote);
            shared
                .table()
                .insert_stream(id, local.clone(), remote.clone());
            return Ok(StreamCore {
                lp: lp.clone(),
                id,
                local,
                remote,
            });
        }
        let request = shared.send_noreply(&params, &[])?;
        shared.table().start_connect(request);
        let mut in_flight = ConnectInFlight {
            lp,
            request,
            settled: false,
        };
        let settled = poll_fn(|cx| shared.table().poll_connect(request, cx.waker())).await;
        in_flight.settled = true;
        let id = settled.map_err(wire_to_io)?;
        let (local, remote) = {
            let mut table = shared.table();
            let state = table.stream_mut(id).map_err(wire_to_io)?;
            (state.local.clone(), state.remote.clone())
        };
        Ok(StreamCore {
            lp: lp.clone(),
            id,
            local,
            remote,
        })
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let shared = self.lp.shared();
        let n = poll_fn(|cx| {
            let mut table = shared.table();
            let state = table.stream_mut(self.id).map_err(wire_to_io)?;
            state.poll_read(buf, cx.waker()).map_err(wire_to_io)
        })
        .await?;
        // Consumed bytes go back to the sidecar as credit, in batches.
        let grant = shared
            .table()
            .stream_mut(self.id)
            .ok()
            .and_then(|state| state.take_grant(shared.credit_threshold()));
        if let Some(bytes) = grant {
            shared.grant(self.id, bytes)?;
        }
        Ok(n)
    }

    async fn read_exact(&self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read(buf).await? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer ended the stream before the buffer was filled",
                    ))
                }
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    async fn read_to_end(&self, out: &mut Vec<u8>) -> io::Result<usize> {
        let start = out.len();
        let mut chunk = vec![0; 64 * 1024];
        loop {
            match self.read(&mut chunk).await? {
                0 => return Ok(out.len() - start),
                n => out.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let shared = self.lp.shared();
        let params = WriteParams { socket: self.id };
        if buf.is_empty() {
            return shared
                .table()
                .stream_mut(self.id)
                .and_then(|state| state.check_writable())
                .map_err(wire_to_io);
        }
        for chunk in buf.chunks(shared.write_chunk()) {
            // A blocking write said `need_drain`: nothing more until `drain`.
            poll_fn(|cx| {
                let mut table = shared.table();
                let state = table.stream_mut(self.id).map_err(wire_to_io)?;
                state.poll_drained(cx.waker()).map_err(wire_to_io)
            })
            .await?;
            let sync = {
                let mut table = shared.table();
                let state = table.stream_mut(self.id).map_err(wire_to_io)?;
                state.check_writable().map_err(wire_to_io)?;
                state.sync_due(chunk.len(), SYNC_WRITE_EVERY)
            };
            if !sync {
                shared.send_noreply(&params, chunk)?;
                continue;
            }
            shared.count(|c| c.sync_writes += 1);
            let (result, _) = shared.call_with_payload(&params, chunk)?;
            if result.need_drain {
                shared.count(|c| c.drain_waits += 1);
                if let Ok(state) = shared.table().stream_mut(self.id) {
                    state.set_need_drain();
                }
            }
        }
        Ok(())
    }

    async fn shutdown(&self) -> io::Result<()> {
        let shared = self.lp.shared();
        let needed = shared
            .table()
            .stream_mut(self.id)
            .and_then(|state| state.check_shutdown())
            .map_err(wire_to_io)?;
        if needed {
            shared.call(&ShutdownParams { socket: self.id })?;
            if let Ok(state) = shared.table().stream_mut(self.id) {
                state.set_write_shut();
            }
        }
        Ok(())
    }

    fn set_nodelay(&self, enable: bool) -> io::Result<()> {
        let params = SetNoDelayParams {
            socket: self.id,
            enable,
        };
        self.lp.shared().call(&params)?;
        Ok(())
    }

    fn set_keepalive(&self, enable: bool, initial_delay: Option<Duration>) -> io::Result<()> {
        let params = SetKeepAliveParams {
            socket: self.id,
            enable,
            initial_delay_ms: initial_delay
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        self.lp.shared().call(&params)?;
        Ok(())
    }

    fn set_paused(&self, paused: bool) -> io::Result<()> {
        let shared = self.lp.shared();
        let grant = {
            let mut table = shared.table();
            let state = table.stream_mut(self.id).map_err(wire_to_io)?;
            state.set_paused(paused);
            state.take_grant(shared.credit_threshold())
        };
        if let Some(bytes) = grant {
            shared.grant(self.id, bytes)?;
        }
        Ok(())
    }

    fn is_paused(&self) -> bool {
        let shared = self.lp.shared();
        let mut table = shared.table();
        table
            .stream_mut(self.id)
            .is_ok_and(|state| state.is_paused())
    }
}

/// A non-blocking connect being awaited. Dropped before it settles (the program gave up
/// waiting), it makes sure a connection that still arrives is destroyed.
struct ConnectInFlight<'a> {
    lp: &'a LoopHandle,
    request: u64,
    settled: bool,
}

impl Drop for ConnectInFlight<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let shared = self.lp.shared();
        let orphan = shared.table().abandon_connect(self.request);
        if let Some(socket) = orphan {
            let _ = shared.send_noreply(&DestroyParams::new(socket), &[]);
        }
    }
}

impl Drop for StreamCore {
    fn drop(&mut self) {
        self.lp.shared().release_stream(self.id);
    }
}

/// Where a connect goes, checked before anything is sent.
fn inet(host: &str, port: u16) -> io::Result<Endpoint> {
    if host.is_empty() {
        return Err(io_error(
            sidecar_protocol::ErrorCode::Einval,
            "empty host name",
        ));
    }
    Ok(Endpoint::inet(host, port))
}

macro_rules! stream_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            core: StreamCore,
        }

        impl $name {
            pub(crate) fn from_accepted(
                lp: &LoopHandle,
                id: SocketId,
                local: Address,
                remote: Address,
            ) -> $name {
                $name {
                    core: StreamCore {
                        lp: lp.clone(),
                        id,
                        local,
                        remote,
                    },
                }
            }

            /// Reads what has arrived into `buf`, waiting for a `data` event if nothing
            /// has. `Ok(0)` once the peer ended the stream (and everything was read).
            pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
                self.core.read(buf).await
            }

            /// Reads exactly `buf.len()` bytes (`UnexpectedEof` if the stream ends first).
            pub async fn read_exact(&self, buf: &mut [u8]) -> io::Result<()> {
                self.core.read_exact(buf).await
            }

            /// Reads until the peer ends the stream; returns the bytes appended.
            pub async fn read_to_end(&self, out: &mut Vec<u8>) -> io::Result<usize> {
                self.core.read_to_end(out).await
            }

            /// Sends all of `buf`, mostly as `noreply` writes; one write per 64 KiB is a
            /// blocking call, and if the sidecar's buffer for this socket passed its
            /// high-water mark, this waits for `drain` before sending more (see the
            /// module docs). A `noreply` write the sidecar refuses is reported by this
            /// socket's next operation.
            pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
                self.core.write_all(buf).await
            }

            /// Half-closes: the peer reads end of stream; this side can still read.
            /// Later writes fail with `EPIPE`.
            pub async fn shutdown(&self) -> io::Result<()> {
                self.core.shutdown().await
            }

            /// Node's `setNoDelay(enable)` (a blocking call).
            pub fn set_nodelay(&self, enable: bool) -> io::Result<()> {
                self.core.set_nodelay(enable)
            }

            /// Node's `setKeepAlive(enable, initialDelay)` (a blocking call).
            pub fn set_keepalive(
                &self,
                enable: bool,
                initial_delay: Option<Duration>,
            ) -> io::Result<()> {
                self.core.set_keepalive(enable, initial_delay)
            }

            /// Stops granting credit: once its window is used up the sidecar stops
            /// sending this socket's data (back-pressure to the peer). Reads still
            /// return what already arrived.
            pub fn pause(&self) -> io::Result<()> {
                self.core.set_paused(true)
            }

            /// Grants credit again (including for what was read while paused).
            pub fn resume(&self) -> io::Result<()> {
                self.core.set_paused(false)
            }

            /// Whether [`pause`](Self::pause) is in force.
            pub fn is_paused(&self) -> bool {
                self.core.is_paused()
            }

            /// The peer's address.
            pub fn peer_addr(&self) -> Address {
                self.core.remote.clone()
            }

            /// This socket's address.
            pub fn local_addr(&self) -> Address {
                self.core.local.clone()
            }

            /// The sidecar's id for this socket.
            pub fn id(&self) -> SocketId {
                self.core.id
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("id", &self.core.id.0)
                    .field("local", &self.core.local)
                    .field("remote", &self.core.remote)
                    .finish()
            }
        }
    };
}

stream_type! {
    /// A TCP connection inside the guest's VM (or, later, to a host peer).
    TcpStream
}

stream_type! {
    /// A Unix stream connection (a path in the VM's own namespace).
    UnixStream
}

impl TcpStream {
    /// Connects to `host:port`; `host` is resolved inside the VM (`localhost` included).
    /// Resolves once the connection is established (`ECONNREFUSED` when nobody listens);
    /// other tasks run meanwhile.
    pub async fn connect(lp: &LoopHandle, host: &str, port: u16) -> io::Result<TcpStream> {
        let core = StreamCore::connect(lp, inet(host, port)?).await?;
        Ok(TcpStream { core })
    }
}

impl UnixStream {
    /// Connects to a Unix socket path of the VM (relative to hello's `cwd`).
    pub async fn connect(lp: &LoopHandle, path: &str) -> io::Result<UnixStream> {
        let core = StreamCore::connect(lp, Endpoint::unix(path)).await?;
        Ok(UnixStream { core })
    }
}
