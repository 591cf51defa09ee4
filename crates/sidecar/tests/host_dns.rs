//! Names only the host's resolver knows (not `localhost`, not an IP literal): `dns.lookup`
//! and `net.connect` resolve them with the host's resolver, off the RPC loop, so the
//! sidecar answers what `getaddrinfo` answers in this very process, for a VM whose policy
//! lets it reach outside (a VM without rules resolves no such name: a query is egress);
//! and the policy is checked on the resolved addresses, so a name is no way around it.
//!
//! Which names resolve, and to what, depends on the machine (its hostname may be in
//! `/etc/hosts`, or not resolve at all), so each test first asks the host's resolver
//! itself (`ToSocketAddrs`) and asserts only what follows from that answer. Besides the
//! hostname, `10.1` and `0x7f.1` are names to the VM (not IP literals in Rust's grammar)
//! that glibc's resolver reads as the numbers 10.0.0.1 and 127.0.0.1 without any DNS
//! traffic: a non-loopback and a loopback answer on any machine with that resolver.

mod support;

use std::net::{IpAddr, ToSocketAddrs};

use serde_json::{json, Value};
use support::*;

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated within it
    // (or truncated, which the search below handles).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname failed");
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..len].to_vec()).unwrap()
}

/// What this process's resolver answers for `name`: its addresses, without duplicates.
fn resolved_here(name: &str) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for addr in (name, 0).to_socket_addrs().into_iter().flatten() {
        if !ips.contains(&addr.ip()) {
            ips.push(addr.ip());
        }
    }
    ips
}

/// A `dns.lookup` answer as a sorted list of (address, family) pairs.
fn answer(result: &Value) -> Vec<(String, u64)> {
    let mut pairs: Vec<(String, u64)> = result["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .map(|a| {
            let address = a["address"].as_str().unwrap().to_owned();
            (address, a["family"].as_u64().unwrap())
        })
        .collect();
    pairs.sort();
    pairs
}

fn expected(ips: &[IpAddr], family: u64) -> Vec<(String, u64)> {
    let mut pairs: Vec<(String, u64)> = ips
        .iter()
        .map(|ip| (ip.to_string(), if ip.is_ipv4() { 4 } else { 6 }))
        .filter(|(_, f)| family == 0 || *f == family)
        .collect();
    pairs.sort();
    pairs
}

fn names() -> Vec<String> {
    vec![hostname(), "10.1".into(), "0x7f.1".into()]
}

#[test]
fn lookup_of_a_host_name_answers_what_the_host_resolver_does() {
    // Every address allowed: the answer is the resolver's, unfiltered.
    let h = allowing(&["0.0.0.0/0", "::/0"]);
    let mut g = h.guest(Transport::InProcess);
    for name in names() {
        let here = resolved_here(&name);
        for family in [0, 4, 6] {
            let want = expected(&here, family);
            let params = json!({"host": name, "family": family});
            let got = g.call("dns.lookup", params, b"");
            match got {
                Ok(result) => assert_eq!(answer(&result), want, "{name} family {family}"),
                Err(error) => {
                    assert_eq!(error["code"], "ENOTFOUND", "{name}: {error}");
                    assert!(want.is_empty(), "{name} family {family}: {error}");
                }
            }
        }
    }
    // Not a host name at all: refused without asking anyone.
    for bad in ["", "a\u{0}b"] {
        let got = g.call("dns.lookup", json!({"host": bad}), b"");
        assert_eq!(code(got), "ENOTFOUND", "{bad:?}");
    }
    // Without any rule, no host name is resolved (tests/dns_bounds.rs shows no query
    // leaves), whatever the host's resolver would say.
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    for name in names() {
        let got = g.call("dns.lookup", json!({"host": name}), b"");
        assert_eq!(code(got), "ENOTFOUND", "{name}");
    }
}

#[test]
fn a_connect_by_name_is_routed_on_the_resolved_addresses() {
    // The host's loopback is allowed, on every port; nothing listens on `port`.
    let h = allowing(&["127.0.0.1"]);
    let mut g = h.guest(Transport::InProcess);
    let port = dead_port();
    for name in names() {
        let here = resolved_here(&name);
        let local = |ip: &IpAddr| {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
                v4 => *v4,
            };
            ip.is_loopback() || ip.is_unspecified()
        };
        let got = g.call("net.connect", json!({"host": name, "port": port}), b"");
        let error = got.expect_err("nothing listens there, or it is denied");
        let message = error["message"].as_str().unwrap();
        if here.is_empty() {
            assert_eq!(error["code"], "ENOTFOUND", "{name}: {error}");
        } else if here.iter().any(local) {
            // The VM's loopback (nobody listens in the VM) or the allowed host loopback
            // (nobody listens there either): refused either way.
            assert_eq!(error["code"], "ECONNREFUSED", "{name} {here:?}: {error}");
        } else {
            assert_eq!(error["code"], "EACCES", "{name} {here:?}: {error}");
            assert!(
                message.contains("127.0.0.1/32"),
                "names the rules: {message}"
            );
        }
    }

    // A name the host resolves to 127.0.0.1 still reaches the VM's own listener first.
    if resolved_here("0x7f.1") == [IpAddr::from([127, 0, 0, 1])] {
        let listened = g.call("net.listen", json!({"port": port}), b"").unwrap();
        let connected = g.call("net.connect", json!({"host": "0x7f.1", "port": port}), b"");
        assert!(connected.is_ok(), "{connected:?}");
        let (accept, _, _) = g.event_of("accept");
        assert_eq!(accept["server"], listened["server"]);
    }
}
