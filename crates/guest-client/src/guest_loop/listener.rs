//! Listener handles: [`TcpListener`] and [`UnixListener`].
//!
//! The sidecar pushes an `accept` event for every connection it accepts for a server;
//! the loop parks the new socket in the server's backlog (its early `data` is buffered)
//! until the program calls `accept()`. Taking it is what frees its place in the server's
//! backlog at the sidecar: in push mode an accepted socket counts against the backlog
//! until the guest *acknowledges* it, so `accept()` sends `net.credit {socket, bytes: 0}`
//! (`noreply`). A slow program thereby applies back-pressure to connecting peers, and a
//! fast one never fills its backlog. In poll mode the `accept` is only delivered when the
//! program asks for one (`net.server_poll`), and a polled `accept` counts as taken, so
//! nothing is sent.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use sidecar_protocol::{Address, Endpoint, ListenParams, ServerId, SocketId};

use super::stream::{TcpStream, UnixStream};
use super::LoopHandle;
use crate::error::wire_to_io;

/// The shared implementation of both listener types.
struct ListenerCore {
    lp: LoopHandle,
    id: ServerId,
    local: Address,
}

impl ListenerCore {
    fn bind(lp: &LoopHandle, endpoint: Endpoint, backlog: Option<u32>) -> io::Result<Self> {
        let result = lp.shared().call(&ListenParams { endpoint, backlog })?;
        lp.shared().table().insert_server(result.server);
        Ok(ListenerCore {
            lp: lp.clone(),
            id: result.server,
            local: result.local,
        })
    }

    /// The next accepted socket, claimed from the backlog: `(id, local, remote)`. The
    /// caller wraps it in a handle, then acknowledges it ([`Self::acknowledge`]).
    async fn accept(&self) -> io::Result<(SocketId, Address, Address)> {
        let shared = self.lp.shared();
        let (socket, local, remote) = poll_fn(|cx| {
            let mut table = shared.table();
            let server = table.server_mut(self.id).map_err(wire_to_io)?;
            let socket = match server.poll_accept(cx.waker()) {
                Poll::Ready(result) => result.map_err(wire_to_io)?,
                Poll::Pending => return Poll::Pending,
            };
            let (local, remote) = table.claim(socket).ok_or_else(|| {
                io::Error::other(format!("accepted socket {} has no state", socket.0))
            })?;
            Poll::Ready(Ok::<_, io::Error>((socket, local, remote)))
        })
        .await?;
        Ok((socket, local, remote))
    }

    /// Tells the sidecar the program took the socket (it stops counting against the
    /// server's backlog): any call naming the socket does; a zero credit grant costs
    /// nothing and asks for no reply. Not needed in poll mode.
    fn acknowledge(&self, socket: SocketId) -> io::Result<()> {
        let shared = self.lp.shared();
        if shared.acknowledges_accepts() {
            shared.grant(socket, 0)?;
        }
        Ok(())
    }
}

impl Drop for ListenerCore {
    fn drop(&mut self) {
        self.lp.shared().release_server(self.id);
    }
}

macro_rules! listener_type {
    ($(#[$doc:meta])* $name:ident => $stream:ident) => {
        $(#[$doc])*
        pub struct $name {
            core: ListenerCore,
        }

        impl $name {
            /// Waits for the next connection; returns it and the peer's address.
            pub async fn accept(&self) -> io::Result<($stream, Address)> {
                let (socket, local, remote) = self.core.accept().await?;
                // Wrapped first: if the acknowledgement fails, dropping it cleans up.
                let stream = $stream::from_accepted(&self.core.lp, socket, local, remote.clone());
                self.core.acknowledge(socket)?;
                Ok((stream, remote))
            }

            /// The bound address (with the actual port when 0 was asked).
            pub fn local_addr(&self) -> Address {
                self.core.local.clone()
            }

            /// The sidecar's id for this server.
            pub fn id(&self) -> ServerId {
                self.core.id
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("id", &self.core.id.0)
                    .field("local", &self.core.local)
                    .finish()
            }
        }
    };
}

listener_type! {
    /// A TCP listener inside the guest's VM. Dropping it closes the server.
    TcpListener => TcpStream
}

listener_type! {
    /// A Unix stream listener on a VM path. Dropping it closes the server.
    UnixListener => UnixStream
}

impl TcpListener {
    /// Listens on `host:port` inside the VM (port 0: an ephemeral port; host `"::"`:
    /// dual-stack). A blocking call; `EADDRINUSE` if taken.
    pub fn bind(lp: &LoopHandle, host: &str, port: u16) -> io::Result<TcpListener> {
        Self::bind_with_backlog(lp, host, port, None)
    }

    /// As [`bind`](Self::bind), with a backlog (default 511).
    pub fn bind_with_backlog(
        lp: &LoopHandle,
        host: &str,
        port: u16,
        backlog: Option<u32>,
    ) -> io::Result<TcpListener> {
        let core = ListenerCore::bind(lp, Endpoint::inet(host, port), backlog)?;
        Ok(TcpListener { core })
    }
}

impl UnixListener {
    /// Listens on a VM path (relative to hello's `cwd`). A blocking call.
    pub fn bind(lp: &LoopHandle, path: &str) -> io::Result<UnixListener> {
        Self::bind_with_backlog(lp, path, None)
    }

    /// As [`bind`](Self::bind), with a backlog (default 511).
    pub fn bind_with_backlog(
        lp: &LoopHandle,
        path: &str,
        backlog: Option<u32>,
    ) -> io::Result<UnixListener> {
        let core = ListenerCore::bind(lp, Endpoint::unix(path), backlog)?;
        Ok(UnixListener { core })
    }
}
