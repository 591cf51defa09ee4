//! The JSON header of a frame: a call, a reply, or an event.
//!
//! Header decoding is deliberately a separate, *non-fatal* step after framing: once the
//! length prefix has been honoured the stream is still in sync, so a header that is not
//! valid JSON, or not a valid message, costs one error reply, not the session. To answer
//! with the right request id, [`parse_header`] recovers the id on a best-effort basis
//! (from a parsed JSON object, or by scanning broken JSON for a top-level `"id"` key).

use serde::de::DeserializeOwned;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{ErrorCode, WireError};
use crate::event::Event;
use crate::method::{CallParams, Method, Request, RequestError, UnknownMethod};

/// A frame header, tagged by `"type"`: `"call"`, `"reply"` or `"event"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Header {
    /// Guest → sidecar request.
    Call(Call),
    /// Sidecar → guest answer to a call.
    Reply(Reply),
    /// Sidecar → guest event (push mode).
    Event(Event),
}

/// A request: `{"type":"call","id":1,"method":"net.connect","params":{..}}`.
///
/// `method` stays a string and `params` raw JSON here, so that an unknown method or bad
/// params do not make the header unparseable; [`Call::request`] does the typed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Chosen by the guest; echoed by the reply (or by the `error` event of a `noreply`
    /// call). The sidecar does not require uniqueness, but a guest that reuses an id
    /// while a call is pending cannot tell the replies apart.
    pub id: u64,
    /// A method name from the catalogue.
    pub method: String,
    /// The method's params object (absent or `null` = `{}`).
    #[serde(default)]
    pub params: Value,
    /// Ask for no reply. Success is silent; failure arrives as an `error` event whose
    /// `request` is this id.
    #[serde(default, skip_serializing_if = "is_false")]
    pub noreply: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Call {
    /// A call from typed params.
    pub fn new<P: CallParams>(id: u64, params: P) -> Call {
        Call::from_request(id, &params.into())
    }

    /// A call from a parsed request.
    pub fn from_request(id: u64, request: &Request) -> Call {
        Call {
            id,
            method: request.method().as_str().to_owned(),
            params: request.params_value(),
            noreply: false,
        }
    }

    /// The same call, asking for no reply.
    pub fn noreply(mut self) -> Call {
        self.noreply = true;
        self
    }

    /// The method, if it is in the catalogue.
    pub fn method(&self) -> Result<Method, UnknownMethod> {
        self.method.parse()
    }

    /// The typed request (`ENOSYS` / `EINVAL` material on failure).
    pub fn request(&self) -> Result<Request, RequestError> {
        Request::parse(&self.method, self.params.clone())
    }

    /// As [`Call::request`], consuming the call (no copy of the params).
    pub fn into_request(self) -> Result<Request, RequestError> {
        Request::parse(&self.method, self.params)
    }
}

