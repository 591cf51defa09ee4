//! Typed encoders: write a call, reply or event frame straight from typed values.
//!
//! [`crate::Header`] holds `params` / `result` as `serde_json::Value`, which is what a
//! decoder needs. An encoder does not: going through `Value` costs an allocation per field
//! and makes key order depend on `serde_json`'s `preserve_order` feature (which any crate in
//! the build may switch on). These functions serialize borrowed views of the same shapes
//! directly, so the hot path (`data` events, `net.write` calls) stays cheap and the bytes
//! are deterministic (declaration order). Both paths decode to the same [`crate::Header`].

use serde::Serialize;

use crate::error::WireError;
use crate::event::Event;
use crate::frame::{encode_serialized, encode_serialized_head, FrameError};
use crate::method::CallParams;

#[derive(Serialize)]
#[serde(tag = "type", rename = "call")]
struct CallView<'a, P> {
    id: u64,
    method: &'static str,
    params: &'a P,
    #[serde(skip_serializing_if = "is_false")]
    noreply: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "reply")]
struct ReplyOkView<'a, T: ?Sized> {
    id: u64,
    result: &'a T,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "reply")]
struct ReplyErrView<'a> {
    id: u64,
    error: &'a WireError,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "event")]
struct EventView<'a> {
    #[serde(flatten)]
    event: &'a Event,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Appends a call frame for typed params (`payload` only for `net.write` / `dgram.send`).
