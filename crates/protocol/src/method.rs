//! The call catalogue: method names, their typed params and results, in one table.
//!
//! The table below is the single place a method is declared. From it the macro derives
//! [`Method`] (name ↔ enum), [`Request`] (a parsed call: method + typed params) and the
//! [`CallParams`] trait that ties each params type to its method and result type, so a
//! client can write `call::<ConnectParams>(..) -> ConnectResult` and the sidecar can
//! `match` on a [`Request`]; neither can drift from the other.
//!
//! Parsing is split from header decoding on purpose: a well-formed call with an unknown
//! method or bad params is a per-call error (`ENOSYS` / `EINVAL` reply), never a session
//! error, and an unknown method must not make the whole header unparseable.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::dgram::*;
use crate::dgram_options::*;
use crate::error::{ErrorCode, WireError};
use crate::hello::{HelloParams, HelloResult};
use crate::net::*;

/// Ties a params type to its method and its result type.
pub trait CallParams: Serialize + DeserializeOwned + Into<Request> {
    /// The method these params belong to.
    const METHOD: Method;
    /// The type of the reply's `result`.
    type Result: Serialize + DeserializeOwned;
}

/// A method name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown method {0:?}")]
pub struct UnknownMethod(pub String);

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $params:ty => $result:ty; )*) => {
        /// Every method of the protocol (wire names as in `as_str`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $( $(#[$doc])* $variant, )*
        }

        impl Method {
            /// Every method, in catalogue order.
            pub const ALL: &'static [Method] = &[ $( Method::$variant, )* ];

            /// The wire name, e.g. `"net.connect"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Method::$variant => $name, )*
                }
            }
        }

        impl FromStr for Method {
            type Err = UnknownMethod;

            fn from_str(s: &str) -> Result<Method, UnknownMethod> {
                match s {
                    $( $name => Ok(Method::$variant), )*
                    other => Err(UnknownMethod(other.to_owned())),
                }
            }
        }

        /// A parsed call: its method and typed params.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $( $(#[$doc])* $variant($params), )*
        }

        impl Request {
            /// The method.
            pub fn method(&self) -> Method {
                match self {
                    $( Request::$variant(_) => Method::$variant, )*
                }
            }

            /// Parses params for a method name. `null` params count as `{}`.
            pub fn parse(method: &str, params: Value) -> Result<Request, RequestError> {
                let method: Method = method.parse()?;
                let params = match params {
                    Value::Null => Value::Object(serde_json::Map::new()),
                    other => other,
                };
                let invalid = |e: serde_json::Error| RequestError::InvalidParams {
                    method,
                    message: e.to_string(),
                };
                Ok(match method {
                    $( Method::$variant => {
                        Request::$variant(serde_json::from_value(params).map_err(invalid)?)
                    } )*
                })
            }

            /// As [`Request::parse`], straight from the params' JSON text, with no `Value`
            /// in between. `None` where it cannot take the text as is: then
            /// [`Request::parse`] decides, with its own errors.
            pub(crate) fn parse_text(method: Method, params: &str) -> Option<Request> {
                Some(match method {
                    $( Method::$variant => {
                        Request::$variant(serde_json::from_str(params).ok()?)
                    } )*
                })
            }

            /// The params as a JSON value.
            pub fn params_value(&self) -> Value {
                let value = match self {
                    $( Request::$variant(p) => serde_json::to_value(p), )*
                };
                // Params are plain structs with string keys: serializing cannot fail.
                value.expect("protocol params always serialize")
            }
        }

        $(
            impl CallParams for $params {
                const METHOD: Method = Method::$variant;
                type Result = $result;
            }

            impl From<$params> for Request {
                fn from(p: $params) -> Request {
                    Request::$variant(p)
                }
            }
        )*
    };
}

