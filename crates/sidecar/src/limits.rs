//! The operator's limits: the sidecar-wide [`Limits`], and the [`LimitOverrides`] one VM
//! may have on top of them.
//!
//! Why per VM: VMs are tenants of different sizes. One that runs a busy server needs more
//! sockets than a batch job, and one that is not trusted gets less buffer. A VM's
//! *effective* limits are its overrides merged over the globals
//! ([`crate::SidecarConfig::limits_for`]); the core keeps them with the VM's socket table
//! and refreshes them when a configuration is applied, so a reload reaches new calls while
//! what live sessions already hold (a host connection's write limits) stays as it was.

use std::time::Duration;

use sidecar_protocol::DEFAULT_MAX_FRAME;

/// Per-session and per-VM limits. Exceeding one is a typed error for that guest only, or
/// a counted drop where there is nobody to tell (PROTOCOL.md §13, "Limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted from a guest (bytes, as the protocol counts them). Sidecar
    /// wide: a frame is measured before its session's VM is known.
    pub max_frame: usize,
    /// Calls one session may have parked at once (a connect waiting for backlog room…).
    pub parked_calls_per_session: usize,
    /// Open sockets + servers per VM (`EMFILE` beyond).
    pub sockets_per_vm: usize,
    /// Listening servers (TCP and Unix) per VM (`EMFILE` beyond).
    pub listeners_per_vm: usize,
    /// Connections a VM has pending: accepted by the sidecar for its listeners (in-VM
    /// connects, published-port accepts) that its guests have not taken yet, plus its
    /// host connects still in progress. Beyond it an in-VM connect waits as for a full
    /// backlog, a host connect fails `EAGAIN`, a published-port connection is closed and
    /// counted (`pending_refused`, `published_refused`).
    pub pending_connections_per_vm: usize,
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
    /// (zero: never pair). Sidecar wide.
    pub pairing_wait: Duration,
    /// Period of the counted fallback re-check of parked waits (they are woken by
    /// notifications; the fallback only guards against a lost one). Sidecar wide.
    pub parked_fallback: Duration,
    // --- Before hello, headers, names, sessions (PROTOCOL.md §13) ---
    /// How long a connection accepted from a listener may take to attach (its hello,
    /// after the operator's `bind` if any). Past it the connection gets an `ETIMEDOUT`
    /// error reply and is closed. Streams the operator hands over have no deadline.
    /// Sidecar wide.
    pub hello_timeout: Duration,
    /// Connections not attached yet, sidecar wide. One beyond it takes the place of the
    /// one that has waited longest, which gets an `EAGAIN` error reply and is closed.
    pub unattached_connections: usize,
    /// Largest frame accepted before attach (a hello is small). A bigger announced frame
    /// is refused (`EMSGSIZE`, closed) before any of it is read. Sidecar wide.
    pub hello_max_frame: usize,
    /// How long a refused hello (wrong secret, unknown VM…) waits before its error reply
    /// and the close: one connection guesses a few times a second at most. Sidecar wide.
    pub refused_hello_delay: Duration,
    /// Sessions attached to one VM at once; a hello beyond it fails `EMFILE`.
    pub sessions_per_vm: usize,
    /// Largest credit window (hello) and `net.credit` grant: a larger figure is clamped
    /// to it. Sidecar wide.
    pub max_credit: u64,
    /// Largest JSON header of a frame, never parsed beyond it: on a stream, a frame whose
    /// prefix announces more is a framing error (`EMSGSIZE`, then close) before any of it
    /// is read; in process, where a frame arrives whole, the call gets an `EMSGSIZE` error
    /// and the session goes on. Sidecar wide.
    pub max_header: usize,
    // Memory held per session/VM and the loop's fairness (see `outbound`, `transport::turn`).
    /// Bytes of replies and events queued for a session's guest that its transport has
    /// not taken (both streams, and events waiting for the event channel). Past it the
    /// sidecar stops reading that session's calls and stops pushing its in-VM stream data
    /// (the writers' buffers fill: `need_drain`, then `ENOBUFS`) until the guest reads;
    /// nothing is dropped. At most one frame past it.
    pub session_outbound_bytes: usize,
    /// Bytes buffered across all of a VM's in-VM stream sockets (for writes by its
    /// guests); a write that would pass it fails `ENOBUFS`, naming this limit.
    pub buffered_bytes_per_vm: usize,
    /// Bytes of calls (headers + payloads) one session has served in one turn of the RPC
    /// loop before the others get theirs (with `FRAMES_PER_TURN`). Sidecar wide.
    pub bytes_per_turn: usize,
    // File descriptors (crate::fds).
    /// Fds of the process's limit kept back from guest sockets, so that attaches, the
    /// readiness thread and logging always have some. A guest socket that would hold a
    /// kernel fd past the limit less this fails `ENFILE` (a published connection is closed
    /// and counted); `sockets_per_vm` is clamped to the limit less this. Sidecar wide.
    pub fd_reserve: usize,
    // Host name lookups (host/dns_pool.rs).
    /// Worker threads resolving host names, for all VMs (sidecar wide). One VM occupies
    /// at most all but one of them; when all are stuck in a resolver that does not
    /// answer, lookups queue and time out (`ETIMEDOUT`), no thread is added.
    pub dns_threads: usize,
    /// Lookups a VM may have queued or running at once (one that timed out but whose
    /// resolver call has not returned still counts); beyond, `EAGAIN` at once.
    pub dns_lookups_per_vm: usize,
    /// How long a lookup may take, queued and resolving: then `ETIMEDOUT`. Sidecar wide.
    pub dns_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            parked_calls_per_session: 64,
            sockets_per_vm: 65_536,
            listeners_per_vm: 1024,
            pending_connections_per_vm: 4096,
            write_high_water: 64 * 1024,
            write_hard_limit: 4 * 1024 * 1024,
            udp_receive_buffer: 1024 * 1024,
            event_queue_bytes: 8 * 1024 * 1024,
            parked_fallback: Duration::from_secs(1),
            pairing_wait: Duration::from_secs(1),
            hello_timeout: Duration::from_secs(5),
            unattached_connections: 128,
            hello_max_frame: 16 * 1024,
            refused_hello_delay: Duration::from_millis(250),
            sessions_per_vm: 1024,
            max_credit: 16 * 1024 * 1024,
            max_header: 64 * 1024,
            session_outbound_bytes: 16 * 1024 * 1024,
            buffered_bytes_per_vm: 256 * 1024 * 1024,
            bytes_per_turn: 256 * 1024,
            fd_reserve: crate::fds::DEFAULT_RESERVE,
            dns_threads: 4,
            dns_lookups_per_vm: 8,
            dns_timeout: Duration::from_secs(5),
        }
    }
}

