//! The kernel stream socket under a host connection: TCP, or a host Unix socket the
//! operator's `unix:` rules allow. Both carry the same connection machinery
//! ([`super::tcp`]): reads, writes, `shutdown(2)` and the pending error are the same
//! syscalls on either; only addresses and TCP's own options differ, and those are here.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use sidecar_protocol::Address;

/// A connected (or connecting) host stream socket.
#[derive(Debug)]
pub enum HostStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl From<TcpStream> for HostStream {
    fn from(stream: TcpStream) -> Self {
        HostStream::Tcp(stream)
    }
}

impl From<UnixStream> for HostStream {
    fn from(stream: UnixStream) -> Self {
        HostStream::Unix(stream)
    }
}

impl AsFd for HostStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            HostStream::Tcp(s) => s.as_fd(),
            HostStream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for &HostStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => (&*s).read(buf),
            HostStream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => (&*s).write(buf),
            HostStream::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HostStream {
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.shutdown(how),
            HostStream::Unix(s) => s.shutdown(how),
        }
    }

    /// The socket's pending error (`SO_ERROR`), cleared by reading it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            HostStream::Tcp(s) => s.take_error(),
            HostStream::Unix(s) => s.take_error(),
        }
    }

    /// Ok once a non-blocking connect has a peer.
    pub fn peer_connected(&self) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.peer_addr().map(|_| ()),
            HostStream::Unix(s) => s.peer_addr().map(|_| ()),
        }
    }

    /// The local address as a guest sees it: a Unix client is unnamed (`""`).
    pub fn local_address(&self) -> Option<Address> {
        match self {
            HostStream::Tcp(s) => s.local_addr().ok().map(Address::Inet),
            HostStream::Unix(_) => Some(Address::Unix(String::new())),
        }
    }

    /// `TCP_NODELAY`; a Unix socket has no Nagle, so nothing to do.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.set_nodelay(on),
            HostStream::Unix(_) => Ok(()),
        }
    }

    /// `SO_KEEPALIVE`; meaningless for a Unix socket, so nothing to do.
    pub fn set_keepalive(&self, on: bool) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => socket2::SockRef::from(s).set_keepalive(on),
            HostStream::Unix(_) => Ok(()),
        }
    }

    /// Makes the coming close a reset: `SO_LINGER` 0, so TCP sends RST rather than FIN.
    /// A Unix socket has no RST: its peer reads `ECONNRESET` when the close leaves data
    /// it has not read, and end of stream otherwise, whatever the linger.
    pub fn set_reset_on_close(&self) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)),
            HostStream::Unix(_) => Ok(()),
        }
    }
}
