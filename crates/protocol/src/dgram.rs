//! Params and results of the `dgram.*` (UDP), `dns.lookup` and `stats` calls.
//!
//! UDP keeps datagram boundaries: one `dgram.send` payload is one datagram, one `message`
//! event payload is one datagram. As with streams, bytes travel as the frame payload.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::address::{Address, SocketId};

/// Largest UDP payload (bytes); larger sends fail with `EMSGSIZE`.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The UDP socket family, as Node's `dgram.createSocket(type)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpType {
    /// IPv4.
    Udp4,
    /// IPv6 (dual-stack unless the socket binds a specific address).
    Udp6,
}

impl UdpType {
    /// The wildcard host a `dgram.bind` without `host` binds.
    pub fn wildcard(self) -> &'static str {
        match self {
            UdpType::Udp4 => "0.0.0.0",
            UdpType::Udp6 => "::",
        }
    }
}

/// `dgram.createSocket`: `{type: "udp4" | "udp6"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSocketParams {
    /// Socket family.
    #[serde(rename = "type")]
    pub udp_type: UdpType,
}

/// Result of `dgram.createSocket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSocketResult {
    /// The new (unbound) UDP socket.
    pub socket: SocketId,
}

/// `dgram.bind`: `{socket, host?, port?}`; host defaults to the type's wildcard, port to 0
/// (ephemeral). Address taken → `EADDRINUSE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// Address to bind (IP literal or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port (0 = ephemeral).
    #[serde(default)]
    pub port: u16,
    /// `SO_REUSEADDR` (Node's `reuseAddr`): sockets that all set it may bind the same
    /// address and port (each receives a group's or a broadcast's datagrams; a unicast
    /// datagram reaches one of them). Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_addr: bool,
}

/// Result of `dgram.bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindResult {
    /// The bound address, with the actual port.
    pub local: Address,
}

/// `dgram.connect`: `{socket, host?, port}`; host defaults to `localhost`. Binds an
/// ephemeral port first if the socket is unbound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgramConnectParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// Peer host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Peer port.
    pub port: u16,
}

/// Result of `dgram.connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgramConnectResult {
    /// Local address.
    pub local: Address,
    /// The connected peer.
    pub remote: Address,
}

/// `dgram.send`: `{socket, host?, port?}`; the datagram is the frame payload.
///
/// With `port` absent the datagram goes to the connected peer (an unconnected socket then
/// fails with `EDESTADDRREQ`; `host` without `port` is `EINVAL`). With `port` and no
/// `host`, the host is `localhost`. An unbound socket is bound to an ephemeral port first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// Destination host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl SendParams {
    /// The explicit destination (`host` defaulted to `localhost`), `None` for the
    /// connected peer, or an error for `host` without `port`.
    pub fn destination(&self) -> Result<Option<(&str, u16)>, crate::WireError> {
        match (&self.host, self.port) {
            (_, Some(port)) => Ok(Some((self.host.as_deref().unwrap_or("localhost"), port))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(crate::WireError::invalid("dgram.send: host without port")),
        }
    }
}

/// Result of `dgram.send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// Bytes sent (the datagram's size).
    pub bytes: u64,
}

/// `dgram.poll` (poll mode): the next event of a UDP socket, or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgramPollParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// As [`crate::net::PollParams::wait_ms`].
    #[serde(default)]
    pub wait_ms: u64,
}

/// `dgram.disconnect`: the socket hears from anyone again and needs a destination per
/// send (`ENOTCONN` if it is not connected). Its local address stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgramDisconnectParams {
    /// The UDP socket.
    pub socket: SocketId,
}

/// `dgram.close` (a `close` event follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgramCloseParams {
    /// The UDP socket.
    pub socket: SocketId,
}

/// An address family as `dns.lookup` numbers it: 0 (any), 4 or 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Family {
    /// Either (lookup param only).
    #[default]
    Any,
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl TryFrom<u8> for Family {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            0 => Ok(Family::Any),
            4 => Ok(Family::V4),
            6 => Ok(Family::V6),
            other => Err(format!("family must be 0, 4 or 6, not {other}")),
        }
    }
}

impl From<Family> for u8 {
    fn from(f: Family) -> u8 {
        match f {
            Family::Any => 0,
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

/// `dns.lookup`: `{host, family?}`, resolved inside the guest's VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupParams {
    /// Name or IP literal.
    pub host: String,
    /// 0 (default) = both families, 4 or 6.
    #[serde(default)]
    pub family: Family,
}

/// One resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupAddress {
    /// The address.
    pub address: IpAddr,
    /// 4 or 6.
    pub family: Family,
}

impl From<IpAddr> for LookupAddress {
    fn from(address: IpAddr) -> Self {
        LookupAddress {
            address,
            family: Family::of(&address),
        }
    }
}

/// Result of `dns.lookup`: every address, preferred first (never empty: no address is
/// `ENOTFOUND`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupResult {
    /// The addresses.
    pub addresses: Vec<LookupAddress>,
}

/// `stats`: no params; the result is a JSON object whose schema the sidecar documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatsParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_socket_uses_type_field() {
        let p: CreateSocketParams = serde_json::from_value(json!({"type": "udp6"})).unwrap();
        assert_eq!(p.udp_type, UdpType::Udp6);
        assert_eq!(serde_json::to_value(p).unwrap(), json!({"type": "udp6"}));
        assert!(serde_json::from_value::<CreateSocketParams>(json!({"type": "udp5"})).is_err());
        assert_eq!(UdpType::Udp4.wildcard(), "0.0.0.0");
    }

    #[test]
    fn send_destination_rules() {
        let p = |v| serde_json::from_value::<SendParams>(v).unwrap();
        assert_eq!(p(json!({"socket": 1})).destination().unwrap(), None);
        assert_eq!(
            p(json!({"socket": 1, "port": 9})).destination().unwrap(),
            Some(("localhost", 9))
        );
        assert_eq!(
            p(json!({"socket": 1, "host": "::1", "port": 9}))
                .destination()
                .unwrap(),
            Some(("::1", 9))
        );
        let err = p(json!({"socket": 1, "host": "::1"}))
            .destination()
            .unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::Einval);
    }

    #[test]
    fn bind_defaults() {
        let p: BindParams = serde_json::from_value(json!({"socket": 2})).unwrap();
        assert_eq!((p.host, p.port), (None, 0));
    }

    #[test]
    fn lookup_families_are_numbers() {
        let p: LookupParams = serde_json::from_value(json!({"host": "localhost"})).unwrap();
        assert_eq!(p.family, Family::Any);
        let p: LookupParams =
            serde_json::from_value(json!({"host": "localhost", "family": 6})).unwrap();
        assert_eq!(p.family, Family::V6);
        assert!(serde_json::from_value::<LookupParams>(json!({"host": "x", "family": 5})).is_err());
        let r = LookupResult {
            addresses: vec![
                "127.0.0.1".parse::<IpAddr>().unwrap().into(),
                "::1".parse::<IpAddr>().unwrap().into(),
            ],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"addresses": [{"address": "127.0.0.1", "family": 4},
                                 {"address": "::1", "family": 6}]})
        );
        assert_eq!(serde_json::from_value::<LookupResult>(v).unwrap(), r);
    }
}
