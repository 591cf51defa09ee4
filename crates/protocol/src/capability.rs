//! Capabilities: feature names both sides list in `hello` and intersect.
//!
//! Versions break; capabilities add. A feature that a newer sidecar or guest can do but an
//! older peer cannot is named here, offered by both sides, and used only when it is in the
//! intersection returned by the hello reply. Unknown names are simply not in the
//! intersection, so old peers never see them.

/// Events pushed as they happen (`mode: "push"`).
pub const PUSH: &str = "push";
/// Poll mode (`mode: "poll"`; `net.poll`, `net.server_poll`, `dgram.poll`).
pub const POLL: &str = "poll";
/// A second stream may attach as the session's event channel.
pub const EVENT_CHANNEL: &str = "event_channel";
/// Calls may carry `"noreply": true`; failures come back as `error` events.
pub const NOREPLY: &str = "noreply";
/// In-VM (and later host) TCP: `net.*` with `{host, port}`.
pub const TCP: &str = "tcp";
/// Unix stream sockets: `net.*` with `{path}`.
pub const UNIX: &str = "unix";
/// UDP: `dgram.*` and `message` events.
pub const UDP: &str = "udp";
/// `dns.lookup`.
pub const DNS: &str = "dns";
/// Sidecar→guest flow control: the hello `credit` window and `net.credit`.
pub const CREDIT: &str = "credit";
/// Guest→sidecar flow control without synchronous writes: `pressure` events.
pub const PRESSURE: &str = "pressure";

/// Every capability this version of the protocol defines.
pub const ALL: &[&str] = &[
    PUSH,
    POLL,
    EVENT_CHANNEL,
    NOREPLY,
    TCP,
    UNIX,
    UDP,
    DNS,
    CREDIT,
    PRESSURE,
];

/// The capabilities in both lists, in the order of `ours`, without duplicates.
///
/// The sidecar calls it with its own list first, so the reply's order is stable whatever
/// order the guest sent.
pub fn intersect<A: AsRef<str>, B: AsRef<str>>(ours: &[A], theirs: &[B]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for cap in ours.iter().map(AsRef::as_ref) {
        if theirs.iter().any(|t| t.as_ref() == cap) && !out.iter().any(|o| o == cap) {
            out.push(cap.to_owned());
        }
    }
    out
}

/// Whether `caps` contains `name`.
pub fn has<A: AsRef<str>>(caps: &[A], name: &str) -> bool {
    caps.iter().any(|c| c.as_ref() == name)
}

/// The given names as owned strings (for building a hello).
pub fn to_owned_list(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_keeps_our_order_and_drops_unknowns() {
        let ours = [PUSH, NOREPLY, TCP, UNIX];
        let theirs = vec!["unix".to_owned(), "teleport".to_owned(), "push".to_owned()];
        assert_eq!(intersect(&ours, &theirs), vec!["push", "unix"]);
    }

    #[test]
    fn intersection_dedups_and_handles_empty() {
        assert_eq!(intersect(&[TCP, TCP], &[TCP]), vec!["tcp"]);
        assert!(intersect::<&str, &str>(&[PUSH], &[]).is_empty());
    }

    #[test]
    fn all_names_unique() {
        let mut v = ALL.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), ALL.len());
        assert!(has(ALL, UDP) && !has(ALL, "teleport"));
    }
}
