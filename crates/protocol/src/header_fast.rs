//! The one-pass header parser: the shape our own encoders write, read without buffering.
//!
//! # Why
//!
//! [`Header`] is tagged by `"type"` and an [`Event`] by `"event"`, with the event's body
//! flattened into it. serde's derive reads such a value by buffering the whole object into
//! its generic `Content` tree, once per tag and once for the flatten: three passes and an
//! allocation per field, for every frame on both sides of every round trip. On this
//! project's VMs, right after a vCPU wakes, that was a measurable slice of a push's
//! delivery (`diffbench --stage-trace`, "guest decode" and "loop sendto").
//!
//! Every encoder of this crate writes the tags first (`"type"`, then `"event"`), so
//! the parser here reads the object once, in order, knowing from the tags which fields to
//! expect. It accepts only what the derived parser accepts *and* produces the same value:
//! tags first, known fields once each, no escapes in keys. Anything else (another order,
//! an unknown or repeated field, a wrong type, a missing field) makes it give up, and
//! [`crate::parse_header`] runs the derived parser instead, which then decides, with its
//! own error messages. So the fast path changes speed only, never what is accepted.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::address::{Address, ServerId, SocketId};
use crate::error::{ErrorCode, WireError};
use crate::event::{Event, EventBody};
use crate::header::{Call, Header, Reply};
use crate::method::{Method, Request};

/// The header, if it has the canonical shape; `None` means "ask the derived parser".
pub(crate) fn parse(json: &[u8]) -> Option<Header> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let header = deserializer.deserialize_map(HeaderVisitor).ok()?;
    deserializer.end().ok()?;
    Some(header)
}

/// A call read straight into its typed request (see [`parse_call`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    /// The call's id.
    pub id: u64,
    /// Whether the call asked for no reply.
    pub noreply: bool,
    /// The method and its typed params.
    pub request: Request,
}

/// A call header read straight into its typed request, with no `Value` for its params,
/// when it has the canonical shape and valid params; `None` means "ask
/// [`crate::parse_header`] and [`Call::into_request`]", which then decide, with their
/// own errors. What both accept, both read the same.
pub fn parse_call(json: &[u8]) -> Option<ParsedCall> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let call = deserializer.deserialize_map(CallVisitor).ok()?;
    deserializer.end().ok()?;
    let method: Method = call.method.parse().ok()?;
    let params = match call.params.map(|raw| raw.get()) {
        None | Some("null") => "{}",
        Some(text) => text,
    };
    Some(ParsedCall {
        id: call.id,
        noreply: call.noreply,
        request: Request::parse_text(method, params)?,
    })
}

/// A call's fields, borrowed from the header.
struct RawCall<'de> {
    id: u64,
    method: &'de str,
    params: Option<&'de serde_json::value::RawValue>,
    noreply: bool,
}

struct CallVisitor;

impl<'de> Visitor<'de> for CallVisitor {
    type Value = RawCall<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a call header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawCall<'de>, A::Error> {
        if map.next_key::<&str>()? != Some("type") || map.next_value::<&str>()? != "call" {
            return Err(give_up());
        }
        let (mut id, mut method, mut params, mut noreply) = (None, None, None, None);
        fields(&mut map, |key, map| match key {
            "id" => value::<_, u64>(map, &mut id),
            "method" => value::<_, &str>(map, &mut method),
            "params" => value::<_, &serde_json::value::RawValue>(map, &mut params),
            "noreply" => value::<_, bool>(map, &mut noreply),
            _ => Ok(false),
        })?;
        Ok(RawCall {
            id: id.ok_or_else(give_up)?,
            method: method.ok_or_else(give_up)?,
            params,
            noreply: noreply.unwrap_or(false),
        })
    }
}

