//! Who answers a host name lookup: a [`Resolver`], the system's `getaddrinfo` unless the
//! embedder injects another ([`crate::SidecarConfig::with_resolver`]).
//!
//! Why injectable: what a guest's names do to the host (how many queries leave, what a
//! resolver that never answers costs) must be testable without the network, and an
//! embedder may have a resolver of its own. The sidecar only ever calls it on a worker of
//! its DNS pool ([`super::dns_pool`]), never on the RPC loop, so a resolver may block.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Resolves host names. Called on a DNS pool worker thread; it may block as long as it
/// needs, but a call that outlives the lookup's `dns_timeout` keeps its worker busy
/// (counted as abandoned) until it returns: a resolver should time out on its own.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host`, preferred first. An error or no address: `ENOTFOUND`.
    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

/// Any `Fn(&str) -> io::Result<Vec<IpAddr>>` is a resolver (handy in tests).
impl<F> Resolver for F
where
    F: Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync + 'static,
{
    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self(host)
    }
}

/// The host's own resolver: `getaddrinfo`, answering what it answers in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let addrs = (host, 0).to_socket_addrs()?;
        Ok(addrs.map(|a: SocketAddr| a.ip()).collect())
    }
}

/// The resolver a sidecar uses, shared by its configuration and its DNS pool.
#[derive(Clone)]
pub struct ResolverHandle(pub Arc<dyn Resolver>);

impl Default for ResolverHandle {
    fn default() -> Self {
        ResolverHandle(Arc::new(SystemResolver))
    }
}

impl fmt::Debug for ResolverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}