/// An answer: `{"type":"reply","id":1,"result":..}` or
/// `{"type":"reply","id":1,"error":{"code":"ECONNREFUSED","message":".."}}`.
///
/// `result` may be `null` (an empty poll). A reply with both `result` and `error` is
/// malformed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The call's id.
    pub id: u64,
    /// The result, or the error.
    pub outcome: Result<Value, WireError>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(id: u64, result: Value) -> Reply {
        Reply {
            id,
            outcome: Ok(result),
        }
    }

    /// A successful reply from a typed result.
    pub fn ok_typed<T: Serialize>(id: u64, result: &T) -> Result<Reply, serde_json::Error> {
        Ok(Reply::ok(id, serde_json::to_value(result)?))
    }

    /// An error reply.
    pub fn err(id: u64, error: WireError) -> Reply {
        Reply {
            id,
            outcome: Err(error),
        }
    }

    /// The result decoded as `T` (e.g. `P::Result` for a `P: CallParams`). A result that
    /// does not fit `T` becomes an `EPROTO` error.
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<T, WireError> {
        let value = self.outcome?;
        serde_json::from_value(value).map_err(|e| {
            WireError::new(
                ErrorCode::Eproto,
                format!("reply {}: bad result: {e}", self.id),
            )
        })
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Reply", 2)?;
        s.serialize_field("id", &self.id)?;
        match &self.outcome {
            Ok(result) => s.serialize_field("result", result)?,
            Err(error) => s.serialize_field("error", error)?,
        }
        s.end()
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            id: u64,
            // `Some(Null)` for `"result": null`, `None` when absent.
            #[serde(default, deserialize_with = "present")]
            result: Option<Value>,
            #[serde(default)]
            error: Option<WireError>,
        }
        fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
            Value::deserialize(d).map(Some)
        }
        let repr = Repr::deserialize(deserializer)?;
        let outcome = match (repr.result, repr.error) {
            (Some(_), Some(_)) => {
                return Err(serde::de::Error::custom(
                    "a reply has either `result` or `error`, not both",
                ))
            }
            (_, Some(error)) => Err(error),
            (result, None) => Ok(result.unwrap_or(Value::Null)),
        };
        Ok(Reply {
            id: repr.id,
            outcome,
        })
    }
}

/// A well-framed header that is not a valid message. Not fatal: answer and go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed header{}: {message}", id.map(|i| format!(" (id {i})")).unwrap_or_default())]
pub struct HeaderError {
    /// The request id, when one could be recovered from the broken header.
    pub id: Option<u64>,
    /// The code to report: `EPROTO`, or `EMSGSIZE` for a header over the limit.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

impl HeaderError {
    /// The error to report (`EPROTO`, or `EMSGSIZE` for a header over the limit).
    pub fn to_wire_error(&self) -> WireError {
        WireError::new(self.code.clone(), self.to_string())
    }

