//! The host ports a run's sidecar publishes to the run's VM, like `docker -p`
//! ([`crate::env`] configures them): `published_get`'s two guest HTTP servers (a native
//! client reaches a guest service) and `paired_echo`'s echo server (a guest of another
//! VM reaches it, and the sidecar pairs the two ends in memory). Free host ports are
//! picked at start, so runs never collide on fixed ones.

/// [`VM`](crate::env::VM)'s in-VM ports behind the published host ports, in [`PublishedPorts`] order
/// (outside the sidecar's ephemeral range, so no other row's listener can take them).
pub const HTTP_POLL_PORT: u16 = 8080;
pub const HTTP_PUSH_PORT: u16 = 8081;
pub const ECHO_PORT: u16 = 7;

/// The host ports (on `127.0.0.1`) the sidecar publishes to [`VM`](crate::env::VM).
#[derive(Debug, Clone, Copy)]
pub struct PublishedPorts {
    /// → [`HTTP_POLL_PORT`]: `published_get`'s poll-mode server.
    pub http_poll: u16,
    /// → [`HTTP_PUSH_PORT`]: `published_get`'s push-mode server.
    pub http_push: u16,
    /// → [`ECHO_PORT`]: `paired_echo`'s echo server.
    pub echo: u16,
}

impl PublishedPorts {
    /// Free host ports: bound together (so distinct), then released for the sidecar to
    /// bind (another process could take one in between; the start would then fail).
    pub(crate) fn pick() -> std::io::Result<PublishedPorts> {
        let listeners = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        Ok(PublishedPorts {
            http_poll: port(0)?,
            http_push: port(1)?,
            echo: port(2)?,
        })
    }

    /// (host port, in-VM port) of each publication.
    pub(crate) fn pairs(&self) -> [(u16, u16); 3] {
        [
            (self.http_poll, HTTP_POLL_PORT),
            (self.http_push, HTTP_PUSH_PORT),
            (self.echo, ECHO_PORT),
        ]
    }
}

/// A free host TCP port on `127.0.0.1` (bound, then released for a sidecar to bind).
pub fn free_tcp_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
