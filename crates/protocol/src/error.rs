//! Error codes on the wire, and the error value replies and `error` events carry.
//!
//! Guests are mostly Node-compatible polyfills, so a failure must surface with the `code` a
//! Node user expects (`err.code === 'ECONNREFUSED'`). The wire therefore carries the POSIX
//! *name*, never a number: errno values differ between Linux and macOS, and a guest (a JS
//! isolate, a WASM module) has no errno table of its own.
//!
//! Decoding never fails on a code this build does not know: it becomes
//! [`ErrorCode::Unknown`], so a sidecar can add codes without breaking old guests.
//!
//! The mapping from [`std::io::Error`] prefers the raw OS error number (a small table per
//! platform, in the private `errno` module) and falls back to [`std::io::ErrorKind`].

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $text:literal; )*) => {
        /// A POSIX-style error name, as carried in the `code` field of errors.
        ///
        /// Serialized as the bare name string (`"ECONNREFUSED"`). Unknown names decode to
        /// [`ErrorCode::Unknown`] and re-encode unchanged.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code this build does not know (sent by a newer peer). Kept verbatim.
            Unknown(String),
        }

        impl ErrorCode {
            /// Every known code, in declaration order (for docs and tests).
            pub const KNOWN: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The wire name, e.g. `"ECONNREFUSED"`.
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorCode::$variant => $name, )*
                    ErrorCode::Unknown(name) => name,
                }
            }

            /// A short human description, used when no better message is at hand.
            pub fn description(&self) -> &str {
                match self {
                    $( ErrorCode::$variant => $text, )*
                    ErrorCode::Unknown(_) => "unknown error",
                }
            }

            /// Parses a wire name; never fails (unknown names become [`ErrorCode::Unknown`]).
            pub fn from_name(name: &str) -> ErrorCode {
                match name {
                    $( $name => ErrorCode::$variant, )*
                    other => ErrorCode::Unknown(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    /// Nobody listens at the destination (or the policy answers for an empty loopback).
    Econnrefused => "ECONNREFUSED", "connection refused";
    /// The peer reset the connection, or the session ended with unread data discarded.
    Econnreset => "ECONNRESET", "connection reset by peer";
    /// The connection was aborted locally.
    Econnaborted => "ECONNABORTED", "connection aborted";
    /// The address (or Unix path) is already bound in this VM.
    Eaddrinuse => "EADDRINUSE", "address already in use";
    /// The address is not one this VM can bind.
    Eaddrnotavail => "EADDRNOTAVAIL", "address not available";
    /// Address family not supported (e.g. an IPv6 address on a `udp4` socket).
    Eafnosupport => "EAFNOSUPPORT", "address family not supported";
    /// Denied: wrong attach secret, or a destination the operator's policy forbids.
    Eacces => "EACCES", "permission denied";
    /// Operation not permitted.
    Eperm => "EPERM", "operation not permitted";
    /// Write after the socket's write side was shut down or the peer is gone.
    Epipe => "EPIPE", "broken pipe";
    /// A deadline passed (connect timeout, full backlog that never freed).
    Etimedout => "ETIMEDOUT", "operation timed out";
    /// Invalid arguments (bad params, unexpected payload, wrong handle kind).
    Einval => "EINVAL", "invalid argument";
    /// Too many sockets for this session or VM.
    Emfile => "EMFILE", "too many open files";
    /// Too many sockets in the sidecar as a whole.
    Enfile => "ENFILE", "too many open files in system";
    /// Unknown socket or server id, or one that belongs to another session.
    Ebadf => "EBADF", "bad file descriptor";
    /// Not supported (multicast, broadcast, a feature not negotiated).
    Enotsup => "ENOTSUP", "operation not supported";
    /// Datagram too large (over 65,507 bytes), or a frame over the size limit.
    Emsgsize => "EMSGSIZE", "message too long";
    /// A name did not resolve (`dns.lookup`), as Node's `getaddrinfo` reports it.
    Enotfound => "ENOTFOUND", "name not found";
    /// Temporary name resolution failure.
    EaiAgain => "EAI_AGAIN", "temporary failure in name resolution";
    /// No route to the host.
    Ehostunreach => "EHOSTUNREACH", "host unreachable";
    /// No route to the network.
    Enetunreach => "ENETUNREACH", "network unreachable";
    /// The network is down.
    Enetdown => "ENETDOWN", "network is down";
    /// The socket is not connected.
    Enotconn => "ENOTCONN", "socket is not connected";
    /// The socket is already connected.
    Eisconn => "EISCONN", "socket is already connected";
    /// A connect is already in progress on this socket.
    Ealready => "EALREADY", "operation already in progress";
    /// The operation is in progress.
    Einprogress => "EINPROGRESS", "operation in progress";
    /// Try again (a resource is momentarily exhausted).
    Eagain => "EAGAIN", "resource temporarily unavailable";
    /// Interrupted.
    Eintr => "EINTR", "interrupted";
    /// Unknown method.
    Enosys => "ENOSYS", "function not implemented";
    /// Protocol error: a malformed header, or a framing error just before close.
    Eproto => "EPROTO", "protocol error";
    /// Protocol version mismatch in `hello`.
    Eprotonosupport => "EPROTONOSUPPORT", "protocol version not supported";
    /// No buffer space: a write past the hard limit, a full parked-call table.
    Enobufs => "ENOBUFS", "no buffer space available";
    /// Out of memory.
    Enomem => "ENOMEM", "out of memory";
    /// No such Unix path (Node reports a connect to a missing socket file this way).
    Enoent => "ENOENT", "no such file or directory";
    /// Already exists.
    Eexist => "EEXIST", "file exists";
    /// A Unix path is too long.
    Enametoolong => "ENAMETOOLONG", "name too long";
    /// `dgram.send` without a destination on an unconnected socket.
    Edestaddrreq => "EDESTADDRREQ", "destination address required";
    /// The operation was cancelled (a parked call dropped because its session or socket went away).
    Ecanceled => "ECANCELED", "operation cancelled";
    /// Generic I/O error: the fallback for anything unmapped.
    Eio => "EIO", "input/output error";
}

impl ErrorCode {
    /// The closest [`io::ErrorKind`], for clients that surface wire errors as `io::Error`.
    pub fn io_kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            ErrorCode::Econnrefused => K::ConnectionRefused,
            ErrorCode::Econnreset => K::ConnectionReset,
            ErrorCode::Econnaborted => K::ConnectionAborted,
            ErrorCode::Eaddrinuse => K::AddrInUse,
            ErrorCode::Eaddrnotavail => K::AddrNotAvailable,
            ErrorCode::Eacces | ErrorCode::Eperm => K::PermissionDenied,
            ErrorCode::Epipe => K::BrokenPipe,
            ErrorCode::Etimedout => K::TimedOut,
            ErrorCode::Einval | ErrorCode::Edestaddrreq | ErrorCode::Enametoolong => {
                K::InvalidInput
            }
            ErrorCode::Enotsup | ErrorCode::Enosys | ErrorCode::Eafnosupport => K::Unsupported,
            ErrorCode::Enotfound | ErrorCode::Enoent => K::NotFound,
            ErrorCode::Ehostunreach => K::HostUnreachable,
            ErrorCode::Enetunreach => K::NetworkUnreachable,
            ErrorCode::Enetdown => K::NetworkDown,
            ErrorCode::Enotconn => K::NotConnected,
            ErrorCode::Eagain => K::WouldBlock,
            ErrorCode::Eintr => K::Interrupted,
            ErrorCode::Eexist | ErrorCode::Eisconn => K::AlreadyExists,
            ErrorCode::Enomem => K::OutOfMemory,
            ErrorCode::Eproto | ErrorCode::Eprotonosupport => K::InvalidData,
            _ => K::Other,
        }
    }

    /// Maps an [`io::ErrorKind`] (when no raw OS error is available).
    pub fn from_io_kind(kind: io::ErrorKind) -> ErrorCode {
        use io::ErrorKind as K;
        match kind {
            K::ConnectionRefused => ErrorCode::Econnrefused,
            K::ConnectionReset => ErrorCode::Econnreset,
            K::ConnectionAborted => ErrorCode::Econnaborted,
            K::NotConnected => ErrorCode::Enotconn,
            K::AddrInUse => ErrorCode::Eaddrinuse,
            K::AddrNotAvailable => ErrorCode::Eaddrnotavail,
            K::BrokenPipe | K::WriteZero => ErrorCode::Epipe,
            K::AlreadyExists => ErrorCode::Eexist,
            K::WouldBlock => ErrorCode::Eagain,
            K::InvalidInput => ErrorCode::Einval,
            K::InvalidData => ErrorCode::Eproto,
            K::TimedOut => ErrorCode::Etimedout,
            K::Interrupted => ErrorCode::Eintr,
            K::Unsupported => ErrorCode::Enotsup,
            K::UnexpectedEof => ErrorCode::Econnreset,
            K::OutOfMemory => ErrorCode::Enomem,
            K::PermissionDenied => ErrorCode::Eacces,
            K::NotFound => ErrorCode::Enoent,
            K::HostUnreachable => ErrorCode::Ehostunreach,
            K::NetworkUnreachable => ErrorCode::Enetunreach,
            K::NetworkDown => ErrorCode::Enetdown,
            _ => ErrorCode::Eio,
        }
    }

    /// Maps a raw OS error number of this platform; `None` when the table has no entry.
    pub fn from_raw_os_error(errno: i32) -> Option<ErrorCode> {
        crate::errno::code_for(errno)
    }

    /// This platform's raw OS error number for the code, when the table has one.
    pub fn raw_os_error(&self) -> Option<i32> {
        crate::errno::raw_for(self)
    }

    /// Maps an [`io::Error`]: the raw OS error when known, else its kind.
    ///
    /// An `io::Error` that wraps a [`WireError`] (see `From<WireError> for io::Error`)
    /// gives back the wire code it carried.
    pub fn from_io_error(err: &io::Error) -> ErrorCode {
        if let Some(code) = err.raw_os_error().and_then(ErrorCode::from_raw_os_error) {
            return code;
        }
        if let Some(wire) = err.get_ref().and_then(|e| e.downcast_ref::<WireError>()) {
            return wire.code.clone();
        }
        ErrorCode::from_io_kind(err.kind())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ErrorCode::from_name(s))
    }
}