/// Gives up on the fast path (the message is never shown: the derived parser re-reads).
fn give_up<E: de::Error>() -> E {
    E::custom("not the canonical shape")
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a frame header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        if map.next_key::<&str>()? != Some("type") {
            return Err(give_up());
        }
        match map.next_value::<&str>()? {
            "call" => call(map).map(Header::Call),
            "reply" => reply(map).map(Header::Reply),
            "event" => event(map).map(Header::Event),
            _ => Err(give_up()),
        }
    }
}

/// Stores a field's value, giving up if the field was already seen.
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), ()> {
    match slot {
        Some(_) => Err(()),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// Reads `map`'s remaining fields through `field` (which returns `false` for a field it
/// does not know, and stores the value otherwise).
fn fields<'de, A, F>(map: &mut A, mut field: F) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Result<bool, A::Error>,
{
    while let Some(key) = map.next_key::<&str>()? {
        if !field(key, map)? {
            return Err(give_up());
        }
    }
    Ok(())
}

/// Reads one value into `slot` (`Err` if the field repeats).
fn value<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
) -> Result<bool, A::Error> {
    let v = map.next_value::<T>()?;
    once(slot, v).map_err(|()| give_up())?;
    Ok(true)
}

fn call<'de, A: MapAccess<'de>>(mut map: A) -> Result<Call, A::Error> {
    let (mut id, mut method, mut params, mut noreply) = (None, None, None, None);
    fields(&mut map, |key, map| match key {
        "id" => value::<_, u64>(map, &mut id),
        "method" => value::<_, String>(map, &mut method),
        "params" => value::<_, Value>(map, &mut params),
        "noreply" => value::<_, bool>(map, &mut noreply),
        _ => Ok(false),
    })?;
    Ok(Call {
        id: id.ok_or_else(give_up)?,
        method: method.ok_or_else(give_up)?,
        params: params.unwrap_or(Value::Null),
        noreply: noreply.unwrap_or(false),
    })
}

fn reply<'de, A: MapAccess<'de>>(mut map: A) -> Result<Reply, A::Error> {
    let (mut id, mut result, mut error) = (None, None, None::<Option<WireError>>);
    fields(&mut map, |key, map| match key {
        "id" => value::<_, u64>(map, &mut id),
        "result" => value::<_, Value>(map, &mut result),
        "error" => value::<_, Option<WireError>>(map, &mut error),
        _ => Ok(false),
    })?;
    let outcome = match (result, error.flatten()) {
        (Some(_), Some(_)) => return Err(give_up()),
        (_, Some(error)) => Err(error),
        (result, None) => Ok(result.unwrap_or(Value::Null)),
    };
    Ok(Reply {
        id: id.ok_or_else(give_up)?,
        outcome,
    })
}

/// Every field any event body has, each read with the type its variants give it.
#[derive(Default)]
struct EventFields {
    seq: Option<u64>,
    server: Option<Option<ServerId>>,
    socket: Option<Option<SocketId>>,
    local: Option<Address>,
    remote: Option<Address>,
    request: Option<Option<u64>>,
    had_error: Option<bool>,
    code: Option<ErrorCode>,
    message: Option<String>,
    buffered: Option<u64>,
}

/// The fields each event kind has besides `seq` (as the derive names them).
fn kind_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "accept" => &["server", "socket", "local", "remote"],
        "connect" => &["socket", "local", "remote", "request"],
        "data" | "end" | "drain" => &["socket"],
        "close" => &["socket", "server", "had_error"],
        "error" => &["socket", "server", "request", "code", "message"],
        "pressure" => &["socket", "buffered"],
        "message" => &["socket", "remote"],
        _ => return None,
    })
}

