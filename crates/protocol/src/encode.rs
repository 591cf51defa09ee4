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

/// Appends an error reply frame. One that would pass `max_frame` is sent with its message
/// cut to fit ([`crate::error::shorten_message`]), so that every call can be answered;
/// the code is never cut. Fails only if not even an empty message fits.
pub fn encode_reply_err(
    id: u64,
    error: &WireError,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let excess = match encode_serialized(&ReplyErrView { id, error }, &[], max_frame, out) {
        Err(FrameError::TooLarge { total, max }) => total.saturating_sub(max as u64) as usize,
        done => return done,
    };
    let mut error = error.clone();
    let mut by = excess;
    loop {
        if !error.shorten_message(by) {
            return Err(FrameError::TooLarge {
                total: (max_frame + excess) as u64,
                max: max_frame,
            });
        }
        match encode_serialized(&ReplyErrView { id, error: &error }, &[], max_frame, out) {
            Err(FrameError::TooLarge { total, max }) => {
                by = total.saturating_sub(max as u64) as usize;
            }
            done => return done,
        }
    }
}

/// Appends an event frame (`payload` = the bytes of a `data` / `message` event).
pub fn encode_event(
    event: &Event,
    payload: &[u8],
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_event_head(event, payload.len(), max_frame, out)?;
    out.extend_from_slice(payload);
    Ok(())
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
///
/// An `error` event that would pass `max_frame` is sent with its message cut to fit, as
/// [`encode_reply_err`] does; any other event too large is refused (nothing written).
pub fn encode_event_head(
    event: &Event,
    payload_len: usize,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let excess = match encode_serialized_head(&EventView { event }, payload_len, max_frame, out) {
        Err(FrameError::TooLarge { total, max }) if event.body.is_error() => {
            total.saturating_sub(max as u64) as usize
        }
        done => return done,
    };
    let mut event = event.clone();
    let mut by = excess;
    loop {
        if !event.body.shorten_message(by) {
            return Err(FrameError::TooLarge {
                total: (max_frame + excess) as u64,
                max: max_frame,
            });
        }
        let view = EventView { event: &event };
        match encode_serialized_head(&view, payload_len, max_frame, out) {
            Err(FrameError::TooLarge { total, max }) => {
                by = total.saturating_sub(max as u64) as usize;
            }
            done => return done,
        }
    }
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
    fn an_error_too_big_for_the_frame_is_cut_to_fit_never_its_code() {
        let max = 4096;
        // Plain ASCII, escapes (each control byte is 6 bytes of JSON), and multi-byte
        // characters that must not be cut in the middle.
        for message in [
            "ENOSYS unknown method ".to_owned() + &"m".repeat(8000),
            "\u{1}".repeat(5000),
            "\u{e9}".repeat(3000) + "\u{1f600}",
        ] {
            let error = WireError::new(ErrorCode::Enosys, message.clone());
            let mut out = vec![0xaa]; // bytes already there are kept
            encode_reply_err(7, &error, max, &mut out).unwrap();
            assert_eq!(out[0], 0xaa);
            assert!(out.len() - 1 <= 4 + max, "{} bytes", out.len() - 1);
            let Header::Reply(reply) = decode(&out[1..]).header else {
                panic!("not a reply")
            };
            assert_eq!(reply.id, 7);
            let got = reply.outcome.unwrap_err();
            assert_eq!(got.code, ErrorCode::Enosys);
            let kept = got
                .message
                .strip_suffix(crate::error::TRUNCATED_MARK)
                .unwrap();
            assert!(message.starts_with(kept), "a prefix of the message");
            assert!(kept.len() > 100, "as much kept as fits: {}", kept.len());

            let event = Event::new(
                3,
                EventBody::request_error(9, Some(SocketId(4)), error.clone()),
            );
            let mut out = Vec::new();
            encode_event(&event, b"", max, &mut out).unwrap();
            assert!(out.len() <= 4 + max);
            let Header::Event(got) = decode(&out).header else {
                panic!("not an event")
            };
            let EventBody::Error {
                code,
                message: cut,
                request,
                socket,
                ..
            } = got.body
            else {
                panic!("not an error event")
            };
            assert_eq!(
                (code, request, socket),
                (ErrorCode::Enosys, Some(9), Some(SocketId(4)))
            );
            assert!(message.starts_with(cut.strip_suffix(crate::error::TRUNCATED_MARK).unwrap()));
        }
        // One that fits is sent whole; an event that is not an error is never cut.
        let error = WireError::new(ErrorCode::Enoent, "connect ENOENT /x");
        let mut out = Vec::new();
        encode_reply_err(1, &error, max, &mut out).unwrap();
        assert_eq!(decode(&out).header, Header::Reply(Reply::err(1, error)));
        let accept = Event::new(
            1,
            EventBody::Connect {
                socket: SocketId(1),
                local: Address::Unix(String::new()),
                remote: Address::Unix("/".repeat(5000)),
                request: None,
            },
        );
        let err = encode_event(&accept, b"", max, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        // Not even the code fits: refused, nothing written.
        let mut out = Vec::new();
        let tiny = encode_reply_err(1, &WireError::new(ErrorCode::Eio, "x"), 8, &mut out);
        assert!(matches!(tiny, Err(FrameError::TooLarge { .. })));
        assert!(out.is_empty());
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