impl From<io::ErrorKind> for ErrorCode {
    fn from(kind: io::ErrorKind) -> Self {
        ErrorCode::from_io_kind(kind)
    }
}

impl From<&io::Error> for ErrorCode {
    fn from(err: &io::Error) -> Self {
        ErrorCode::from_io_error(err)
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ErrorCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an error code name such as \"ECONNREFUSED\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ErrorCode, E> {
                Ok(ErrorCode::from_name(v))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The error a reply or an `error` event carries: `{"code": "ECONNREFUSED", "message": "..."}`.
///
/// `message` is for humans (logs, `err.message`); programs match on `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// The POSIX-style name.
    pub code: ErrorCode,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: String,
}

impl WireError {
    /// An error with an explicit message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
        }
    }

    /// An error whose message is the code's standard description.
    pub fn from_code(code: ErrorCode) -> WireError {
        let message = code.description().to_owned();
        WireError { code, message }
    }

    /// `EINVAL` with a message: the usual answer to bad arguments.
    pub fn invalid(message: impl Into<String>) -> WireError {
        WireError::new(ErrorCode::Einval, message)
    }

    /// Cuts the message by at least `by` bytes (see [`shorten_message`]); false if it was
    /// empty already (nothing left to cut).
    pub fn shorten_message(&mut self, by: usize) -> bool {
        shorten_message(&mut self.message, by)
    }
}

