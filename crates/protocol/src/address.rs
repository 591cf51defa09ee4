//! Handle ids, resolved addresses, and requested endpoints.
//!
//! Two different things look alike on the wire and are kept apart in types:
//! - an [`Endpoint`] is what a guest *asks for* (`{host, port}` with a host *name*, or a
//!   Unix `{path}`), resolved by the sidecar inside the guest's VM;
//! - an [`Address`] is what the sidecar *reports* (`local`/`remote` of a socket): always an
//!   IP literal and port, or a path, shaped like Node's `socket.address()` so a shim can
//!   pass it through.
//!
//! Socket and server ids are separate newtypes so the sidecar cannot hand a server id to a
//! socket operation by mistake; on the wire both are plain integers.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Names a socket (TCP, Unix stream, or UDP) inside one session.
///
/// Ids are minted by the sidecar from one per-session counter shared with [`ServerId`],
/// start at 1 and are never reused within a session, so a stale id is always `EBADF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SocketId(pub u64);

/// Names a listening server inside one session (same counter as [`SocketId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerId(pub u64);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket {}", self.0)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {}", self.0)
    }
}

/// A concrete socket address as the sidecar reports it.
///
/// Wire shapes: `{"address":"127.0.0.1","port":8080,"family":"IPv4"}` (family `"IPv6"` for
/// IPv6, including v4-mapped `::ffff:a.b.c.d`), or `{"path":"/run/app.sock"}` for Unix
/// sockets (an unnamed Unix peer has `"path":""`). `family` is informative: decoding
/// derives it from the address and ignores the field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "AddressRepr", into = "AddressRepr")]
pub enum Address {
    /// IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix socket path in the VM's own namespace (never the host filesystem).
    Unix(String),
}

impl Address {
    /// The Node-style family name: `"IPv4"`, `"IPv6"`, or `None` for Unix.
    pub fn family(&self) -> Option<&'static str> {
        match self {
            Address::Inet(SocketAddr::V4(_)) => Some("IPv4"),
            Address::Inet(SocketAddr::V6(_)) => Some("IPv6"),
            Address::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Inet(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => addr.fmt(f),
            Address::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AddressRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family: Option<FamilyName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

/// The `family` field: written from the address, read and ignored (any string is taken,
/// as before, without allocating a copy of it on every address of every event).
struct FamilyName(&'static str);

impl Serialize for FamilyName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for FamilyName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyString;
        impl serde::de::Visitor<'_> for AnyString {
            type Value = FamilyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<FamilyName, E> {
                Ok(FamilyName(""))
            }
        }
        deserializer.deserialize_str(AnyString)
    }
}

impl TryFrom<AddressRepr> for Address {
    type Error = String;

    fn try_from(repr: AddressRepr) -> Result<Self, String> {
        match (repr.address, repr.port, repr.path) {
            (Some(ip), Some(port), None) => Ok(Address::Inet(SocketAddr::new(ip, port))),
            (None, None, Some(path)) => Ok(Address::Unix(path)),
            _ => Err("an address is {address, port[, family]} or {path}".to_owned()),
        }
    }
}

impl From<Address> for AddressRepr {
    fn from(addr: Address) -> Self {
        let family = addr.family().map(FamilyName);
        match addr {
            Address::Inet(sa) => AddressRepr {
                address: Some(sa.ip()),
                port: Some(sa.port()),
                family,
                path: None,
            },
            Address::Unix(path) => AddressRepr {
                address: None,
                port: None,
                family: None,
                path: Some(path),
            },
        }
    }
}

/// What a guest asks to connect to or listen on: `{host?, port}` or `{path}`.
///
/// `host` may be a name (`"localhost"`) or an IP literal; it is resolved inside the VM.
/// When absent, the call's documented default applies (see [`Endpoint::host_or`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EndpointRepr", into = "EndpointRepr")]
pub enum Endpoint {
    /// A TCP endpoint.
    Inet {
        /// Host name or IP literal; `None` means the call's default.
        host: Option<String>,
        /// Port (0 = ephemeral, for listen).
        port: u16,
    },
    /// A Unix stream socket path (relative paths resolve against hello's `cwd`).
    Unix {
        /// The path.
        path: String,
    },
}

impl Endpoint {
    /// An inet endpoint with an explicit host.
    pub fn inet(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint::Inet {
            host: Some(host.into()),
            port,
        }
    }

    /// A Unix path endpoint.
    pub fn unix(path: impl Into<String>) -> Endpoint {
        Endpoint::Unix { path: path.into() }
    }

