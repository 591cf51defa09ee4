//! Socket events: what the sidecar pushes (push mode) or returns from a poll (poll mode).
//!
//! The event is a standalone type, not a variant of the frame header, because the same
//! object appears in two places: as the body of an event frame
//! (`{"type":"event", ...event}`) and as the `result` of a `net.poll` / `net.server_poll` /
//! `dgram.poll` reply. One type guarantees the two shapes can never drift apart, which is
//! what lets the poll lane of the bench run the very same guest code as the push lane.
//!
//! `data` and `message` events carry their bytes as the frame payload (of the event frame,
//! or of the poll reply frame); no event has bytes inside its JSON.

use serde::{Deserialize, Serialize};

use crate::address::{Address, ServerId, SocketId};
use crate::error::{ErrorCode, WireError};

/// One event: a per-session sequence number and what happened.
///
/// Wire shape: the body's fields plus `"seq"`, e.g.
/// `{"event":"data","seq":17,"socket":3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened (serialized inline, tagged by `"event"`).
    #[serde(flatten)]
    pub body: EventBody,
    /// Per-session sequence number: starts at 1, +1 for every event the session is sent.
    pub seq: u64,
}

impl Event {
    /// An event with the given sequence number.
    pub fn new(seq: u64, body: EventBody) -> Event {
        Event { seq, body }
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }
}

/// The kind-specific part of an [`Event`], tagged on the wire by `"event"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    /// A server accepted a connection; `socket` is the new socket's id.
    Accept {
        /// The listening server.
        server: ServerId,
        /// The accepted socket (new id).
        socket: SocketId,
        /// The accepted socket's local address.
        local: Address,
        /// The connecting peer's address.
        remote: Address,
    },
    /// The socket is connected. Follows the `net.connect` reply for the same socket; when
    /// the connect was sent with `noreply`, this event replaces the reply and carries the
    /// call's id in `request` (a non-blocking connect).
    Connect {
        /// The connected socket.
        socket: SocketId,
        /// Local address.
        local: Address,
        /// Peer address.
        remote: Address,
        /// The id of the `noreply` `net.connect` this answers, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// Bytes arrived; they are the frame payload (never empty).
    Data {
        /// The receiving socket.
        socket: SocketId,
    },
    /// The peer shut down its write side (FIN): no more `data` for this socket.
    End {
        /// The socket.
        socket: SocketId,
    },
    /// The socket or server is closed and its id is released. Nothing follows it.
    ///
    /// Exactly one of `socket` / `server` is present.
    Close {
        /// The closed socket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        socket: Option<SocketId>,
        /// The closed server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<ServerId>,
        /// Whether an `error` event preceded the close.
        #[serde(default)]
        had_error: bool,
    },
    /// Something failed asynchronously: a socket error (`ECONNRESET`), or a call sent with
    /// `noreply` (then `request` is that call's id).
    Error {
        /// The socket concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        socket: Option<SocketId>,
        /// The server concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<ServerId>,
        /// The id of the `noreply` call that failed, if that is what this reports.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
        /// POSIX-style code.
        code: ErrorCode,
        /// Human-readable message.
        #[serde(default)]
        message: String,
    },
    /// The socket's outgoing buffer fell below the high-water mark after a write passed it.
    Drain {
        /// The socket.
        socket: SocketId,
    },
    /// A write left the socket's outgoing buffer at or past its high-water mark (only with
    /// the `pressure` capability): a `drain` follows once it falls back below, unless the
    /// socket closes first. Lets a guest write with `noreply` and still learn of
    /// back-pressure, without a synchronous write now and then.
    Pressure {
        /// The socket.
        socket: SocketId,
        /// Bytes the sidecar holds for the socket's peer after that write.
        buffered: u64,
    },
    /// A UDP datagram arrived; its bytes are the frame payload (may be empty).
    Message {
        /// The receiving UDP socket.
        socket: SocketId,
        /// The sender.
        remote: Address,
    },
}

/// The event kinds, for counting and dispatch without matching on fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `accept`
    Accept,
    /// `connect`
    Connect,
    /// `data`
    Data,
    /// `end`
    End,
    /// `close`
    Close,
    /// `error`
    Error,
    /// `drain`
    Drain,
    /// `pressure`
    Pressure,
    /// `message`
    Message,
}