/// What ends a message that was cut to fit a frame.
pub const TRUNCATED_MARK: &str = "\u{2026}";

/// Cuts `message` so that it is at least `by` bytes shorter as encoded in a JSON header,
/// at a character boundary, and marks the cut with [`TRUNCATED_MARK`] (a message no
/// longer than the cut plus its mark becomes empty). This is how an answer too big for the
/// receiver's `max_frame` (an error naming a huge method or path) still fits: the message
/// is for humans, the code is never cut. Returns false if `message` was empty already.
pub fn shorten_message(message: &mut String, by: usize) -> bool {
    if message.is_empty() {
        return false;
    }
    // Cut whole characters from the end until their JSON form (escapes counted) and the
    // room for the mark make up `by`.
    let need = by + TRUNCATED_MARK.len();
    let mut cut = 0;
    let mut keep = message.len();
    for (at, c) in message.char_indices().rev() {
        if cut >= need {
            break;
        }
        cut += json_len(c);
        keep = at;
    }
    message.truncate(keep);
    if keep > 0 {
        message.push_str(TRUNCATED_MARK);
    }
    true
}

/// Bytes `c` takes inside a JSON string as `serde_json` writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\t' | '\r' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

impl From<ErrorCode> for WireError {
    fn from(code: ErrorCode) -> Self {
        WireError::from_code(code)
    }
}

