//! The UDP handle: [`UdpSocket`], shaped like std's and tokio's.
//!
//! Datagram boundaries are kept end to end: one `send` is one `dgram.send` frame whose
//! payload is the datagram, one `message` event is one received datagram, and one
//! receive takes exactly one (truncated to the buffer, like std). Sends are `noreply`, as
//! a guest polyfill sends them: UDP promises no delivery, so waiting a round trip per
//! datagram would only add latency. What a send gets wrong arrives later as an `error`
//! event and is reported by the socket's next operation, which is also how Linux reports
//! `ECONNREFUSED` on a connected socket whose peer port is closed. What can be checked
//! before sending (size, a destination) is checked here, so it fails at once.

use std::future::poll_fn;
use std::io;
use std::net::IpAddr;

use sidecar_protocol::{
    Address, BindParams, CreateSocketParams, DgramConnectParams, ErrorCode, SendParams, SocketId,
    UdpType, MAX_UDP_PAYLOAD,
};

use super::udp_state::UdpState;
use super::LoopHandle;
use crate::error::{io_error, wire_to_io};

/// A UDP socket inside the guest's VM. Dropping it closes the socket (`dgram.close`).
pub struct UdpSocket {
    lp: LoopHandle,
    id: SocketId,
}

impl UdpSocket {
    /// Creates a socket and binds it to `host:port` (port 0: an ephemeral port). The
    /// family follows the host: an IPv6 literal makes a `udp6` socket (`"::"` is
    /// dual-stack), anything else `udp4`. Blocking calls; `EADDRINUSE` if taken.
    pub fn bind(lp: &LoopHandle, host: &str, port: u16) -> io::Result<UdpSocket> {
        let udp_type = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => UdpType::Udp6,
            _ => UdpType::Udp4,
        };
        // Created first, so a failed bind closes it (on drop).
        let socket = UdpSocket::unbound(lp, udp_type)?;
        let params = BindParams {
            socket: socket.id,
            host: Some(nonempty(host)?.to_owned()),
            port,
            reuse_addr: false,
        };
        let result = lp.shared().call(&params)?;
        socket.with_state(|state| {
            state.local = Some(result.local);
            Ok(())
        })?;
        Ok(socket)
    }

    /// Creates a socket without binding it (Node's `dgram.createSocket(type)`): the first
    /// send binds it to an ephemeral port. A blocking call.
    pub fn unbound(lp: &LoopHandle, udp_type: UdpType) -> io::Result<UdpSocket> {
        let shared = lp.shared();
        let result = shared.call(&CreateSocketParams { udp_type })?;
        shared.table().insert_udp(result.socket);
        Ok(UdpSocket {
            lp: lp.clone(),
            id: result.socket,
        })
    }

    /// Fixes the peer: [`send`](Self::send) goes there, and a datagram there that finds
    /// no receiver makes a later operation fail with `ECONNREFUSED`. Binds an ephemeral
    /// port first if unbound. A blocking call.
    pub fn connect(&self, host: &str, port: u16) -> io::Result<()> {
        self.with_state(|state| state.check_op().map_err(wire_to_io))?;
        let params = DgramConnectParams {
            socket: self.id,
            host: Some(nonempty(host)?.to_owned()),
            port,
        };
        let result = self.lp.shared().call(&params)?;
        self.with_state(|state| {
            state.local = Some(result.local);
            state.remote = Some(result.remote);
            Ok(())
        })
    }

    /// Sends `buf` as one datagram to `host:port` (resolved inside the VM). Returns its
    /// size; `EMSGSIZE` over 65,507 bytes. Delivery is not confirmed (`noreply`): a
    /// failure is reported by this socket's next operation.
    pub async fn send_to(&self, buf: &[u8], host: &str, port: u16) -> io::Result<usize> {
        let params = SendParams {
            socket: self.id,
            host: Some(nonempty(host)?.to_owned()),
            port: Some(port),
        };
        self.send_datagram(&params, buf)
    }

    /// Sends `buf` as one datagram to the connected peer (`EDESTADDRREQ` if not
    /// connected). As [`send_to`](Self::send_to) otherwise.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let connected = self.with_state(|state| Ok(state.remote.is_some()))?;
        if !connected {
            return Err(io_error(
                ErrorCode::Edestaddrreq,
                "send on a UDP socket that is not connected",
            ));
        }
        let params = SendParams {
            socket: self.id,
            host: None,
            port: None,
        };
        self.send_datagram(&params, buf)
    }

    fn send_datagram(&self, params: &SendParams, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > MAX_UDP_PAYLOAD {
            return Err(io_error(
                ErrorCode::Emsgsize,
                format!(
                    "a datagram of {} bytes exceeds {MAX_UDP_PAYLOAD}",
                    buf.len()
                ),
            ));
        }
        self.with_state(|state| state.check_op().map_err(wire_to_io))?;
        self.lp.shared().send_noreply(params, buf)?;
        Ok(buf.len())
    }

    /// Receives one datagram into `buf` (truncated if larger, the rest discarded) and
    /// returns its size and sender, waiting for a `message` event if none is queued.
    /// Reports a pending error (a failed send, `ECONNREFUSED`) once there is no datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Address)> {
        let shared = self.lp.shared();
        poll_fn(|cx| {
            let mut table = shared.table();
            let state = table.udp_mut(self.id).map_err(wire_to_io)?;
            state.poll_recv(buf, cx.waker()).map_err(wire_to_io)
        })
        .await
    }

    /// As [`recv_from`](Self::recv_from), without the sender.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    /// The bound address (`EINVAL` until a bind or connect made it known: a socket
    /// bound implicitly by its first send does not learn its port).
    pub fn local_addr(&self) -> io::Result<Address> {
        self.with_state(|state| {
            state
                .local
                .clone()
                .ok_or_else(|| io_error(ErrorCode::Einval, "the socket's address is not known yet"))
        })
    }

    /// The connected peer (`ENOTCONN` if not connected).
    pub fn peer_addr(&self) -> io::Result<Address> {
        self.with_state(|state| {
            state
                .remote
                .clone()
                .ok_or_else(|| io_error(ErrorCode::Enotconn, "the socket is not connected"))
        })
    }

    /// The sidecar's id for this socket.
    pub fn id(&self) -> SocketId {
        self.id
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut UdpState) -> io::Result<T>) -> io::Result<T> {
        let mut table = self.lp.shared().table();
        let state = table.udp_mut(self.id).map_err(wire_to_io)?;
        f(state)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.lp.shared().release_udp(self.id);
    }
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket").field("id", &self.id.0).finish()
    }
}

fn nonempty(host: &str) -> io::Result<&str> {
    if host.is_empty() {
        return Err(io_error(ErrorCode::Einval, "empty host name"));
    }
    Ok(host)
}
