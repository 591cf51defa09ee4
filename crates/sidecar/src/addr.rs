//! Addresses inside a VM: which listener a destination reaches, which binds conflict,
//! where Unix paths point, and ephemeral ports.
//!
//! Each VM has its own loopback (127.0.0.0/8 and ::1). Matching follows Linux's defaults:
//! a listener on `0.0.0.0` takes any IPv4 loopback destination; one on `::` is dual-stack
//! (IPv6 and IPv4); one on `127.0.0.1` takes only that address; a v4-mapped IPv6 address
//! (`::ffff:127.0.0.1`) equals its IPv4 form. Unix paths are names in the VM's own table,
//! normalised against the session's cwd; they never touch the host filesystem.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first and last ephemeral ports (Linux's default `ip_local_port_range`).
pub const EPHEMERAL_FIRST: u16 = 32768;
pub const EPHEMERAL_LAST: u16 = 60999;

/// An IP address with v4-mapped IPv6 folded into IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `ip` names this VM's own loopback (or "this host": a connect to 0.0.0.0 or ::
/// reaches loopback on Linux).
pub fn is_vm_local(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip.is_loopback() || ip.is_unspecified()
}

/// Whether a guest may bind `ip` inside its VM: the VM only has loopback addresses, plus
/// the wildcards.
pub fn bindable(ip: IpAddr) -> bool {
    is_vm_local(ip)
}

/// Whether a listener bound to `bound` accepts a connection to `dest` (ports already equal).
pub fn listener_matches(bound: IpAddr, dest: IpAddr) -> bool {
    let dest = match canonical(dest) {
        // A connect to the unspecified address goes to loopback of that family.
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    match bound {
        IpAddr::V6(v6) if v6.is_unspecified() => true,
        IpAddr::V4(v4) if v4.is_unspecified() => dest.is_ipv4(),
        other => canonical(other) == dest,
    }
}

/// Whether two binds on the same port overlap (so the second gets `EADDRINUSE`).
pub fn binds_overlap(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (canonical(a), canonical(b));
    let covers = |wild: IpAddr, other: IpAddr| match wild {
        IpAddr::V6(v6) if v6.is_unspecified() => true,
        IpAddr::V4(v4) if v4.is_unspecified() => other.is_ipv4(),
        _ => false,
    };
    a == b || covers(a, b) || covers(b, a)
}

/// The address an accepted socket reports for its peer: in the listener's family, so a
/// dual-stack (`::`) listener sees an IPv4 client as `::ffff:a.b.c.d`, as Linux does.
pub fn as_seen_by_listener(bound: IpAddr, peer: SocketAddr) -> SocketAddr {
    match (bound, peer.ip()) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), peer.port())
        }
        _ => peer,
    }
}