impl From<&io::Error> for WireError {
    fn from(err: &io::Error) -> Self {
        WireError::new(ErrorCode::from_io_error(err), err.to_string())
    }
}

impl From<io::Error> for WireError {
    fn from(err: io::Error) -> Self {
        WireError::from(&err)
    }
}

/// Lets a client surface wire errors as `io::Error` (kind from [`ErrorCode::io_kind`]); the
/// original [`WireError`] stays reachable through `get_ref()`/`into_inner()` and
/// [`ErrorCode::from_io_error`].
impl From<WireError> for io::Error {
    fn from(err: WireError) -> Self {
        io::Error::new(err.code.io_kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_round_trip_as_names() {
        for code in ErrorCode::KNOWN {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, code);
            assert!(
                !matches!(back, ErrorCode::Unknown(_)),
                "{code} decoded as Unknown"
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = ErrorCode::KNOWN.iter().map(|c| c.as_str()).collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), before);
    }

    #[test]
    fn unknown_code_decodes_and_reencodes_verbatim() {
        let err: WireError =
            serde_json::from_str(r#"{"code":"EFUTURE","message":"from a newer sidecar"}"#).unwrap();
        assert_eq!(err.code, ErrorCode::Unknown("EFUTURE".to_owned()));
        assert_eq!(err.message, "from a newer sidecar");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"code":"EFUTURE","message":"from a newer sidecar"}"#
        );
    }

    #[test]
    fn missing_message_defaults_to_empty() {
        let err: WireError = serde_json::from_str(r#"{"code":"EPIPE"}"#).unwrap();
        assert_eq!(err, WireError::new(ErrorCode::Epipe, ""));
    }

    #[test]
    fn wire_error_displays_code_and_message() {
        let err = WireError::new(ErrorCode::Econnrefused, "connect 127.0.0.1:9");
        assert_eq!(err.to_string(), "ECONNREFUSED: connect 127.0.0.1:9");
        assert_eq!(
            WireError::from_code(ErrorCode::Ebadf).to_string(),
            "EBADF: bad file descriptor"
        );
    }

    #[test]
    fn io_kinds_map_both_ways() {
        use io::ErrorKind as K;
        let pairs = [
            (K::ConnectionRefused, ErrorCode::Econnrefused),
            (K::ConnectionReset, ErrorCode::Econnreset),
            (K::AddrInUse, ErrorCode::Eaddrinuse),
            (K::BrokenPipe, ErrorCode::Epipe),
            (K::TimedOut, ErrorCode::Etimedout),
            (K::InvalidInput, ErrorCode::Einval),
            (K::WouldBlock, ErrorCode::Eagain),
            (K::PermissionDenied, ErrorCode::Eacces),
            (K::NotConnected, ErrorCode::Enotconn),
        ];
        for (kind, code) in pairs {
            assert_eq!(ErrorCode::from_io_kind(kind), code, "{kind:?}");
            assert_eq!(code.io_kind(), kind, "{code}");
        }
        assert_eq!(ErrorCode::from_io_kind(K::Other), ErrorCode::Eio);
    }

    #[test]
    fn io_error_prefers_raw_os_error() {
        // ECONNREFUSED's number differs per platform; build it from the platform's kind.
        let Some(raw) = ErrorCode::Econnrefused.raw_os_error() else {
            assert!(
                !crate::errno::has_table(),
                "the errno table misses ECONNREFUSED"
            );
            return;
        };
        let err = io::Error::from_raw_os_error(raw);
        assert_eq!(ErrorCode::from_io_error(&err), ErrorCode::Econnrefused);
        let wire = WireError::from(&err);
        assert_eq!(wire.code, ErrorCode::Econnrefused);
        assert!(!wire.message.is_empty());
    }

    #[test]
    fn wire_error_survives_a_trip_through_io_error() {
        let io_err: io::Error = WireError::new(ErrorCode::Emsgsize, "65508 bytes").into();
        assert_eq!(io_err.kind(), io::ErrorKind::Other);
        assert_eq!(ErrorCode::from_io_error(&io_err), ErrorCode::Emsgsize);
        let io_err: io::Error = WireError::from_code(ErrorCode::Econnreset).into();
        assert_eq!(io_err.kind(), io::ErrorKind::ConnectionReset);
    }
}