fn event<'de, A: MapAccess<'de>>(mut map: A) -> Result<Event, A::Error> {
    if map.next_key::<&str>()? != Some("event") {
        return Err(give_up());
    }
    let kind: &str = map.next_value()?;
    let allowed = kind_fields(kind).ok_or_else(give_up)?;
    let mut f = EventFields::default();
    fields(&mut map, |key, map| {
        if key != "seq" && !allowed.contains(&key) {
            return Ok(false);
        }
        match key {
            "seq" => value(map, &mut f.seq),
            "server" => value(map, &mut f.server),
            "socket" => value(map, &mut f.socket),
            "local" => value(map, &mut f.local),
            "remote" => value(map, &mut f.remote),
            "request" => value(map, &mut f.request),
            "had_error" => value(map, &mut f.had_error),
            "code" => value(map, &mut f.code),
            "message" => value(map, &mut f.message),
            "buffered" => value(map, &mut f.buffered),
            _ => Ok(false),
        }
    })?;
    let seq = f.seq.ok_or_else(give_up)?;
    let body = body(kind, f).ok_or_else(give_up)?;
    Ok(Event::new(seq, body))
}

/// Assembles the body; `None` when a required field is missing (or `null`).
fn body(kind: &str, f: EventFields) -> Option<EventBody> {
    let socket = f.socket.flatten();
    let server = f.server.flatten();
    let request = f.request.flatten();
    Some(match kind {
        "accept" => EventBody::Accept {
            server: server?,
            socket: socket?,
            local: f.local?,
            remote: f.remote?,
        },
        "connect" => EventBody::Connect {
            socket: socket?,
            local: f.local?,
            remote: f.remote?,
            request,
        },
        "data" => EventBody::Data { socket: socket? },
        "end" => EventBody::End { socket: socket? },
        "drain" => EventBody::Drain { socket: socket? },
        "close" => EventBody::Close {
            socket,
            server,
            had_error: f.had_error.unwrap_or(false),
        },
        "error" => EventBody::Error {
            socket,
            server,
            request,
            code: f.code?,
            message: f.message.unwrap_or_default(),
        },
        "pressure" => EventBody::Pressure {
            socket: socket?,
            buffered: f.buffered?,
        },
        "message" => EventBody::Message {
            socket: socket?,
            remote: f.remote?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dgram::SendParams;
    use crate::encode::{encode_call, encode_event, encode_reply_err, encode_reply_ok};
    use crate::frame::{read_frame, DEFAULT_MAX_FRAME};

    fn inet(s: &str) -> Address {
        Address::Inet(s.parse().unwrap())
    }

    /// One event of every kind, optional fields both set and left out.
    fn every_event() -> Vec<Event> {
        let (s, srv) = (SocketId(3), ServerId(2));
        let bodies = vec![
            EventBody::Accept {
                server: srv,
                socket: s,
                local: inet("127.0.0.1:80"),
                remote: Address::Unix("/run/peer".into()),
            },
            EventBody::Connect {
                socket: s,
                local: inet("[::1]:5"),
                remote: inet("10.0.0.1:443"),
                request: None,
            },
            EventBody::Connect {
                socket: s,
                local: inet("[::1]:5"),
                remote: inet("10.0.0.1:443"),
                request: Some(9),
            },
            EventBody::Data { socket: s },
            EventBody::End { socket: s },
            EventBody::Drain { socket: s },
            EventBody::Close {
                socket: Some(s),
                server: None,
                had_error: true,
            },
            EventBody::Close {
                socket: None,
                server: Some(srv),
                had_error: false,
            },
            EventBody::Error {
                socket: Some(s),
                server: None,
                request: Some(4),
                code: ErrorCode::Econnreset,
                message: "reset \"quoted\"".into(),
            },
            EventBody::Error {
                socket: None,
                server: None,
                request: None,
                code: ErrorCode::Eproto,
                message: String::new(),
            },
            EventBody::Pressure {
                socket: s,
                buffered: 1 << 40,
            },
            EventBody::Message {
                socket: s,
                remote: inet("127.0.0.1:9"),
            },
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| Event::new(i as u64 + 1, b))
            .collect()
    }

    fn header_of(frame: &[u8]) -> Vec<u8> {
        read_frame(&mut &frame[..], DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap()
            .header
    }

    fn derived(json: &[u8]) -> Result<Header, String> {
        serde_json::from_slice(json).map_err(|e| e.to_string())
    }

    /// What every encoder of this crate writes takes the fast path, with the derived value.
    #[test]
    fn canonical_headers_take_the_fast_path_and_agree() {
        let mut headers = Vec::new();
        for event in every_event() {
            let mut frame = Vec::new();
            encode_event(&event, b"", DEFAULT_MAX_FRAME, &mut frame).unwrap();
            headers.push(header_of(&frame));
            headers.push(serde_json::to_vec(&Header::Event(event)).unwrap());
        }
        let send = SendParams {
            socket: SocketId(3),
            host: None,
            port: None,
        };
        for noreply in [false, true] {
            let mut frame = Vec::new();
            encode_call(7, &send, noreply, b"x", DEFAULT_MAX_FRAME, &mut frame).unwrap();
            headers.push(header_of(&frame));
        }
        let call = Call::new(8, send).noreply();
        headers.push(serde_json::to_vec(&Header::Call(call)).unwrap());
        let mut frame = Vec::new();
        encode_reply_ok(
            5,
            &serde_json::json!({"bytes": 3}),
            b"",
            DEFAULT_MAX_FRAME,
            &mut frame,
        )
        .unwrap();
        headers.push(header_of(&frame));
        let mut frame = Vec::new();
        encode_reply_ok(5, &Value::Null, b"", DEFAULT_MAX_FRAME, &mut frame).unwrap();
        headers.push(header_of(&frame));
        let error = WireError::new(ErrorCode::Eacces, "denied by rule 2");
        let mut frame = Vec::new();
        encode_reply_err(6, &error, DEFAULT_MAX_FRAME, &mut frame).unwrap();
        headers.push(header_of(&frame));
        for json in &headers {
            let text = String::from_utf8_lossy(json);
            let fast = parse(json).unwrap_or_else(|| panic!("slow path for {text}"));
            assert_eq!(Ok(fast), derived(json), "{text}");
        }
    }

    /// Any other shape is left to the derived parser, whose verdict `parse_header` keeps.
    #[test]
    fn other_shapes_fall_back_and_keep_the_derived_verdict() {
        let cases: &[&str] = &[
            // Tags not first.
            r#"{"id":1,"type":"call","method":"stats"}"#,
            r#"{"type":"event","seq":1,"event":"data","socket":3}"#,
            // Unknown, repeated, escaped or null fields.
            r#"{"type":"call","id":1,"method":"stats","extra":[1,{"a":2}]}"#,
            r#"{"type":"event","event":"data","socket":3,"seq":1,"remote":{"path":"/x"}}"#,
            r#"{"type":"call","id":1,"id":2,"method":"stats"}"#,
            r#"{"type":"call","i\u0064":1,"method":"stats"}"#,
            r#"{"type":"event","event":"data","socket":null,"seq":1}"#,
            r#"{"type":"event","event":"close","socket":null,"seq":1}"#,
            r#"{"type":"call","id":1,"method":"stats","noreply":null}"#,
            // Missing, mistyped, contradictory.
            r#"{"type":"event","event":"data","seq":1}"#,
            r#"{"type":"event","event":"message","socket":3,"seq":1}"#,
            r#"{"type":"event","event":"nope","seq":1}"#,
            r#"{"type":"call","id":-1,"method":"stats"}"#,
            r#"{"type":"reply","id":1,"result":1,"error":{"code":"EPROTO"}}"#,
            r#"{"type":"reply","id":1,"error":null}"#,
            r#"{"type":"gossip","id":1}"#,
            r#"{"type":"call","id":1,"method":"stats"} trailing"#,
            r#"[1,2]"#,
        ];
        for json in cases {
            let slow = derived(json.as_bytes());
            if let Some(fast) = parse(json.as_bytes()) {
                assert_eq!(Ok(fast), slow, "{json}");
            }
            let kept = crate::parse_header(json.as_bytes()).map_err(|e| e.message);
            assert_eq!(kept, slow, "{json}");
        }
        // The reordered and the canonical forms of one event are the same event.
        let canonical = parse(br#"{"type":"event","event":"data","socket":3,"seq":1}"#);
        assert_eq!(Ok(canonical.unwrap()), derived(cases[1].as_bytes()));
    }

    /// The general path's verdict on a call header: id, noreply and request.
    fn slow_call(json: &[u8]) -> Option<(u64, bool, Result<Request, String>)> {
        match crate::parse_header(json).ok()? {
            Header::Call(call) => Some((
                call.id,
                call.noreply,
                call.into_request().map_err(|e| e.to_string()),
            )),
            _ => None,
        }
    }

    /// Every method's call, as our encoders write it, is read straight into the same
    /// request the general path builds.
    #[test]
    fn canonical_calls_of_every_method_take_the_typed_path() {
        let samples = crate::method::tests::method_samples();
        for (i, (method, params)) in Method::ALL.iter().zip(samples).enumerate() {
            let request = Request::parse(method.as_str(), params).unwrap();
            for noreply in [false, true] {
                let mut call = Call::from_request(i as u64 + 7, &request);
                call.noreply = noreply;
                let json = serde_json::to_vec(&Header::Call(call)).unwrap();
                let fast = parse_call(&json)
                    .unwrap_or_else(|| panic!("{method}: {}", String::from_utf8_lossy(&json)));
                assert_eq!(fast.request, request, "{method}");
                assert_eq!(
                    Some((fast.id, fast.noreply, Ok(fast.request))),
                    slow_call(&json),
                    "{method}"
                );
            }
        }
        // And what the guest client's encoder writes (params by reference, a payload).
        let send = SendParams {
            socket: SocketId(3),
            host: None,
            port: None,
        };
        let mut frame = Vec::new();
        encode_call(9, &send, true, b"x", DEFAULT_MAX_FRAME, &mut frame).unwrap();
        let fast = parse_call(&header_of(&frame)).expect("the typed path");
        assert_eq!((fast.id, fast.noreply), (9, true));
        assert_eq!(fast.request, Request::DgramSend(send));
    }

    /// Anything else is left to the general path (which may accept it, or report it).
    #[test]
    fn other_calls_fall_back_to_the_general_path() {
        let cases: &[&str] = &[
            // Accepted by the general path, not by the typed one.
            r#"{"type":"call","id":1,"method":"dgram.send","params":{"socket":3,"socket":4}}"#,
            r#"{"type":"call","id":1,"method":"dgram.s\u0065nd","params":{"socket":3}}"#,
            r#"{"id":1,"type":"call","method":"stats"}"#,
            r#"{"type":"call","id":1,"method":"stats","trace":true}"#,
            // Reported by the general path.
            r#"{"type":"call","id":1,"method":"net.teleport","params":{}}"#,
            r#"{"type":"call","id":1,"method":"net.write","params":{"socket":"three"}}"#,
            r#"{"type":"call","id":1,"method":"net.write"}"#,
            r#"{"type":"event","event":"data","socket":3,"seq":1}"#,
        ];
        for json in cases {
            assert!(parse_call(json.as_bytes()).is_none(), "{json}");
        }
        assert!(matches!(
            slow_call(cases[0].as_bytes()),
            Some((1, false, Ok(_)))
        ));
        assert!(matches!(
            slow_call(cases[1].as_bytes()),
            Some((1, false, Ok(_)))
        ));
        assert!(matches!(
            slow_call(cases[4].as_bytes()),
            Some((1, false, Err(_)))
        ));
        // `null` or absent params are `{}` on both paths.
        for json in [
            r#"{"type":"call","id":2,"method":"stats"}"#,
            r#"{"type":"call","id":2,"method":"stats","params":null}"#,
        ] {
            let fast = parse_call(json.as_bytes()).expect("the typed path");
            assert_eq!(
                Some((2, false, Ok(fast.request))),
                slow_call(json.as_bytes())
            );
        }
    }
}
