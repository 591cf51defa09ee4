//! Errors of the client, and their `io::Error` form for the socket handles.
//!
//! A guest program must be able to tell "the sidecar said no" (a [`WireError`] with the
//! POSIX code a Node user expects) from "the sidecar is gone" (the transport broke) and
//! from "the sidecar said something we cannot understand". [`ClientError`] keeps the three
//! apart and [`ClientError::code`] folds them into one [`ErrorCode`] for code that only
//! cares about the code: a lost transport is `ECONNRESET`, as a kernel reports a
//! connection whose peer vanished.
//!
//! The socket handles speak `io::Error`, like std's. Their errors carry a [`WireError`]
//! as the inner error, so the code survives the conversion and
//! [`ErrorCode::from_io_error`] (or [`error_code`]) gives it back.

use std::io;

use sidecar_protocol::{ErrorCode, FrameError, WireError};

/// Why a client operation failed. Cheap to clone: a broken connection hands the same
/// error to every pending and later operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The sidecar answered with an error (or reported one for a `noreply` call).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The connection to the sidecar is gone: it closed, an I/O error, a frame cut off.
    /// Every pending and later operation fails with this (`ECONNRESET`).
    #[error("connection to the sidecar lost: {reason}")]
    Disconnected {
        /// What happened, for humans.
        reason: String,
    },
    /// The sidecar sent something this client cannot make sense of (a bad frame or
    /// header, a call). The client dropped the connection (`EPROTO`).
    #[error("protocol violation by the sidecar: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// A reply whose result does not have the shape its method promises (`EPROTO`).
    /// Only this call failed; the session goes on.
    #[error("bad reply from the sidecar: {reason}")]
    BadReply {
        /// What did not fit.
        reason: String,
    },
    /// The call would exceed the sidecar's frame limit; nothing was sent (`EMSGSIZE`).
    #[error("a frame of {size} bytes exceeds the sidecar's limit of {max} bytes")]
    FrameTooLarge {
        /// The would-be frame size (as the frame's `total` counts it).
        size: u64,
        /// The limit from hello.
        max: usize,
    },
    /// This client cannot do that (yet), e.g. a guest loop over a poll-mode session
    /// (`ENOTSUP`).
    #[error("not supported by this client: {0}")]
    Unsupported(String),
}

impl ClientError {
    /// The POSIX-style code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Wire(e) => e.code.clone(),
            ClientError::Disconnected { .. } => ErrorCode::Econnreset,
            ClientError::Protocol { .. } | ClientError::BadReply { .. } => ErrorCode::Eproto,
            ClientError::FrameTooLarge { .. } => ErrorCode::Emsgsize,
            ClientError::Unsupported(_) => ErrorCode::Enotsup,
        }
    }

    /// Whether the connection is gone (every later operation fails too).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ClientError::Disconnected { .. } | ClientError::Protocol { .. }
        )
    }

    /// The error as a [`WireError`] (code and message), e.g. to store per socket.
    pub fn to_wire_error(&self) -> WireError {
        match self {
            ClientError::Wire(e) => e.clone(),
            other => WireError::new(other.code(), other.to_string()),
        }
    }

    pub(crate) fn disconnected(reason: impl Into<String>) -> ClientError {
        ClientError::Disconnected {
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            reason: reason.into(),
        }
    }

    /// Maps an encoder failure for an outgoing frame (not fatal: nothing was sent).
    pub(crate) fn from_encode(err: FrameError) -> ClientError {
        match err {
            FrameError::TooLarge { total, max } => ClientError::FrameTooLarge { size: total, max },
            other => ClientError::protocol(format!("could not encode a call: {other}")),
        }
    }
}

impl From<ClientError> for io::Error {
    fn from(err: ClientError) -> io::Error {
        wire_to_io(err.to_wire_error())
    }
}

/// An `io::Error` whose kind matches the code and whose inner error is the [`WireError`].
pub(crate) fn wire_to_io(err: WireError) -> io::Error {
    io::Error::new(err.code.io_kind(), err)
}

/// An `io::Error` for a code and a message.
pub(crate) fn io_error(code: ErrorCode, message: impl Into<String>) -> io::Error {
    wire_to_io(WireError::new(code, message))
}

/// The POSIX-style code of an `io::Error` returned by this crate's handles (or any
/// `io::Error`: raw OS errors and bare kinds are mapped too).
pub fn error_code(err: &io::Error) -> ErrorCode {
    ErrorCode::from_io_error(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_per_variant() {
        let wire = ClientError::Wire(WireError::new(ErrorCode::Econnrefused, "nobody"));
        assert_eq!(wire.code(), ErrorCode::Econnrefused);
        assert!(!wire.is_fatal());
        let gone = ClientError::disconnected("closed");
        assert_eq!(gone.code(), ErrorCode::Econnreset);
        assert!(gone.is_fatal());
        assert_eq!(ClientError::protocol("x").code(), ErrorCode::Eproto);
        let big = ClientError::from_encode(FrameError::TooLarge { total: 10, max: 5 });
        assert_eq!(big.code(), ErrorCode::Emsgsize);
        assert!(!big.is_fatal());
    }

    #[test]
    fn io_conversion_keeps_the_code_and_the_kind() {
        let io: io::Error = ClientError::disconnected("stream closed").into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(error_code(&io), ErrorCode::Econnreset);
        let io: io::Error = ClientError::Wire(WireError::new(ErrorCode::Emsgsize, "big")).into();
        assert_eq!(io.kind(), io::ErrorKind::Other);
        assert_eq!(error_code(&io), ErrorCode::Emsgsize);
        assert!(io.to_string().contains("big"));
    }
}