    /// The host, or `default` when the guest left it out (inet only).
    pub fn host_or<'a>(&'a self, default: &'a str) -> Option<&'a str> {
        match self {
            Endpoint::Inet { host, .. } => Some(host.as_deref().unwrap_or(default)),
            Endpoint::Unix { .. } => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EndpointRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

impl TryFrom<EndpointRepr> for Endpoint {
    type Error = String;

    fn try_from(repr: EndpointRepr) -> Result<Self, String> {
        match (repr.host, repr.port, repr.path) {
            (host, Some(port), None) => Ok(Endpoint::Inet { host, port }),
            (None, None, Some(path)) => Ok(Endpoint::Unix { path }),
            _ => Err("expected {host, port} or {path}".to_owned()),
        }
    }
}

impl From<Endpoint> for EndpointRepr {
    fn from(ep: Endpoint) -> Self {
        match ep {
            Endpoint::Inet { host, port } => EndpointRepr {
                host,
                port: Some(port),
                path: None,
            },
            Endpoint::Unix { path } => EndpointRepr {
                host: None,
                port: None,
                path: Some(path),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inet_address_has_node_shape() {
        let addr = Address::Inet("127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            serde_json::to_value(&addr).unwrap(),
            json!({"address": "127.0.0.1", "port": 8080, "family": "IPv4"})
        );
        let v6 = Address::Inet("[::ffff:127.0.0.1]:9".parse().unwrap());
        let value = serde_json::to_value(&v6).unwrap();
        assert_eq!(value["family"], "IPv6");
        assert_eq!(serde_json::from_value::<Address>(value).unwrap(), v6);
    }

    #[test]
    fn unix_address_round_trips() {
        let addr = Address::Unix("/run/a.sock".to_owned());
        let value = serde_json::to_value(&addr).unwrap();
        assert_eq!(value, json!({"path": "/run/a.sock"}));
        assert_eq!(serde_json::from_value::<Address>(value).unwrap(), addr);
    }

    #[test]
    fn address_family_field_is_ignored_on_decode() {
        let addr: Address =
            serde_json::from_value(json!({"address": "::1", "port": 1, "family": "bogus"}))
                .unwrap();
        assert_eq!(addr.family(), Some("IPv6"));
        // Ignored, but still a string, from a borrowed or an escaped (owned) JSON string.
        let escaped = br#"{"address":"::1","port":1,"family":"IP\u00766"}"#;
        assert!(serde_json::from_slice::<Address>(escaped).is_ok());
        let number = json!({"address": "::1", "port": 1, "family": 6});
        assert!(serde_json::from_value::<Address>(number).is_err());
        let v6 = serde_json::to_value(Address::Inet("[::1]:1".parse().unwrap())).unwrap();
        assert_eq!(v6["family"], "IPv6");
    }

    #[test]
    fn ambiguous_address_is_rejected() {
        let both = json!({"address": "127.0.0.1", "port": 1, "path": "/x"});
        assert!(serde_json::from_value::<Address>(both).is_err());
        assert!(serde_json::from_value::<Address>(json!({"address": "127.0.0.1"})).is_err());
        assert!(serde_json::from_value::<Address>(json!({"address": "nope", "port": 1})).is_err());
    }

    #[test]
    fn endpoint_shapes() {
        let ep: Endpoint = serde_json::from_value(json!({"port": 80})).unwrap();
        assert_eq!(
            ep,
            Endpoint::Inet {
                host: None,
                port: 80
            }
        );
        assert_eq!(ep.host_or("localhost"), Some("localhost"));
        let ep: Endpoint = serde_json::from_value(json!({"path": "a.sock"})).unwrap();
        assert_eq!(ep, Endpoint::unix("a.sock"));
        assert_eq!(ep.host_or("localhost"), None);
        assert!(serde_json::from_value::<Endpoint>(json!({"host": "x"})).is_err());
        assert!(serde_json::from_value::<Endpoint>(json!({"port": 1, "path": "/p"})).is_err());
        assert!(serde_json::from_value::<Endpoint>(json!({"port": 70000})).is_err());
        assert_eq!(
            serde_json::to_value(Endpoint::inet("localhost", 8080)).unwrap(),
            json!({"host": "localhost", "port": 8080})
        );
    }

    #[test]
    fn ids_are_plain_integers() {
        assert_eq!(serde_json::to_string(&SocketId(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<ServerId>("9").unwrap(), ServerId(9));
    }
}
