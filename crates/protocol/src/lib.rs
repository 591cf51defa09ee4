//! The wire protocol between the networking sidecar and its guests.
//!
//! This crate is the *one* definition of the wire: the sidecar and every guest client
//! depend on it, and it depends on neither (no async runtime, no sidecar code), so a guest
//! links only what a guest needs and the two sides cannot disagree about a field name.
//! `docs/PROTOCOL.md` describes the same wire for implementers in other languages.
//!
//! Layers, each in its own module, each failing in its own way:
//!
//! 1. **Framing** ([`frame`], [`decoder`], [`split`]): `u32 BE total | u32 BE header_len |
//!    JSON header | raw payload`. Errors ([`FrameError`]) are fatal: the stream is out of
//!    sync.
//! 2. **Header** ([`header`]): a [`Header`] is a [`Call`], a [`Reply`] or an [`Event`].
//!    A malformed header in a well-formed frame is a [`HeaderError`]: answer, go on.
//! 3. **Request** ([`method`]): a call's method and params become a typed [`Request`].
//!    An unknown method or bad params is a [`RequestError`] (`ENOSYS` / `EINVAL`).
//!
//! Typed encoders ([`encode`]) write frames straight from typed params, results and events.
//!
//! ```
//! use sidecar_protocol::*;
//!
//! // Guest: encode a call.
//! let mut wire = Vec::new();
//! let params = ConnectParams::new(Endpoint::inet("localhost", 8080));
//! encode_call(1, &params, false, b"", DEFAULT_MAX_FRAME, &mut wire).unwrap();
//!
//! // Sidecar: decode it in three steps.
//! let mut decoder = FrameDecoder::default();
//! decoder.push(&wire);
//! let raw = decoder.next_frame().unwrap().unwrap(); // FrameError: close the session
//! let Header::Call(call) = raw.parse_header().unwrap() else { unreachable!() };
//! match call.request() {                             // RequestError: error reply
//!     Ok(Request::Connect(p)) => assert_eq!(p.endpoint.host_or("localhost"), Some("localhost")),
//!     other => panic!("{other:?}"),
//! }
//! ```

#![warn(missing_docs)]

pub mod address;
pub mod capability;
pub mod decoder;
pub mod dgram;
pub mod dgram_options;
pub mod encode;
mod errno;
pub mod error;
pub mod event;
pub mod frame;
pub mod header;
mod header_fast;
pub mod hello;
pub mod method;
pub mod net;
pub mod split;

pub use address::{Address, Endpoint, ServerId, SocketId};
pub use decoder::FrameDecoder;
pub use dgram::{
    BindParams, BindResult, CreateSocketParams, CreateSocketResult, DgramCloseParams,
    DgramConnectParams, DgramConnectResult, DgramDisconnectParams, DgramPollParams, Family,
    LookupAddress, LookupParams, LookupResult, SendParams, SendResult, StatsParams, UdpType,
    MAX_UDP_PAYLOAD,
};
pub use dgram_options::{
    AddMembershipParams, DropMembershipParams, SetBroadcastParams, SetMulticastInterfaceParams,
    SetMulticastLoopbackParams, SetMulticastTtlParams, SetTtlParams,
};
pub use encode::{
    encode_call, encode_call_head, encode_event, encode_event_head, encode_reply_err,
    encode_reply_ok,
};
pub use error::{ErrorCode, WireError};
pub use event::{Event, EventBody, EventKind};
pub use frame::{
    encode_frame, encode_raw_frame, read_frame, write_frame, Frame, FrameError, RawFrame,
    DEFAULT_MAX_FRAME, HEAD_GUESS, PREFIX_LEN,
};
pub use header::{
    check_header_len, parse_header, parse_header_derived, Call, Header, HeaderError, Reply,
    DEFAULT_MAX_HEADER,
};
pub use header_fast::{parse_call, ParsedCall};
pub use hello::{BoundResult, HelloParams, HelloResult, Mode, DEFAULT_CREDIT, PROTOCOL_VERSION};
pub use method::{CallParams, Method, Request, RequestError, UnknownMethod};
pub use net::{
    clamp_wait, ConnectParams, ConnectResult, CreditParams, DestroyParams, Empty, ListenParams,
    ListenResult, PollParams, PollResult, ServerCloseParams, ServerPollParams, SetKeepAliveParams,
    SetNoDelayParams, ShutdownParams, WriteParams, WriteResult, DEFAULT_BACKLOG,
    DEFAULT_CONNECT_HOST, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_LISTEN_HOST, MAX_POLL_WAIT_MS,
};
pub use split::{split_frame, Split};
