//! What the operator decides: which VMs exist, their attach secrets, and the limits.
//!
//! A guest can never create a VM or pick one it has no secret for: VMs come only from
//! here (CLI flags, later a config file, or the embedding API), and so does the network
//! policy that says what outside the VMs they may reach.

use std::collections::BTreeMap;
use std::time::Duration;

use sidecar_protocol::DEFAULT_MAX_FRAME;

use std::net::SocketAddr;

use crate::policy::{AllowRule, Policy, Proto};

/// One VM: a private network namespace (loopback, ports, Unix paths) shared by the
/// sessions that attach to it with its secret.
#[derive(Clone)]
pub struct VmConfig {
    /// The secret a `hello` must present to attach to this VM.
    pub secret: String,
    /// Destinations outside the VMs that this VM's guests may reach, besides the
    /// sidecar-wide [`SidecarConfig::policy`].
    pub allow: Vec<AllowRule>,
    /// Host ports forwarded to this VM's in-VM listeners.
    pub publish: Vec<Publish>,
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
            .field("publish", &self.publish)
            .finish()
    }
}

/// Per-session and per-VM limits. Exceeding one is a typed error for that guest only.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted from a guest (bytes, as the protocol counts them).
    pub max_frame: usize,
    /// Calls one session may have parked at once (a connect waiting for backlog room…).
    pub parked_calls_per_session: usize,
    /// Open sockets + servers per VM (`EMFILE` beyond).
    pub sockets_per_vm: usize,
    /// Listening servers (TCP and Unix) per VM (`EMFILE` beyond).
    pub listeners_per_vm: usize,
    /// Bytes buffered for a stream socket's peer past which `net.write` says `need_drain`
    /// (and a `drain` event follows once below).
    pub write_high_water: usize,
    /// Bytes buffered for a stream socket's peer past which a write fails `ENOBUFS`.
    pub write_hard_limit: usize,
    /// Poll mode: payload bytes a UDP socket may hold unpolled; a datagram that finds no
    /// room is dropped and counted.
    pub udp_receive_buffer: usize,
    /// Push mode: bytes of events a session's transport may hold that its guest has not
    /// read yet, past which datagrams for it are dropped and counted. (Stream data is
    /// bounded by credit windows, other events by socket counts: a guest that stops
    /// reading never makes a queue grow without bound.)
    pub event_queue_bytes: usize,
    /// How long a connect to one of this sidecar's own published ports waits for its
    /// accept to pair the two ends in memory before it stays on the kernel path
    /// (zero: never pair).
    pub pairing_wait: Duration,
    /// Period of the counted fallback re-check of parked waits (they are woken by
    /// notifications; the fallback only guards against a lost one).
    pub parked_fallback: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            parked_calls_per_session: 64,
            sockets_per_vm: 65_536,
            listeners_per_vm: 1024,
            write_high_water: 64 * 1024,
            write_hard_limit: 4 * 1024 * 1024,
            udp_receive_buffer: 1024 * 1024,
            event_queue_bytes: 8 * 1024 * 1024,
            parked_fallback: Duration::from_secs(1),
            pairing_wait: Duration::from_secs(1),
        }
    }
}

/// The whole operator configuration of a sidecar.
#[derive(Debug, Clone, Default)]
pub struct SidecarConfig {
    /// VMs by name.
    pub vms: BTreeMap<String, VmConfig>,
    pub limits: Limits,
    /// Destinations outside the VMs that guests may reach (default: none).
    pub policy: Policy,
}

impl SidecarConfig {
    /// Adds (or replaces) a VM.
    pub fn with_vm(mut self, name: impl Into<String>, secret: impl Into<String>) -> Self {
        self.vms.insert(
            name.into(),
            VmConfig {
                secret: secret.into(),
                allow: Vec::new(),
                publish: Vec::new(),
            },
        );
        self
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

    /// The rule that lets a guest of VM `vm` reach `dest` over `proto`, if any: the
    /// VM's own rules, then the sidecar-wide ones.
    pub fn allowing(&self, vm: &str, dest: SocketAddr, proto: Proto) -> Option<&AllowRule> {
        let own = self.vms.get(vm).map(|v| v.allow.as_slice()).unwrap_or(&[]);
        own.iter()
            .chain(&self.policy.rules)
            .find(|rule| rule.allows(dest, proto))
    }

    /// Why `dest` is denied to VM `vm`, for the guest's error message.
    pub fn denial(&self, vm: &str, dest: SocketAddr) -> String {
        let own = self.vms.get(vm).map(|v| v.allow.as_slice()).unwrap_or(&[]);
        let rules = Policy {
            rules: own.iter().chain(&self.policy.rules).copied().collect(),
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
    fn tokens_are_long_and_distinct() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
