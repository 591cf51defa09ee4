//! Params and results of the `net.*` calls (TCP and Unix stream sockets, poll, credit).
//!
//! Field names follow the call catalogue guest polyfills already speak, in snake_case.
//! Unknown fields are ignored (never `deny_unknown_fields`), so a newer guest can send
//! optional fields an older sidecar does not know. Calls with no useful result answer
//! [`Empty`] (`{}`) rather than `null`, so a result can grow fields later.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::address::{Address, Endpoint, ServerId, SocketId};
use crate::event::Event;

/// Default `net.connect` timeout (30 s).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 30_000;
/// Default listen backlog (Node's default).
pub const DEFAULT_BACKLOG: u32 = 511;
/// The sidecar clamps a poll's `wait_ms` to this (ms).
pub const MAX_POLL_WAIT_MS: u64 = 50;
/// Host a `net.connect` without `host` goes to (Node's default).
pub const DEFAULT_CONNECT_HOST: &str = "localhost";
/// Host a `net.listen` without `host` binds (dual-stack, Node's default).
pub const DEFAULT_LISTEN_HOST: &str = "::";

/// The result of calls that have nothing to say: `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// `net.connect`: `{host?, port, timeout_ms?}` or `{path, timeout_ms?}`.
///
/// Answered once the connection is established (the call is parked meanwhile, never
/// blocking the sidecar); a `connect` event for the new socket follows the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectParams {
    /// Where to connect; `host` defaults to [`DEFAULT_CONNECT_HOST`].
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Deadline for the whole connect; default [`DEFAULT_CONNECT_TIMEOUT_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl ConnectParams {
    /// A connect with the default timeout.
    pub fn new(endpoint: Endpoint) -> ConnectParams {
        ConnectParams {
            endpoint,
            timeout_ms: None,
        }
    }

    /// The effective timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS))
    }
}

/// Result of `net.connect`: the new socket and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectResult {
    /// The new socket.
    pub socket: SocketId,
    /// Local address.
    pub local: Address,
    /// Peer address.
    pub remote: Address,
}

/// `net.listen`: `{host?, port, backlog?}` or `{path, backlog?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenParams {
    /// Where to listen; `host` defaults to [`DEFAULT_LISTEN_HOST`]; port 0 = ephemeral.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Pending-connection limit; default [`DEFAULT_BACKLOG`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}

impl ListenParams {
    /// A listen with the default backlog.
    pub fn new(endpoint: Endpoint) -> ListenParams {
        ListenParams {
            endpoint,
            backlog: None,
        }
    }

    /// The effective backlog.
    pub fn backlog(&self) -> u32 {
        self.backlog.unwrap_or(DEFAULT_BACKLOG)
    }
}

/// Result of `net.listen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenResult {
    /// The new server.
    pub server: ServerId,
    /// The bound address (with the actual port when 0 was asked).
    pub local: Address,
}

/// `net.write`: `{socket}`; the bytes are the frame payload (may be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteParams {
    /// The socket to write to.
    pub socket: SocketId,
}

/// Result of `net.write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WriteResult {
    /// Bytes the sidecar now holds for this socket, not yet taken by the peer.
    pub buffered: u64,
    /// `true` when `buffered` passed the high-water mark (Node's `write()` returning
    /// `false`): a `drain` event follows once it falls below.
    pub need_drain: bool,
}

/// `net.shutdown`: send FIN (half-close); the socket can still receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownParams {
    /// The socket.
    pub socket: SocketId,
}

/// `net.destroy`: close the socket now (unread data discarded; a `close` event follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyParams {
    /// The socket.
    pub socket: SocketId,
    /// Close with a reset (Node's `resetAndDestroy()`): a host TCP socket sends RST
    /// (`SO_LINGER` 0), an in-VM peer gets `error ECONNRESET`. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl DestroyParams {
    /// A plain destroy (no reset).
    pub fn new(socket: SocketId) -> DestroyParams {
        DestroyParams {
            socket,
            reset: false,
        }
    }
}

/// `net.server_close`: stop listening (a `close` event for the server follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCloseParams {
    /// The server.
    pub server: ServerId,
}

/// `net.socket_set_no_delay`: Node's `setNoDelay(enable)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetNoDelayParams {
    /// The socket.
    pub socket: SocketId,
    /// Disable Nagle when `true` (default `true`, as Node).
    #[serde(default = "default_true")]
    pub enable: bool,
}

