//! The operator's network policy: which destinations outside a VM its guests may reach
//! through host kernel sockets. Default deny; each rule allows an address range and a
//! port range, for TCP and UDP alike.
//!
//! Rules are written `[tcp:|udp:]ADDR[/PREFIX][:PORT[-PORT]]`, IPv6 in brackets when a port
//! follows (`[2001:db8::]/32:443`); without a protocol a rule covers TCP and UDP. They are checked on resolved addresses, with v4-mapped IPv6
//! (`::ffff:10.0.0.1`) folded into IPv4 on both sides, so a guest cannot slip past a rule
//! by spelling an address differently. Policy comes from the operator, never the guest.
//!
//! Host Unix socket files are allowed by `unix:PATH` rules ([`unix`]); `--allow` and a
//! config file's `allow` lists take both kinds ([`Rule`]).

pub mod unix;

pub use unix::{Rule, UnixRule};

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::addr::canonical;

/// A transport protocol, for rules that cover only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One allow rule: an address range, a port range, and optionally one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowRule {
    network: IpAddr,
    prefix: u8,
    ports: (u16, u16),
    proto: Option<Proto>,
}

/// Why a rule did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allow rule {rule:?}: {reason} (expected [tcp:|udp:]ADDR[/PREFIX][:PORT[-PORT]], IPv6 as [ADDR] when a port follows)")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

impl AllowRule {
    /// Allows `network/prefix` on ports `first..=last`.
    pub fn new(network: IpAddr, prefix: u8, first: u16, last: u16) -> Result<Self, RuleError> {
        let rule = || format!("{network}/{prefix}:{first}-{last}");
        let mapped = network.is_ipv6() && canonical(network).is_ipv4();
        let network = canonical(network);
        let bits = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        // A v4-mapped IPv6 prefix (::ffff:10.0.0.0/104) is its IPv4 form (/8).
        let prefix = match mapped {
            true if prefix >= 96 => prefix - 96,
            true => {
                return Err(RuleError {
                    rule: rule(),
                    reason: "a v4-mapped prefix must be at least /96".into(),
                })
            }
            false => prefix,
        };
        if prefix > bits {
            return Err(RuleError {
                rule: rule(),
                reason: format!("prefix /{prefix} is longer than the address ({bits} bits)"),
            });
        }
        if first > last {
            return Err(RuleError {
                rule: rule(),
                reason: format!("port range {first}-{last} is empty"),
            });
        }
        Ok(AllowRule {
            network: mask(network, prefix),
            prefix,
            ports: (first, last),
            proto: None,
        })
    }

    /// The same rule, for `proto` only.
    pub fn only(mut self, proto: Proto) -> Self {
        self.proto = Some(proto);
        self
    }

    /// Whether this rule allows `ip` on some port, over some protocol (what a lookup,
    /// which names neither, may answer).
    pub fn covers(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }

    /// Whether this rule allows `dest` over `proto`.
    pub fn allows(&self, dest: SocketAddr, proto: Proto) -> bool {
        let ip = canonical(dest.ip());
        let same_family = ip.is_ipv4() == self.network.is_ipv4();
        self.proto.is_none_or(|p| p == proto)
            && same_family
            && mask(ip, self.prefix) == self.network
            && (self.ports.0..=self.ports.1).contains(&dest.port())
    }
}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(proto) = self.proto {
            write!(f, "{}:", proto.as_str())?;
        }
        match self.network {
            IpAddr::V4(v4) => write!(f, "{v4}/{}", self.prefix)?,
            IpAddr::V6(v6) => write!(f, "[{v6}]/{}", self.prefix)?,
        }
        match self.ports {
            (0, u16::MAX) => Ok(()),
            (a, b) if a == b => write!(f, ":{a}"),
            (a, b) => write!(f, ":{a}-{b}"),
        }
    }
}

impl FromStr for AllowRule {
    type Err = RuleError;

    fn from_str(spec: &str) -> Result<Self, RuleError> {
        let fail = |reason: &str| RuleError {
            rule: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (proto, spec_rest) = match (spec.strip_prefix("tcp:"), spec.strip_prefix("udp:")) {
            (Some(rest), _) => (Some(Proto::Tcp), rest),
            (_, Some(rest)) => (Some(Proto::Udp), rest),
            _ => (None, spec),
        };
        let spec_full = spec;
        let spec = spec_rest;
        // Split ADDR[/PREFIX] from [:PORTS].
        let (net, ports) = if let Some(rest) = spec.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| fail("a '[' without its ']'"))?;
            let (prefix, ports) = match after.split_once(':') {
                Some((prefix, ports)) => (prefix, Some(ports)),
                None => (after, None),
            };
            (format!("{addr}{prefix}"), ports)
        } else if spec.matches(':').count() > 1 {
            (spec.to_owned(), None) // bare IPv6, no port
        } else {
            match spec.split_once(':') {
                Some((net, ports)) => (net.to_owned(), Some(ports)),
                None => (spec.to_owned(), None),
            }
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((addr, prefix)) => {
                let prefix: u8 = prefix
                    .parse()
                    .map_err(|_| fail("the prefix is not a number"))?;
                (addr.to_owned(), Some(prefix))
            }
            None => (net, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| fail(&format!("{addr:?} is not an IP address")))?;
        let prefix = prefix.unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| fail(&format!("{p:?} is not a port")))
        };
        let (first, last) = match ports {
            None => (0, u16::MAX),
            Some(ports) => match ports.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(ports)?;
                    (p, p)
                }
            },
        };
        let rule = AllowRule::new(ip, prefix, first, last).map_err(|e| RuleError {
            rule: spec_full.to_owned(),
            reason: e.reason,
        })?;
        Ok(AllowRule { proto, ..rule })
    }
}

