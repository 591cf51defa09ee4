//! Host name resolution for names that are not the VM's own (`localhost` and IP literals
//! are resolved inside the VM). `getaddrinfo` blocks, so it runs on tokio's blocking pool
//! and the call that needs it is parked: the RPC loop keeps serving everyone else.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use sidecar_protocol::{ErrorCode, WireError};

/// Whether `host` is a name only the host's resolver can answer.
pub fn needs_host_resolver(host: &str) -> bool {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    !host.eq_ignore_ascii_case("localhost") && literal.parse::<IpAddr>().is_err()
}

/// Resolves `host` with the host's resolver, off the RPC loop. Addresses keep the
/// resolver's order, without duplicates.
pub async fn resolve(host: String) -> Result<Vec<IpAddr>, WireError> {
    if host.is_empty() || host.len() > 253 || host.contains('\0') {
        return Err(WireError::new(
            ErrorCode::Enotfound,
            format!("getaddrinfo ENOTFOUND {host:?}: not a host name"),
        ));
    }
    let name = host.clone();
    let found = tokio::task::spawn_blocking(move || {
        (name.as_str(), 0).to_socket_addrs().map(|addrs| {
            let mut ips: Vec<IpAddr> = Vec::new();
            for ip in addrs.map(|a: SocketAddr| a.ip()) {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            ips
        })
    })
    .await;
    match found {
        Ok(Ok(ips)) if !ips.is_empty() => Ok(ips),
        Ok(Ok(_)) | Ok(Err(_)) => Err(WireError::new(
            ErrorCode::Enotfound,
            format!("getaddrinfo ENOTFOUND {host}"),
        )),
        Err(_) => Err(WireError::new(
            ErrorCode::EaiAgain,
            format!("getaddrinfo EAI_AGAIN {host}: the resolver task failed"),
        )),
    }
}
