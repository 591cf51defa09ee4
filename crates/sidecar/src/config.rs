//! What the operator decides: which VMs exist, their attach secrets, and the limits.
//!
//! A guest can never create a VM or pick one it has no secret for: VMs come only from
//! here (CLI flags, later a config file, or the embedding API), and so does the network
//! policy that says what outside the VMs they may reach.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::host::resolver::{Resolver, ResolverHandle};
pub use crate::limits::{LimitOverrides, Limits, LimitsError};
use crate::policy::unix::{self as unix_policy, UnixVerdict};
use crate::policy::{AllowRule, Policy, Proto, Rule, UnixRule};

/// One VM: a private network namespace (loopback, ports, Unix paths) shared by the
/// sessions that attach to it with its secret.
#[derive(Clone)]
pub struct VmConfig {
    /// The secret a `hello` must present to attach to this VM.
    pub secret: String,
    /// Destinations outside the VMs that this VM's guests may reach, besides the
    /// sidecar-wide [`SidecarConfig::policy`].
    pub allow: Vec<AllowRule>,
    /// Host Unix socket paths this VM's guests may connect to (`unix:` rules), besides the
    /// sidecar-wide ones.
    pub allow_unix: Vec<UnixRule>,
    /// Host ports forwarded to this VM's in-VM listeners.
    pub publish: Vec<Publish>,
    /// This VM's own limits, over the sidecar-wide [`SidecarConfig::limits`].
    pub limits: LimitOverrides,
}

impl VmConfig {
    /// A VM with `secret`, no rules or publications of its own, the global limits.
    pub fn new(secret: impl Into<String>) -> Self {
        VmConfig {
            secret: secret.into(),
            allow: Vec::new(),
            allow_unix: Vec::new(),
            publish: Vec::new(),
            limits: LimitOverrides::default(),
        }
    }

    /// This VM with its own limits (each `Some` replaces the global value).
    pub fn with_limits(mut self, limits: LimitOverrides) -> Self {
        self.limits = limits;
        self
    }
}

/// A published port, like `docker -p host:port[/udp]`: TCP connections to `host` reach
/// the VM's listener on `port`; UDP datagrams to `host` reach the VM's socket bound on
/// `port`, and its replies to those senders leave from `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub host: SocketAddr,
    pub port: u16,
    pub proto: Proto,
}

impl std::fmt::Debug for VmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmConfig")
            .field("secret", &"<redacted>")
            .field("allow", &self.allow)
            .field("allow_unix", &self.allow_unix)
            .field("publish", &self.publish)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The whole operator configuration of a sidecar.
#[derive(Debug, Clone, Default)]
pub struct SidecarConfig {
    /// VMs by name.
    pub vms: BTreeMap<String, VmConfig>,
    /// Sidecar-wide limits; a VM's [`VmConfig::limits`] may override some.
    pub limits: Limits,
    /// Destinations outside the VMs that guests may reach (default: none).
    pub policy: Policy,
    /// Who answers host name lookups (default: the system's `getaddrinfo`). Fixed when
    /// the sidecar starts: a reload's resolver is not used.
    pub resolver: ResolverHandle,
}

impl SidecarConfig {
    /// Adds (or replaces) a VM.
    pub fn with_vm(mut self, name: impl Into<String>, secret: impl Into<String>) -> Self {
        self.vms.insert(name.into(), VmConfig::new(secret));
        self
    }

    /// Gives VM `vm` (which must have been added) its own limits.
    pub fn with_vm_limits(mut self, vm: &str, limits: LimitOverrides) -> Self {
        if let Some(config) = self.vms.get_mut(vm) {
            config.limits = limits;
        }
        self
    }

    /// VM `vm`'s effective limits: its overrides merged over the sidecar-wide ones (the
    /// sidecar-wide ones for a VM that is not configured).
    pub fn limits_for(&self, vm: &str) -> Limits {
        match self.vms.get(vm) {
            Some(config) => config.limits.over(&self.limits),
            None => self.limits.clone(),
        }
    }

    /// Checks the sidecar-wide limits and every VM's effective ones.
    pub fn validate_limits(&self) -> Result<(), (Option<&str>, LimitsError)> {
        self.limits.validate().map_err(|e| (None, e))?;
        for name in self.vms.keys() {
            self.limits_for(name)
                .validate()
                .map_err(|e| (Some(name.as_str()), e))?;
        }
        Ok(())
    }

    /// Publishes host address `host` to VM `vm`'s in-VM listener on `port` (the VM must
    /// have been added).
    pub fn with_publish(self, vm: &str, host: SocketAddr, port: u16) -> Self {
        self.with_publish_proto(vm, host, port, Proto::Tcp)
    }

    /// [`SidecarConfig::with_publish`] for TCP or UDP.
    pub fn with_publish_proto(
        mut self,
        vm: &str,
        host: SocketAddr,
        port: u16,
        proto: Proto,
    ) -> Self {
        if let Some(config) = self.vms.get_mut(vm) {
            config.publish.push(Publish { host, port, proto });
        }
        self
    }