/// The allow rules of a sidecar (shared by its VMs). Empty: nothing outside a VM is
/// reachable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<AllowRule>,
    /// Host Unix socket paths (`unix:` rules).
    pub unix: Vec<UnixRule>,
}

impl Policy {
    /// Adds a rule of either kind.
    pub fn add(&mut self, rule: Rule) {
        match rule {
            Rule::Net(rule) => self.rules.push(rule),
            Rule::Unix(rule) => self.unix.push(rule),
        }
    }
}

impl Policy {
    /// The rule that allows `dest` over `proto`, if any.
    pub fn allowing(&self, dest: SocketAddr, proto: Proto) -> Option<&AllowRule> {
        self.rules.iter().find(|rule| rule.allows(dest, proto))
    }

    /// Why `dest` is denied, for the guest's error message.
    pub fn denial(&self, dest: SocketAddr) -> String {
        if self.rules.is_empty() {
            format!("{dest} is outside the VM and the policy allows nothing outside it")
        } else {
            let rules: Vec<String> = self.rules.iter().map(ToString::to_string).collect();
            format!(
                "{dest} is outside the VM and no allow rule covers it (rules: {})",
                rules.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forms_parse_and_print_back() {
        for (spec, shown) in [
            ("127.0.0.1", "127.0.0.1/32"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("10.0.0.0/8:443", "10.0.0.0/8:443"),
            ("192.168.0.1:8000-9000", "192.168.0.1/32:8000-9000"),
            ("::1", "[::1]/128"),
            ("2001:db8::/32", "[2001:db8::]/32"),
            ("[2001:db8::1]/64:80-81", "[2001:db8::]/64:80-81"),
            ("[::1]:5432", "[::1]/128:5432"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("[::ffff:10.0.0.0]/104:53", "10.0.0.0/8:53"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ] {
            assert_eq!(rule(spec).to_string(), shown, "{spec}");
            assert_eq!(rule(shown), rule(spec), "{shown} reparses");
        }
    }

    #[test]
    fn bad_rules_say_why() {
        for (spec, why) in [
            ("", "not an IP address"),
            ("example.com", "not an IP address"),
            ("10.0.0.0/33", "longer than the address"),
            ("10.0.0.0/x", "prefix is not a number"),
            ("10.0.0.1:70000", "not a port"),
            ("10.0.0.1:90-80", "empty"),
            ("[::1:80", "without its ']'"),
        ] {
            let err = spec.parse::<AllowRule>().unwrap_err().to_string();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[test]
    fn matching_covers_ranges_families_and_mapped_forms() {
        let r = rule("10.0.0.0/8:8000-8001");
        assert!(r.allows(sa("10.9.8.7:8000"), Proto::Tcp));
        assert!(r.allows(sa("10.9.8.7:8001"), Proto::Tcp));
        assert!(!r.allows(sa("10.9.8.7:8002"), Proto::Tcp));
        assert!(!r.allows(sa("11.0.0.1:8000"), Proto::Tcp));
        // The same destination written v4-mapped is the same destination.
        assert!(r.allows(sa("[::ffff:10.1.1.1]:8000"), Proto::Tcp));
        assert!(!r.allows(sa("[::ffff:11.1.1.1]:8000"), Proto::Tcp));
        // No cross-family match: ::/0 does not cover IPv4, 0.0.0.0/0 does not cover IPv6.
        assert!(!rule("::/0").allows(sa("10.0.0.1:1"), Proto::Tcp));
        assert!(rule("::/0").allows(sa("[2001:db8::1]:1"), Proto::Tcp));
        assert!(!rule("0.0.0.0/0").allows(sa("[::1]:1"), Proto::Tcp));
        assert!(rule("0.0.0.0/0").allows(sa("[::ffff:1.2.3.4]:1"), Proto::Tcp));
        let v6 = rule("[2001:db8::]/32:443");
        assert!(v6.allows(sa("[2001:db8:ffff::1]:443"), Proto::Tcp));
        assert!(!v6.allows(sa("[2001:db9::1]:443"), Proto::Tcp));
    }

    #[test]
    fn a_protocol_prefix_limits_a_rule_to_it() {
        let udp = rule("udp:10.0.0.53:53");
        assert_eq!(udp.to_string(), "udp:10.0.0.53/32:53");
        assert!(udp.allows(sa("10.0.0.53:53"), Proto::Udp));
        assert!(!udp.allows(sa("10.0.0.53:53"), Proto::Tcp));
        let tcp = rule("tcp:[::1]:80");
        assert!(tcp.allows(sa("[::1]:80"), Proto::Tcp));
        assert!(!tcp.allows(sa("[::1]:80"), Proto::Udp));
        assert!(rule("10.0.0.53:53").allows(sa("10.0.0.53:53"), Proto::Udp));
        assert!("sctp:10.0.0.1".parse::<AllowRule>().is_err());
    }

    #[test]
    fn policy_finds_the_rule_or_explains_the_denial() {
        let empty = Policy::default();
        assert!(empty.allowing(sa("127.0.0.1:80"), Proto::Tcp).is_none());
        assert!(empty.denial(sa("1.2.3.4:80")).contains("allows nothing"));
        let policy = Policy {
            rules: vec![rule("127.0.0.1:5432"), rule("10.0.0.0/8")],
            ..Policy::default()
        };
        assert_eq!(
            policy
                .allowing(sa("10.2.3.4:1"), Proto::Udp)
                .map(ToString::to_string),
            Some("10.0.0.0/8".into())
        );
        let why = policy.denial(sa("127.0.0.1:80"));
        assert!(why.contains("127.0.0.1/32:5432, 10.0.0.0/8"), "{why}");
    }
}