catalogue! {
    /// `hello`: version, attach, mode, credit, capabilities.
    Hello = "hello", HelloParams => HelloResult;
    /// `net.connect`: open a stream socket to `{host, port}` or `{path}`.
    Connect = "net.connect", ConnectParams => ConnectResult;
    /// `net.listen`: listen on `{host, port}` or `{path}`.
    Listen = "net.listen", ListenParams => ListenResult;
    /// `net.write`: write the frame payload to a socket.
    Write = "net.write", WriteParams => WriteResult;
    /// `net.shutdown`: half-close (FIN).
    Shutdown = "net.shutdown", ShutdownParams => Empty;
    /// `net.destroy`: close a socket now.
    Destroy = "net.destroy", DestroyParams => Empty;
    /// `net.server_close`: stop a server.
    ServerClose = "net.server_close", ServerCloseParams => Empty;
    /// `net.socket_set_no_delay`.
    SetNoDelay = "net.socket_set_no_delay", SetNoDelayParams => Empty;
    /// `net.socket_set_keep_alive`.
    SetKeepAlive = "net.socket_set_keep_alive", SetKeepAliveParams => Empty;
    /// `net.poll` (poll mode).
    Poll = "net.poll", PollParams => PollResult;
    /// `net.server_poll` (poll mode).
    ServerPoll = "net.server_poll", ServerPollParams => PollResult;
    /// `net.credit`: grow a socket's receive window.
    Credit = "net.credit", CreditParams => Empty;
    /// `dgram.createSocket`.
    DgramCreateSocket = "dgram.createSocket", CreateSocketParams => CreateSocketResult;
    /// `dgram.bind`.
    DgramBind = "dgram.bind", BindParams => BindResult;
    /// `dgram.connect`.
    DgramConnect = "dgram.connect", DgramConnectParams => DgramConnectResult;
    /// `dgram.disconnect`.
    DgramDisconnect = "dgram.disconnect", DgramDisconnectParams => Empty;
    /// `dgram.send`: send the frame payload as one datagram.
    DgramSend = "dgram.send", SendParams => SendResult;
    /// `dgram.poll` (poll mode).
    DgramPoll = "dgram.poll", DgramPollParams => PollResult;
    /// `dgram.close`.
    DgramClose = "dgram.close", DgramCloseParams => Empty;
    /// `dgram.add_membership`: join a multicast group (in the VM).
    DgramAddMembership = "dgram.add_membership", AddMembershipParams => Empty;
    /// `dgram.drop_membership`: leave a multicast group.
    DgramDropMembership = "dgram.drop_membership", DropMembershipParams => Empty;
    /// `dgram.set_broadcast`.
    DgramSetBroadcast = "dgram.set_broadcast", SetBroadcastParams => Empty;
    /// `dgram.set_ttl`.
    DgramSetTtl = "dgram.set_ttl", SetTtlParams => Empty;
    /// `dgram.set_multicast_ttl`.
    DgramSetMulticastTtl = "dgram.set_multicast_ttl", SetMulticastTtlParams => Empty;
    /// `dgram.set_multicast_loopback`.
    DgramSetMulticastLoopback = "dgram.set_multicast_loopback", SetMulticastLoopbackParams => Empty;
    /// `dgram.set_multicast_interface`.
    DgramSetMulticastInterface = "dgram.set_multicast_interface", SetMulticastInterfaceParams => Empty;
    /// `dns.lookup`.
    DnsLookup = "dns.lookup", LookupParams => LookupResult;
    /// `stats`: sidecar metrics (schema documented by the sidecar).
    Stats = "stats", StatsParams => Value;
}