/// `net.socket_set_keep_alive`: Node's `setKeepAlive(enable, initialDelay)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetKeepAliveParams {
    /// The socket.
    pub socket: SocketId,
    /// Enable keep-alive (default `false`, as Node).
    #[serde(default)]
    pub enable: bool,
    /// Idle time before the first probe (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_ms: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// `net.poll` (poll mode): the next event of a socket, or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollParams {
    /// The socket.
    pub socket: SocketId,
    /// 0 = answer at once; > 0 = park until an event or the deadline (clamped to
    /// [`MAX_POLL_WAIT_MS`]).
    #[serde(default)]
    pub wait_ms: u64,
}

/// `net.server_poll` (poll mode): the next event of a server (an `accept`), or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPollParams {
    /// The server.
    pub server: ServerId,
    /// As [`PollParams::wait_ms`].
    #[serde(default)]
    pub wait_ms: u64,
}

/// Result of the poll calls: `null`, or one event with exactly the pushed shape.
/// A `data`/`message` event's bytes are the reply frame's payload.
pub type PollResult = Option<Event>;

/// Clamps a requested poll wait to [`MAX_POLL_WAIT_MS`].
pub fn clamp_wait(wait_ms: u64) -> Duration {
    Duration::from_millis(wait_ms.min(MAX_POLL_WAIT_MS))
}

/// `net.credit`: grant the sidecar `bytes` more of this socket's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditParams {
    /// The socket (TCP/Unix stream).
    pub socket: SocketId,
    /// Bytes consumed since the last grant.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connect_shapes() {
        let p: ConnectParams =
            serde_json::from_value(json!({"host": "localhost", "port": 80, "timeout_ms": 5}))
                .unwrap();
        assert_eq!(p.endpoint, Endpoint::inet("localhost", 80));
        assert_eq!(p.timeout(), Duration::from_millis(5));
        let p: ConnectParams = serde_json::from_value(json!({"path": "/s"})).unwrap();
        assert_eq!(p, ConnectParams::new(Endpoint::unix("/s")));
        assert_eq!(p.timeout(), Duration::from_secs(30));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"path": "/s"}),
            "defaults are not serialized"
        );
        assert!(serde_json::from_value::<ConnectParams>(json!({"timeout_ms": 1})).is_err());
    }

    #[test]
    fn listen_shapes() {
        let p: ListenParams =
            serde_json::from_value(json!({"port": 0, "backlog": 2, "extra": true})).unwrap();
        assert_eq!(p.endpoint.host_or(DEFAULT_LISTEN_HOST), Some("::"));
        assert_eq!(p.backlog(), 2);
        let p: ListenParams = serde_json::from_value(json!({"path": "a.sock"})).unwrap();
        assert_eq!(p.backlog(), DEFAULT_BACKLOG);
        let back = serde_json::to_value(ListenParams {
            backlog: Some(8),
            ..ListenParams::new(Endpoint::inet("127.0.0.1", 8080))
        })
        .unwrap();
        assert_eq!(
            back,
            json!({"host": "127.0.0.1", "port": 8080, "backlog": 8})
        );
    }

    #[test]
    fn socket_option_defaults_follow_node() {
        let p: SetNoDelayParams = serde_json::from_value(json!({"socket": 1})).unwrap();
        assert!(p.enable);
        let p: SetKeepAliveParams = serde_json::from_value(json!({"socket": 1})).unwrap();
        assert!(!p.enable);
        assert_eq!(p.initial_delay_ms, None);
    }

    #[test]
    fn poll_wait_defaults_to_zero_and_clamps() {
        let p: PollParams = serde_json::from_value(json!({"socket": 3})).unwrap();
        assert_eq!(p.wait_ms, 0);
        assert_eq!(clamp_wait(10), Duration::from_millis(10));
        assert_eq!(clamp_wait(10_000), Duration::from_millis(50));
    }

    #[test]
    fn empty_is_an_object() {
        assert_eq!(serde_json::to_string(&Empty {}).unwrap(), "{}");
        assert_eq!(
            serde_json::from_str::<Empty>(r#"{"x":1}"#).unwrap(),
            Empty {}
        );
    }
}