    /// Every publication: (host address, protocol) → (VM, in-VM port).
    pub fn publications(&self) -> impl Iterator<Item = (SocketAddr, Proto, &str, u16)> + '_ {
        self.vms.iter().flat_map(|(name, vm)| {
            vm.publish
                .iter()
                .map(move |p| (p.host, p.proto, name.as_str(), p.port))
        })
    }

    /// Allows guests to reach `rule`'s destinations through host sockets.
    pub fn with_allow(mut self, rule: AllowRule) -> Self {
        self.policy.rules.push(rule);
        self
    }

    /// Allows guests (of every VM, or of VM `vm` only) a rule of either kind, e.g.
    /// `unix:/var/run/postgresql/`.
    pub fn with_rule(mut self, vm: Option<&str>, rule: Rule) -> Self {
        match (vm.and_then(|vm| self.vms.get_mut(vm)), rule) {
            (Some(config), Rule::Net(rule)) => config.allow.push(rule),
            (Some(config), Rule::Unix(rule)) => config.allow_unix.push(rule),
            (None, rule) => self.policy.add(rule),
        }
        self
    }

    /// Where a guest of VM `vm` connecting to Unix path `path` (normalised, and not a
    /// listener of its VM) goes on the host: its own `unix:` rules and the sidecar-wide
    /// ones decide ([`crate::policy::unix`]).
    pub fn unix_verdict(&self, vm: &str, path: &str) -> UnixVerdict {
        let own = self
            .vms
            .get(vm)
            .map(|v| v.allow_unix.as_slice())
            .unwrap_or(&[]);
        unix_policy::check(own.iter().chain(&self.policy.unix), path)
    }

    /// The rule that lets a guest of VM `vm` reach `dest` over `proto`, if any: the
    /// VM's own rules, then the sidecar-wide ones.
    pub fn allowing(&self, vm: &str, dest: SocketAddr, proto: Proto) -> Option<&AllowRule> {
        let own = self.vms.get(vm).map(|v| v.allow.as_slice()).unwrap_or(&[]);
        own.iter()
            .chain(&self.policy.rules)
            .find(|rule| rule.allows(dest, proto))
    }

    /// The rules of VM `vm`: its own, then the sidecar-wide ones.
    fn rules_of(&self, vm: &str) -> impl Iterator<Item = &AllowRule> {
        let own = self.vms.get(vm).map(|v| v.allow.as_slice()).unwrap_or(&[]);
        own.iter().chain(&self.policy.rules)
    }

    /// Whether any rule lets VM `vm` reach outside it (else its guests' host names are
    /// not resolved: a query would carry them out).
    pub fn may_leave(&self, vm: &str) -> bool {
        self.rules_of(vm).next().is_some()
    }

    /// Whether some rule lets VM `vm` reach `ip` (any port, any protocol).
    pub fn covers(&self, vm: &str, ip: std::net::IpAddr) -> bool {
        self.rules_of(vm).any(|rule| rule.covers(ip))
    }

    /// Answers host name lookups with `resolver` instead of the system's (tests: one
    /// that never answers, counts queries, or answers given addresses).
    pub fn with_resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = ResolverHandle(std::sync::Arc::new(resolver));
        self
    }

    /// Why `dest` is denied to VM `vm`, for the guest's error message.
    pub fn denial(&self, vm: &str, dest: SocketAddr) -> String {
        let own = self.vms.get(vm).map(|v| v.allow.as_slice()).unwrap_or(&[]);
        let rules = Policy {
            rules: own.iter().chain(&self.policy.rules).copied().collect(),
            ..Policy::default()
        };
        rules.denial(dest)
    }

    /// Whether `secret` attaches to VM `name`. Compares in constant time for equal lengths,
    /// so the answer's timing does not leak how much of a guess was right.
    pub fn secret_matches(&self, name: &str, secret: &str) -> bool {
        let Some(vm) = self.vms.get(name) else {
            return false;
        };
        let (a, b) = (vm.secret.as_bytes(), secret.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// An unguessable token (hex of 32 random bytes from the OS), for event-channel attach.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_must_match_exactly() {
        let config = SidecarConfig::default().with_vm("a", "s3cret");
        assert!(config.secret_matches("a", "s3cret"));
        assert!(!config.secret_matches("a", "s3cres"));
        assert!(!config.secret_matches("a", "s3cret!"));
        assert!(!config.secret_matches("b", "s3cret"));
    }

    #[test]
    fn a_vm_gets_its_own_limits_over_the_global_ones() {
        let own = LimitOverrides {
            sockets_per_vm: Some(7),
            ..LimitOverrides::default()
        };
        let config = SidecarConfig::default()
            .with_vm("a", "sa")
            .with_vm("b", "sb")
            .with_vm_limits("a", own);
        assert_eq!(config.limits_for("a").sockets_per_vm, 7);
        assert_eq!(config.limits_for("b"), config.limits);
        assert_eq!(config.limits_for("nobody"), config.limits);
        let bad = LimitOverrides {
            write_high_water: Some(usize::MAX),
            ..LimitOverrides::default()
        };
        let config = config.with_vm_limits("b", bad);
        let refused = config.validate_limits();
        assert!(matches!(refused, Err((Some("b"), _))), "{refused:?}");
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