pub fn encode_call<P: CallParams>(
    id: u64,
    params: &P,
    noreply: bool,
    payload: &[u8],
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_call_head(id, params, noreply, payload.len(), max_frame, out)?;
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends a successful reply frame (`payload` only for a poll reply carrying a `data` or
/// `message` event).
pub fn encode_reply_ok<T: Serialize + ?Sized>(
    id: u64,
    result: &T,
    payload: &[u8],
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_serialized(&ReplyOkView { id, result }, payload, max_frame, out)
}

/// Appends an error reply frame.
pub fn encode_reply_err(
    id: u64,
    error: &WireError,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_serialized(&ReplyErrView { id, error }, &[], max_frame, out)
}

/// Appends an event frame (`payload` = the bytes of a `data` / `message` event).
pub fn encode_event(
    event: &Event,
    payload: &[u8],
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_serialized(&EventView { event }, payload, max_frame, out)
}

/// The prefix and header of a call frame whose `payload_len` payload bytes follow on the
/// wire, written by the caller (a vectored write; see [`encode_call`] for the rest).
pub fn encode_call_head<P: CallParams>(
    id: u64,
    params: &P,
    noreply: bool,
    payload_len: usize,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let view = CallView {
        id,
        method: P::METHOD.as_str(),
        params,
        noreply,
    };
    encode_serialized_head(&view, payload_len, max_frame, out)
}

/// The prefix and header of an event frame whose `payload_len` payload bytes follow on the
/// wire, written by the caller (see [`encode_event`]).
pub fn encode_event_head(
    event: &Event,
    payload_len: usize,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_serialized_head(&EventView { event }, payload_len, max_frame, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, Endpoint, SocketId};
    use crate::error::ErrorCode;
    use crate::event::EventBody;
    use crate::frame::{read_frame, Frame, DEFAULT_MAX_FRAME};
    use crate::header::{Call, Header, Reply};
    use crate::net::{ConnectParams, ConnectResult, PollResult, WriteParams};
    use serde_json::Value;

    fn decode(bytes: &[u8]) -> Frame {
        let mut r = bytes;
        let frame = read_frame(&mut r, DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap()
            .into_frame()
            .unwrap();
        assert!(r.is_empty(), "one frame exactly");
        frame
    }

    #[test]
    fn typed_call_decodes_to_the_same_header() {
        let params = WriteParams {
            socket: SocketId(4),
        };
        let mut out = Vec::new();
        encode_call(12, &params, true, b"bytes", DEFAULT_MAX_FRAME, &mut out).unwrap();
        let frame = decode(&out);
        assert_eq!(frame.header, Header::Call(Call::new(12, params).noreply()));
        assert_eq!(frame.payload, b"bytes");
        let json = std::str::from_utf8(&out[8..out.len() - 5]).unwrap();
        assert_eq!(
            json,
            r#"{"type":"call","id":12,"method":"net.write","params":{"socket":4},"noreply":true}"#
        );
    }

    #[test]
    fn a_head_plus_its_payload_is_the_whole_frame() {
        let params = WriteParams {
            socket: SocketId(4),
        };
        let payload = vec![9u8; 70_000];
        let (mut whole, mut head) = (Vec::new(), Vec::new());
        encode_call(3, &params, true, &payload, DEFAULT_MAX_FRAME, &mut whole).unwrap();
        encode_call_head(
            3,
            &params,
            true,
            payload.len(),
            DEFAULT_MAX_FRAME,
            &mut head,
        )
        .unwrap();
        assert_eq!([head.as_slice(), &payload].concat(), whole);

        let event = Event::new(
            7,
            EventBody::Data {
                socket: SocketId(4),
            },
        );
        let (mut whole, mut head) = (Vec::new(), Vec::new());
        encode_event(&event, &payload, DEFAULT_MAX_FRAME, &mut whole).unwrap();
        encode_event_head(&event, payload.len(), DEFAULT_MAX_FRAME, &mut head).unwrap();
        assert_eq!([head.as_slice(), &payload].concat(), whole);
        // Too large: refused before anything is written.
        let err = encode_event_head(&event, 1 << 20, 1 << 16, &mut head).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        assert_eq!(head.len(), whole.len() - payload.len());
    }

    #[test]
    fn typed_call_keeps_declaration_order() {
        let params = ConnectParams {
            endpoint: Endpoint::inet("localhost", 8080),
            timeout_ms: Some(100),
        };
        let mut out = Vec::new();
        encode_call(1, &params, false, b"", DEFAULT_MAX_FRAME, &mut out).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[8..]).unwrap(),
            r#"{"type":"call","id":1,"method":"net.connect","params":{"host":"localhost","port":8080,"timeout_ms":100}}"#
        );
    }

    #[test]
    fn typed_replies_decode() {
        let result = ConnectResult {
            socket: SocketId(3),
            local: Address::Inet("127.0.0.1:40000".parse().unwrap()),
            remote: Address::Inet("127.0.0.1:80".parse().unwrap()),
        };
        let mut out = Vec::new();
        encode_reply_ok(5, &result, b"", DEFAULT_MAX_FRAME, &mut out).unwrap();
        let Header::Reply(reply) = decode(&out).header else {
            panic!("not a reply")
        };
        assert_eq!(reply.id, 5);
        assert_eq!(reply.into_typed::<ConnectResult>().unwrap(), result);

        let mut out = Vec::new();
        let err = WireError::new(ErrorCode::Eaddrinuse, "127.0.0.1:80");
        encode_reply_err(6, &err, DEFAULT_MAX_FRAME, &mut out).unwrap();
        assert_eq!(decode(&out).header, Header::Reply(Reply::err(6, err)));
    }

    #[test]
    fn poll_reply_embeds_the_pushed_event_shape() {
        let event = Event::new(
            9,
            EventBody::Data {
                socket: SocketId(3),
            },
        );

        let mut pushed = Vec::new();
        encode_event(&event, b"abc", DEFAULT_MAX_FRAME, &mut pushed).unwrap();
        let pushed = decode(&pushed);
        assert_eq!(pushed.header, Header::Event(event.clone()));
        assert_eq!(pushed.payload, b"abc");

        let mut polled = Vec::new();
        encode_reply_ok(2, &Some(&event), b"abc", DEFAULT_MAX_FRAME, &mut polled).unwrap();
        let polled = decode(&polled);
        assert_eq!(polled.payload, b"abc");
        let Header::Reply(reply) = polled.header else {
            panic!("not a reply")
        };
        // The result object is the event frame's header minus `"type"`.
        let mut pushed_json = serde_json::to_value(Header::Event(event.clone())).unwrap();
        pushed_json.as_object_mut().unwrap().remove("type");
        assert_eq!(reply.outcome.as_ref().unwrap(), &pushed_json);
        assert_eq!(reply.into_typed::<PollResult>().unwrap(), Some(event));

        let mut empty = Vec::new();
        encode_reply_ok(3, &None::<Event>, b"", DEFAULT_MAX_FRAME, &mut empty).unwrap();
        let Header::Reply(reply) = decode(&empty).header else {
            panic!("not a reply")
        };
        assert_eq!(reply.outcome, Ok(Value::Null));
        assert_eq!(reply.into_typed::<PollResult>().unwrap(), None);
    }
}