/// One VM's own limits, each `None` to keep the sidecar-wide value. Only the limits that
/// mean something per VM (or per session of a VM) are here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub sockets_per_vm: Option<usize>,
    pub listeners_per_vm: Option<usize>,
    pub pending_connections_per_vm: Option<usize>,
    pub parked_calls_per_session: Option<usize>,
    pub write_high_water: Option<usize>,
    pub write_hard_limit: Option<usize>,
    pub udp_receive_buffer: Option<usize>,
    pub event_queue_bytes: Option<usize>,
    pub sessions_per_vm: Option<usize>,
    pub session_outbound_bytes: Option<usize>,
    pub buffered_bytes_per_vm: Option<usize>,
    pub dns_lookups_per_vm: Option<usize>,
}

/// Effective limits that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("write_high_water ({high}) is above write_hard_limit ({hard})")]
    HighWaterAboveHardLimit { high: usize, hard: usize },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl LimitOverrides {
    /// These overrides merged over `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            sockets_per_vm: self.sockets_per_vm.unwrap_or(base.sockets_per_vm),
            listeners_per_vm: self.listeners_per_vm.unwrap_or(base.listeners_per_vm),
            pending_connections_per_vm: self
                .pending_connections_per_vm
                .unwrap_or(base.pending_connections_per_vm),
            parked_calls_per_session: self
                .parked_calls_per_session
                .unwrap_or(base.parked_calls_per_session),
            write_high_water: self.write_high_water.unwrap_or(base.write_high_water),
            write_hard_limit: self.write_hard_limit.unwrap_or(base.write_hard_limit),
            udp_receive_buffer: self.udp_receive_buffer.unwrap_or(base.udp_receive_buffer),
            event_queue_bytes: self.event_queue_bytes.unwrap_or(base.event_queue_bytes),
            sessions_per_vm: self.sessions_per_vm.unwrap_or(base.sessions_per_vm),
            session_outbound_bytes: self
                .session_outbound_bytes
                .unwrap_or(base.session_outbound_bytes),
            buffered_bytes_per_vm: self
                .buffered_bytes_per_vm
                .unwrap_or(base.buffered_bytes_per_vm),
            dns_lookups_per_vm: self.dns_lookups_per_vm.unwrap_or(base.dns_lookups_per_vm),
            ..base.clone()
        }
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }
}

impl Limits {
    /// Checks that these limits can work together.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.write_high_water > self.write_hard_limit {
            return Err(LimitsError::HighWaterAboveHardLimit {
                high: self.write_high_water,
                hard: self.write_hard_limit,
            });
        }
        for (name, value) in [
            ("dns_threads", self.dns_threads as u128),
            ("dns_lookups_per_vm", self.dns_lookups_per_vm as u128),
            ("dns_timeout", self.dns_timeout.as_millis()),
        ] {
            if value == 0 {
                return Err(LimitsError::Zero(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = Limits {
            sockets_per_vm: 10,
            ..Limits::default()
        };
        let own = LimitOverrides {
            pending_connections_per_vm: Some(3),
            write_hard_limit: Some(1 << 20),
            ..LimitOverrides::default()
        };
        let merged = own.over(&base);
        assert_eq!(merged.sockets_per_vm, 10);
        assert_eq!(merged.pending_connections_per_vm, 3);
        assert_eq!(merged.write_hard_limit, 1 << 20);
        assert_eq!(merged.max_frame, base.max_frame);
        assert_eq!(LimitOverrides::default().over(&base), base);
        assert!(LimitOverrides::default().is_empty() && !own.is_empty());
    }

    #[test]
    fn a_high_water_above_the_hard_limit_is_refused() {
        let bad = LimitOverrides {
            write_high_water: Some(10),
            write_hard_limit: Some(5),
            ..LimitOverrides::default()
        };
        assert!(bad.over(&Limits::default()).validate().is_err());
        assert!(Limits::default().validate().is_ok());
    }
}