impl EventKind {
    /// Every kind.
    pub const ALL: &'static [EventKind] = &[
        EventKind::Accept,
        EventKind::Connect,
        EventKind::Data,
        EventKind::End,
        EventKind::Close,
        EventKind::Error,
        EventKind::Drain,
        EventKind::Pressure,
        EventKind::Message,
    ];

    /// The wire name (the value of `"event"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accept => "accept",
            EventKind::Connect => "connect",
            EventKind::Data => "data",
            EventKind::End => "end",
            EventKind::Close => "close",
            EventKind::Error => "error",
            EventKind::Drain => "drain",
            EventKind::Pressure => "pressure",
            EventKind::Message => "message",
        }
    }

    /// Whether events of this kind carry bytes as the frame payload.
    pub fn has_payload(self) -> bool {
        matches!(self, EventKind::Data | EventKind::Message)
    }
}

impl EventBody {
    /// The kind.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Accept { .. } => EventKind::Accept,
            EventBody::Connect { .. } => EventKind::Connect,
            EventBody::Data { .. } => EventKind::Data,
            EventBody::End { .. } => EventKind::End,
            EventBody::Close { .. } => EventKind::Close,
            EventBody::Error { .. } => EventKind::Error,
            EventBody::Drain { .. } => EventKind::Drain,
            EventBody::Pressure { .. } => EventKind::Pressure,
            EventBody::Message { .. } => EventKind::Message,
        }
    }

    /// Whether this is an `error` event.
    pub fn is_error(&self) -> bool {
        matches!(self, EventBody::Error { .. })
    }

    /// An `error` event's message, cut by at least `by` bytes to fit a frame
    /// ([`crate::error::shorten_message`]); false for other events, or when the message
    /// is empty already.
    pub fn shorten_message(&mut self, by: usize) -> bool {
        match self {
            EventBody::Error { message, .. } => crate::error::shorten_message(message, by),
            _ => false,
        }
    }

    /// The socket the event is about, if any (for `accept`, the new socket).
    pub fn socket(&self) -> Option<SocketId> {
        match self {
            EventBody::Accept { socket, .. }
            | EventBody::Connect { socket, .. }
            | EventBody::Data { socket }
            | EventBody::End { socket }
            | EventBody::Drain { socket }
            | EventBody::Pressure { socket, .. }
            | EventBody::Message { socket, .. } => Some(*socket),
            EventBody::Close { socket, .. } | EventBody::Error { socket, .. } => *socket,
        }
    }

    /// The server the event is about, if any.
    pub fn server(&self) -> Option<ServerId> {
        match self {
            EventBody::Accept { server, .. } => Some(*server),
            EventBody::Close { server, .. } | EventBody::Error { server, .. } => *server,
            _ => None,
        }
    }

    /// The id of the `noreply` call this event answers (`connect` or `error`), if any.
    pub fn request(&self) -> Option<u64> {
        match self {
            EventBody::Connect { request, .. } | EventBody::Error { request, .. } => *request,
            _ => None,
        }
    }

    /// A socket `close`.
    pub fn socket_closed(socket: SocketId, had_error: bool) -> EventBody {
        EventBody::Close {
            socket: Some(socket),
            server: None,
            had_error,
        }
    }

    /// A server `close`.
    pub fn server_closed(server: ServerId) -> EventBody {
        EventBody::Close {
            socket: None,
            server: Some(server),
            had_error: false,
        }
    }

    /// A socket `error`.
    pub fn socket_error(socket: SocketId, err: WireError) -> EventBody {
        EventBody::Error {
            socket: Some(socket),
            server: None,
            request: None,
            code: err.code,
            message: err.message,
        }
    }

    /// The failure of a call sent with `noreply` (plus the socket it named, if any).
    pub fn request_error(request: u64, socket: Option<SocketId>, err: WireError) -> EventBody {
        EventBody::Error {
            socket,
            server: None,
            request: Some(request),
            code: err.code,
            message: err.message,
        }
    }

    /// For an `error` event, the error it carries.
    pub fn wire_error(&self) -> Option<WireError> {
        match self {
            EventBody::Error { code, message, .. } => Some(WireError::new(code.clone(), message)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn inet(s: &str) -> Address {
        Address::Inet(s.parse().unwrap())
    }

    fn all_events() -> Vec<(Event, Value)> {
        let l = || inet("127.0.0.1:80");
        let r = || inet("127.0.0.1:40000");
        let lj = json!({"address": "127.0.0.1", "port": 80, "family": "IPv4"});
        let rj = json!({"address": "127.0.0.1", "port": 40000, "family": "IPv4"});
        vec![
            (
                Event::new(
                    1,
                    EventBody::Accept {
                        server: ServerId(1),
                        socket: SocketId(2),
                        local: l(),
                        remote: r(),
                    },
                ),
                json!({"event": "accept", "seq": 1, "server": 1, "socket": 2, "local": lj, "remote": rj}),
            ),
            (
                Event::new(
                    2,
                    EventBody::Connect {
                        socket: SocketId(3),
                        local: r(),
                        remote: l(),
                        request: None,
                    },
                ),
                json!({"event": "connect", "seq": 2, "socket": 3, "local": rj, "remote": lj}),
            ),
            (
                Event::new(
                    11,
                    EventBody::Connect {
                        socket: SocketId(5),
                        local: r(),
                        remote: l(),
                        request: Some(77),
                    },
                ),
                json!({"event": "connect", "seq": 11, "socket": 5, "local": rj, "remote": lj, "request": 77}),
            ),
            (
                Event::new(
                    3,
                    EventBody::Data {
                        socket: SocketId(3),
                    },
                ),
                json!({"event": "data", "seq": 3, "socket": 3}),
            ),
            (
                Event::new(
                    4,
                    EventBody::End {
                        socket: SocketId(3),
                    },
                ),
                json!({"event": "end", "seq": 4, "socket": 3}),
            ),
            (
                Event::new(5, EventBody::socket_closed(SocketId(3), true)),
                json!({"event": "close", "seq": 5, "socket": 3, "had_error": true}),
            ),
            (
                Event::new(6, EventBody::server_closed(ServerId(1))),
                json!({"event": "close", "seq": 6, "server": 1, "had_error": false}),
            ),
            (
                Event::new(
                    7,
                    EventBody::socket_error(
                        SocketId(3),
                        WireError::new(ErrorCode::Econnreset, "reset"),
                    ),
                ),
                json!({"event": "error", "seq": 7, "socket": 3, "code": "ECONNRESET", "message": "reset"}),
            ),
            (
                Event::new(
                    8,
                    EventBody::request_error(
                        42,
                        Some(SocketId(9)),
                        WireError::new(ErrorCode::Ebadf, "no such socket"),
                    ),
                ),
                json!({"event": "error", "seq": 8, "socket": 9, "request": 42, "code": "EBADF", "message": "no such socket"}),
            ),
            (
                Event::new(
                    9,
                    EventBody::Drain {
                        socket: SocketId(3),
                    },
                ),
                json!({"event": "drain", "seq": 9, "socket": 3}),
            ),
            (
                Event::new(
                    11,
                    EventBody::Pressure {
                        socket: SocketId(3),
                        buffered: 70_000,
                    },
                ),
                json!({"event": "pressure", "seq": 11, "socket": 3, "buffered": 70000}),
            ),
            (
                Event::new(
                    10,
                    EventBody::Message {
                        socket: SocketId(4),
                        remote: inet("[::1]:5353"),
                    },
                ),
                json!({"event": "message", "seq": 10, "socket": 4,
                       "remote": {"address": "::1", "port": 5353, "family": "IPv6"}}),
            ),
        ]
    }

    #[test]
    fn every_event_has_the_documented_shape_and_round_trips() {
        let events = all_events();
        let kinds: Vec<EventKind> = events.iter().map(|(e, _)| e.kind()).collect();
        for kind in EventKind::ALL {
            assert!(kinds.contains(kind), "no test vector for {kind:?}");
        }
        for (event, expected) in events {
            let value = serde_json::to_value(&event).unwrap();
            assert_eq!(value, expected, "{:?}", event.kind());
            assert_eq!(value["event"], event.kind().as_str());
            let back: Event = serde_json::from_value(value).unwrap();
            assert_eq!(back, event);
            assert!(
                event.body.socket().is_some() || event.body.server().is_some(),
                "{:?} names neither a socket nor a server",
                event.kind()
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let e: Event =
            serde_json::from_value(json!({"event": "end", "seq": 1, "socket": 2, "future": [1]}))
                .unwrap();
        assert_eq!(
            e,
            Event::new(
                1,
                EventBody::End {
                    socket: SocketId(2)
                }
            )
        );
    }

    #[test]
    fn unknown_event_kind_is_an_error() {
        let r = serde_json::from_value::<Event>(json!({"event": "teleport", "seq": 1}));
        assert!(r.is_err());
    }

    #[test]
    fn accessors() {
        let accept = EventBody::Accept {
            server: ServerId(1),
            socket: SocketId(2),
            local: inet("127.0.0.1:1"),
            remote: inet("127.0.0.1:2"),
        };
        assert_eq!(accept.server(), Some(ServerId(1)));
        assert_eq!(accept.socket(), Some(SocketId(2)));
        let err = EventBody::request_error(5, None, WireError::from_code(ErrorCode::Epipe));
        assert_eq!(err.wire_error().unwrap().code, ErrorCode::Epipe);
        assert_eq!(err.request(), Some(5));
        assert_eq!(accept.request(), None);
        assert_eq!(err.socket(), None);
        assert!(EventKind::Data.has_payload() && !EventKind::End.has_payload());
    }
}