impl Method {
    /// Whether calls of this method carry bytes as the frame payload (`net.write`,
    /// `dgram.send`). Other calls must have an empty payload (else `EINVAL`).
    pub fn has_payload(self) -> bool {
        matches!(self, Method::Write | Method::DgramSend)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a well-framed call could not be turned into a [`Request`]. Never fatal for the
/// session: answer [`RequestError::to_wire_error`] and go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The method is not in the catalogue → `ENOSYS`.
    #[error(transparent)]
    UnknownMethod(#[from] UnknownMethod),
    /// The params do not fit the method → `EINVAL`.
    #[error("invalid params for {method}: {message}")]
    InvalidParams {
        /// The method.
        method: Method,
        /// What was wrong (serde's description).
        message: String,
    },
}

impl RequestError {
    /// The error to send back: `ENOSYS` for an unknown method, `EINVAL` for bad params.
    pub fn to_wire_error(&self) -> WireError {
        let code = match self {
            RequestError::UnknownMethod(_) => ErrorCode::Enosys,
            RequestError::InvalidParams { .. } => ErrorCode::Einval,
        };
        WireError::new(code, self.to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::address::{Endpoint, ServerId, SocketId};
    use serde_json::json;

    #[test]
    fn names_round_trip_and_match_the_design_catalogue() {
        let expected = [
            "hello",
            "net.connect",
            "net.listen",
            "net.write",
            "net.shutdown",
            "net.destroy",
            "net.server_close",
            "net.socket_set_no_delay",
            "net.socket_set_keep_alive",
            "net.poll",
            "net.server_poll",
            "net.credit",
            "dgram.createSocket",
            "dgram.bind",
            "dgram.connect",
            "dgram.disconnect",
            "dgram.send",
            "dgram.poll",
            "dgram.close",
            "dgram.add_membership",
            "dgram.drop_membership",
            "dgram.set_broadcast",
            "dgram.set_ttl",
            "dgram.set_multicast_ttl",
            "dgram.set_multicast_loopback",
            "dgram.set_multicast_interface",
            "dns.lookup",
            "stats",
        ];
        let names: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, expected);
        for m in Method::ALL {
            assert_eq!(m.as_str().parse::<Method>().unwrap(), *m);
        }
    }

    #[test]
    fn unknown_method_is_enosys() {
        let err = Request::parse("net.teleport", json!({})).unwrap_err();
        assert_eq!(
            err,
            RequestError::UnknownMethod(UnknownMethod("net.teleport".into()))
        );
        assert_eq!(err.to_wire_error().code, ErrorCode::Enosys);
        // Names are case-sensitive, as in the catalogue.
        assert!("NET.CONNECT".parse::<Method>().is_err());
    }

    #[test]
    fn bad_params_are_einval_with_the_method() {
        let err = Request::parse("net.write", json!({"socket": "three"})).unwrap_err();
        match &err {
            RequestError::InvalidParams { method, .. } => assert_eq!(*method, Method::Write),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.to_wire_error().code, ErrorCode::Einval);
        assert!(Request::parse("net.connect", json!([1, 2])).is_err());
    }

    #[test]
    fn null_params_mean_empty_object() {
        assert_eq!(
            Request::parse("stats", Value::Null).unwrap(),
            Request::Stats(StatsParams {})
        );
        assert!(Request::parse("net.write", Value::Null).is_err());
    }

    /// One valid params object per method, in [`Method::ALL`] order.
    pub(crate) fn method_samples() -> Vec<Value> {
        vec![
            json!({"version": 1, "vm": "dev", "secret": "s"}),
            json!({"host": "localhost", "port": 80}),
            json!({"path": "/a.sock", "backlog": 4}),
            json!({"socket": 1}),
            json!({"socket": 1}),
            json!({"socket": 1}),
            json!({"server": 2}),
            json!({"socket": 1, "enable": false}),
            json!({"socket": 1, "enable": true, "initial_delay_ms": 1000}),
            json!({"socket": 1, "wait_ms": 10}),
            json!({"server": 2, "wait_ms": 0}),
            json!({"socket": 1, "bytes": 65536}),
            json!({"type": "udp4"}),
            json!({"socket": 3, "port": 0}),
            json!({"socket": 3, "host": "127.0.0.1", "port": 9}),
            json!({"socket": 3}),
            json!({"socket": 3, "host": "127.0.0.1", "port": 9}),
            json!({"socket": 3, "wait_ms": 50}),
            json!({"socket": 3}),
            json!({"socket": 3, "group": "239.1.2.3", "interface": "0.0.0.0"}),
            json!({"socket": 3, "group": "ff02::1"}),
            json!({"socket": 3, "enable": true}),
            json!({"socket": 3, "ttl": 64}),
            json!({"socket": 3, "ttl": 0}),
            json!({"socket": 3, "enable": false}),
            json!({"socket": 3, "interface": "127.0.0.1"}),
            json!({"host": "localhost", "family": 4}),
            json!({}),
        ]
    }

    #[test]
    fn every_method_parses_a_sample_and_round_trips() {
        let samples = method_samples();
        assert_eq!(samples.len(), Method::ALL.len());
        for (method, params) in Method::ALL.iter().zip(samples) {
            let req = Request::parse(method.as_str(), params.clone())
                .unwrap_or_else(|e| panic!("{method}: {e}"));
            assert_eq!(req.method(), *method);
            let again = Request::parse(method.as_str(), req.params_value()).unwrap();
            assert_eq!(again, req, "{method}");
        }
    }

    #[test]
    fn typed_params_know_their_method() {
        fn method_of<P: CallParams>(_: &P) -> Method {
            P::METHOD
        }
        let p = ConnectParams::new(Endpoint::unix("/s"));
        assert_eq!(method_of(&p), Method::Connect);
        assert_eq!(Request::from(p).method(), Method::Connect);
        assert_eq!(
            method_of(&ServerPollParams {
                server: ServerId(1),
                wait_ms: 0
            }),
            Method::ServerPoll
        );
        assert_eq!(
            method_of(&CreditParams {
                socket: SocketId(1),
                bytes: 1
            }),
            Method::Credit
        );
        assert!(Method::Write.has_payload() && Method::DgramSend.has_payload());
        assert!(!Method::Connect.has_payload());
    }
}