/// The local address a connecting socket gets for `dest`: the loopback of the same
/// family (Linux routes every 127.0.0.0/8 destination with source 127.0.0.1).
pub fn source_for(dest: IpAddr) -> IpAddr {
    match canonical(dest) {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The address a connection to `dest` is reported as reaching: the unspecified address
/// stands for the loopback of its family; v4-mapped folds to IPv4.
pub fn effective_destination(dest: IpAddr) -> IpAddr {
    match canonical(dest) {
        ip if ip.is_unspecified() => source_for(ip),
        ip => ip,
    }
}

/// Normalises a guest's Unix socket path: relative paths are resolved against `cwd`,
/// `.` and `..` are folded (`..` at the root stays at the root), repeated slashes
/// collapse. Returns `None` for an empty path or one containing a NUL byte.
pub fn normalize_unix_path(path: &str, cwd: &str) -> Option<String> {
    if path.is_empty() || path.contains('\0') {
        return None;
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", if cwd.is_empty() { "/" } else { cwd }, path)
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Hands out ephemeral ports round-robin, skipping ports `in_use` reports as taken.
#[derive(Debug)]
pub struct EphemeralPorts {
    next: u16,
}

impl Default for EphemeralPorts {
    fn default() -> Self {
        EphemeralPorts {
            next: EPHEMERAL_FIRST,
        }
    }
}

impl EphemeralPorts {
    /// The next free port, or `None` when the whole range is taken.
    pub fn allocate(&mut self, mut in_use: impl FnMut(u16) -> bool) -> Option<u16> {
        let span = (EPHEMERAL_LAST - EPHEMERAL_FIRST) as u32 + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port == EPHEMERAL_LAST {
                EPHEMERAL_FIRST
            } else {
                port + 1
            };
            if !in_use(port) {
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listener_matching_follows_linux_defaults() {
        assert!(listener_matches(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(listener_matches(ip("0.0.0.0"), ip("127.0.0.2")));
        assert!(!listener_matches(ip("0.0.0.0"), ip("::1")));
        assert!(listener_matches(ip("::"), ip("::1")));
        assert!(listener_matches(ip("::"), ip("127.0.0.1")));
        assert!(listener_matches(ip("127.0.0.1"), ip("::ffff:127.0.0.1")));
        assert!(listener_matches(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!listener_matches(ip("127.0.0.1"), ip("127.0.0.2")));
        assert!(!listener_matches(ip("127.0.0.1"), ip("::1")));
        assert!(listener_matches(ip("127.0.0.1"), ip("0.0.0.0")));
        assert!(listener_matches(ip("::1"), ip("::")));
    }

    #[test]
    fn overlapping_binds() {
        assert!(binds_overlap(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(binds_overlap(ip("::"), ip("127.0.0.1")));
        assert!(binds_overlap(ip("::"), ip("::1")));
        assert!(binds_overlap(ip("127.0.0.1"), ip("::ffff:127.0.0.1")));
        assert!(!binds_overlap(ip("127.0.0.1"), ip("127.0.0.2")));
        assert!(!binds_overlap(ip("0.0.0.0"), ip("::1")));
        assert!(!binds_overlap(ip("127.0.0.1"), ip("::1")));
    }

    #[test]
    fn dual_stack_listener_sees_v4_clients_mapped() {
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let seen = as_seen_by_listener(ip("::"), client);
        assert_eq!(seen, "[::ffff:127.0.0.1]:40000".parse().unwrap());
        assert_eq!(as_seen_by_listener(ip("0.0.0.0"), client), client);
    }

    #[test]
    fn unix_paths_are_normalised() {
        assert_eq!(
            normalize_unix_path("a.sock", "/srv").unwrap(),
            "/srv/a.sock"
        );
        assert_eq!(
            normalize_unix_path("./x/../b.sock", "/srv").unwrap(),
            "/srv/b.sock"
        );
        assert_eq!(normalize_unix_path("/../../c", "/").unwrap(), "/c");
        assert_eq!(normalize_unix_path("//tmp///d", "/x").unwrap(), "/tmp/d");
        assert_eq!(normalize_unix_path("e", "").unwrap(), "/e");
        assert!(normalize_unix_path("", "/").is_none());
        assert!(normalize_unix_path("a\0b", "/").is_none());
    }

    #[test]
    fn ephemeral_ports_skip_used_and_exhaust() {
        let mut ports = EphemeralPorts::default();
        assert_eq!(
            ports.allocate(|p| p == EPHEMERAL_FIRST),
            Some(EPHEMERAL_FIRST + 1)
        );
        assert_eq!(ports.allocate(|_| true), None);
    }

    #[test]
    fn only_loopback_and_wildcards_are_vm_local() {
        assert!(is_vm_local(ip("127.9.9.9")));
        assert!(is_vm_local(ip("::1")));
        assert!(is_vm_local(ip("::ffff:127.0.0.1")));
        assert!(is_vm_local(ip("0.0.0.0")));
        assert!(!is_vm_local(ip("10.0.0.1")));
        assert!(!is_vm_local(ip("8.8.8.8")));
        assert!(bindable(ip("::")));
        assert!(!bindable(ip("192.168.1.1")));
    }
}