    /// The error reply to send, when the id is known. Without an id the sidecar reports
    /// an `error` event with neither socket nor request instead.
    pub fn to_reply(&self) -> Option<Reply> {
        self.id.map(|id| Reply::err(id, self.to_wire_error()))
    }
}

/// Default largest JSON header: 64 KiB, far below the frame limit (a header names a
/// call and its small params; bulk bytes ride in the payload).
pub const DEFAULT_MAX_HEADER: usize = 64 * 1024;

/// Bytes at the start of an oversized header searched for its request id.
const ID_SCAN: usize = 4096;

/// Refuses a header longer than `max` before any parse: `EMSGSIZE`, with the request id
/// if it is among the first 4 KiB (canonical encoders write it second). Parsing is
/// linear, but serde's derived parser buffers a tagged object whole (see
/// `header_fast.rs`): a bound on the input is what bounds the work and the memory.
pub fn check_header_len(json: &[u8], max: usize) -> Result<(), HeaderError> {
    if json.len() <= max {
        return Ok(());
    }
    Err(HeaderError {
        id: scan_top_level_id(&json[..ID_SCAN.min(json.len())]),
        code: ErrorCode::Emsgsize,
        message: format!(
            "header of {} bytes exceeds the limit of {max} bytes",
            json.len()
        ),
    })
}

/// Parses a header. On failure, recovers the request id if it can.
///
/// The canonical shape (what this crate's encoders write) takes a one-pass parser; any
/// other input goes to the derived one, which alone decides what is an error (see
/// `header_fast.rs`).
pub fn parse_header(json: &[u8]) -> Result<Header, HeaderError> {
    if let Some(header) = crate::header_fast::parse(json) {
        return Ok(header);
    }
    parse_header_derived(json)
}

/// [`parse_header`] without its one-pass attempt, for a caller that already tried the
/// canonical shape (`parse_call`): the input is parsed once more, never twice more.
pub fn parse_header_derived(json: &[u8]) -> Result<Header, HeaderError> {
    serde_json::from_slice(json).map_err(|e| HeaderError {
        id: recover_id(json),
        code: ErrorCode::Eproto,
        message: e.to_string(),
    })
}

/// Best-effort request id of a header that failed to parse: a byte scan, not another
/// parse (an invalid header is parsed once, by the derived parser, and no more).
fn recover_id(json: &[u8]) -> Option<u64> {
    scan_top_level_id(json)
}

/// Finds `"id": <unsigned integer>` at nesting depth 1 of possibly broken JSON (truncated,
/// a bad token later on). Strings are skipped with their escapes, so an `"id"` inside a
/// string or a nested object is not taken. A number cut off by the end of input is not
/// trusted (it might be a prefix of the real id).
fn scan_top_level_id(json: &[u8]) -> Option<u64> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i + 1;
                let end = string_end(json, start)?;
                i = end + 1;
                if depth == 1 && &json[start..end] == b"id" {
                    let colon = skip_ws(json, i);
                    if json.get(colon) == Some(&b':') {
                        return parse_uint(json, skip_ws(json, colon + 1));
                    }
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the closing quote of a string whose content starts at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while i < json.len() && matches!(json[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// An unsigned integer at `i`, followed by a byte that ends a JSON value.
fn parse_uint(json: &[u8], i: usize) -> Option<u64> {
    let digits = json[i.min(json.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    let after = *json.get(i + digits)?;
    if !matches!(after, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
        return None;
    }
    std::str::from_utf8(&json[i..i + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::SocketId;
    use crate::event::EventBody;
    use crate::net::{ConnectParams, WriteParams, WriteResult};
    use crate::Endpoint;
    use serde_json::json;

    fn round_trip(header: &Header) -> Value {
        let bytes = serde_json::to_vec(header).unwrap();
        let back = parse_header(&bytes).unwrap();
        assert_eq!(&back, header);
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn call_shape() {
        let call = Call::new(7, ConnectParams::new(Endpoint::inet("localhost", 80)));
        let v = round_trip(&Header::Call(call.clone()));
        assert_eq!(
            v,
            json!({"type": "call", "id": 7, "method": "net.connect",
                   "params": {"host": "localhost", "port": 80}})
        );
        assert_eq!(call.method().unwrap(), Method::Connect);
        let v = round_trip(&Header::Call(
            Call::new(
                8,
                WriteParams {
                    socket: SocketId(3),
                },
            )
            .noreply(),
        ));
        assert_eq!(v["noreply"], true);
    }

    #[test]
    fn reply_shapes() {
        let ok = Reply::ok_typed(
            9,
            &WriteResult {
                buffered: 10,
                need_drain: false,
            },
        )
        .unwrap();
        let v = round_trip(&Header::Reply(ok.clone()));
        assert_eq!(
            v,
            json!({"type": "reply", "id": 9, "result": {"buffered": 10, "need_drain": false}})
        );
        assert_eq!(
            ok.into_typed::<WriteResult>().unwrap(),
            WriteResult {
                buffered: 10,
                need_drain: false
            }
        );

        let err = Reply::err(10, WireError::new(ErrorCode::Econnrefused, "nobody home"));
        let v = round_trip(&Header::Reply(err.clone()));
        assert_eq!(
            v,
            json!({"type": "reply", "id": 10,
                   "error": {"code": "ECONNREFUSED", "message": "nobody home"}})
        );
        assert_eq!(
            err.into_typed::<Value>().unwrap_err().code,
            ErrorCode::Econnrefused
        );
    }

    #[test]
    fn null_result_is_kept_and_absent_result_means_null() {
        let v = round_trip(&Header::Reply(Reply::ok(11, Value::Null)));
        assert_eq!(v, json!({"type": "reply", "id": 11, "result": null}));
        let h = parse_header(br#"{"type":"reply","id":12}"#).unwrap();
        assert_eq!(h, Header::Reply(Reply::ok(12, Value::Null)));
    }

    #[test]
    fn reply_with_result_and_error_is_malformed() {
        let e = parse_header(
            br#"{"type":"reply","id":13,"result":1,"error":{"code":"EIO","message":""}}"#,
        )
        .unwrap_err();
        assert_eq!(e.id, Some(13));
    }

    #[test]
    fn bad_result_type_is_eproto() {
        let r = Reply::ok(1, json!("not an object"));
        assert_eq!(
            r.into_typed::<WriteResult>().unwrap_err().code,
            ErrorCode::Eproto
        );
    }

    #[test]
    fn event_shape() {
        let ev = Event::new(
            17,
            EventBody::Data {
                socket: SocketId(3),
            },
        );
        let v = round_trip(&Header::Event(ev));
        assert_eq!(
            v,
            json!({"type": "event", "event": "data", "socket": 3, "seq": 17})
        );
    }

    #[test]
    fn unknown_method_still_parses_as_a_header() {
        let h =
            parse_header(br#"{"type":"call","id":5,"method":"net.teleport","params":{}}"#).unwrap();
        let Header::Call(call) = h else {
            panic!("not a call")
        };
        assert_eq!(call.method(), Err(UnknownMethod("net.teleport".into())));
        assert_eq!(
            call.request().unwrap_err().to_wire_error().code,
            ErrorCode::Enosys
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let h = parse_header(
            br#"{"type":"call","id":5,"method":"stats","trace":"abc","params":{"x":1}}"#,
        )
        .unwrap();
        assert!(matches!(h, Header::Call(Call { id: 5, .. })));
    }

    #[test]
    fn malformed_json_recovers_the_id() {
        let cases: &[(&[u8], Option<u64>)] = &[
            // Valid JSON, not a valid header.
            (br#"{"type":"call","id":41}"#, Some(41)),
            (br#"{"type":"bogus","id":42,"method":"stats"}"#, Some(42)),
            (br#"{"id":"43","type":"call","method":"stats"}"#, None),
            (br#"[1,2,3]"#, None),
            // Broken JSON.
            (br#"{"type":"call","id":44,"method":"net.wr"#, Some(44)),
            (br#"{"type":"call", "id" : 45 , "params":{"a":}"#, Some(45)),
            (br#"{"params":{"id":1},"x":"\"id\":2","id":46,"#, Some(46)),
            (br#"{"method":"id","id":47,}"#, Some(47)),
            (br#"{"type":"call","id":4"#, None),
            (br#"{"type":"call","id":-1,"#, None),
            (br#"{"type":"call","id":1.5,"#, None),
            (b"\xff\xfe garbage", None),
            (b"", None),
        ];
        for (json, id) in cases {
            let err = parse_header(json).unwrap_err();
            assert_eq!(err.id, *id, "{}", String::from_utf8_lossy(json));
            assert_eq!(err.to_wire_error().code, ErrorCode::Eproto);
            assert_eq!(err.to_reply().map(|r| r.id), *id);
        }
    }

    /// A header over the limit is refused unparsed, `EMSGSIZE`, with the id found near
    /// its start; one at the limit passes.
    #[test]
    fn a_header_over_the_limit_is_refused_with_its_id() {
        let mut json = br#"{"type":"call","id":7,"method":"stats","params":{"pad":""#.to_vec();
        json.resize(100_000, b'x');
        json.extend_from_slice(br#""}}"#);
        let err = check_header_len(&json, DEFAULT_MAX_HEADER).unwrap_err();
        assert_eq!(err.id, Some(7));
        assert_eq!(err.to_wire_error().code, ErrorCode::Emsgsize);
        assert!(check_header_len(&json, json.len()).is_ok());
        // The id is looked for only near the start: an id past it is not recovered.
        let mut late = br#"{"type":"call","params":{"pad":""#.to_vec();
        late.resize(100_000, b'x');
        late.extend_from_slice(br#""},"id":8}"#);
        assert_eq!(check_header_len(&late, 1024).unwrap_err().id, None);
    }
}
