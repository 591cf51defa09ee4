//! The `dispatcher` target's input format (see [`super`]): parsing an input into a
//! [`Script`], and turning its steps into the bytes sent, made safe (every `host` one the
//! sidecar answers without a resolver, on loopback). Kept apart from the driver that runs
//! a script against the live sidecar, so the corpus generator can build inputs from it.

use std::net::IpAddr;

use serde_json::{json, Map, Value};
use sidecar_protocol::{encode_raw_frame, read_frame, Method, DEFAULT_MAX_FRAME};

/// Messages (pipe sends) per input, hello and the final `stats` excluded.
pub const MAX_MESSAGES: usize = 64;
/// Largest payload a call step carries.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Param names of every method (and some of hello's), so most params mean something.
pub const KEYS: &[&str] = &[
    "socket",
    "server",
    "host",
    "port",
    "path",
    "backlog",
    "bytes",
    "wait_ms",
    "type",
    "enable",
    "initial_delay_ms",
    "timeout_ms",
    "family",
    "version",
    "vm",
    "secret",
    "mode",
    "credit",
    "capabilities",
    "cwd",
    "max_frame",
    "event_channel_token",
];

/// Every host an input can name. None needs the host's resolver, none leaves loopback.
/// `""` and a name with a NUL are refused by the sidecar before any resolver runs.
pub const HOSTS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "::",
    "127.0.0.2",
    "[::1]",
    "::ffff:127.0.0.1",
    "LOCALHOST",
    "",
    "no\0such",
];

/// Strings for any other field.
pub const STRINGS: &[&str] = &[
    "udp4",
    "udp6",
    "/tmp/s.sock",
    "s.sock",
    "../../x",
    "",
    "a\0b",
    "push",
    "poll",
    "a",
    "sa",
    "b",
    "tcp",
    "/",
    "\u{fffd}\u{1f600}",
];

/// Ports: a few fixed ones (so listen and connect meet), 0, the edges.
pub const PORTS: &[u64] = &[7001, 7002, 7003, 0, 1, 65535, 65536, 32768];

const UNKNOWN_METHODS: &[&str] = &["", "net.", "NET.CONNECT", "dgram.createsocket", "x"];

/// The value of one param: `kind % 8` says what, `arg` which.
pub fn value(kind: u8, arg: u8) -> Value {
    let pick = |list: &[&str]| Value::from(list[arg as usize % list.len()]);
    match kind % 8 {
        0 => Value::from(arg),
        1 => Value::from(arg % 8), // an id the session may well have minted
        2 => Value::from(PORTS[arg as usize % PORTS.len()]),
        3 => pick(STRINGS),
        4 => pick(HOSTS),
        5 => Value::from(arg & 1 == 1),
        6 => Value::Null,
        _ => match arg % 8 {
            0 => json!(-1),
            1 => json!(u64::MAX),
            2 => json!(1.5),
            3 => json!(1e300),
            4 => json!(i64::MIN),
            5 => json!([1, 2]),
            6 => json!({"socket": 1}),
            _ => Value::from("x".repeat(300)),
        },
    }
}

/// A call step, as parsed (and as the corpus generator writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct CallStep {
    pub method: u8,
    pub flags: u8,
    pub id: u8,
    pub params: Vec<(u8, u8, u8)>,
    pub payload: Payload,
}

/// A payload length, as parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Payload {
    Short(u8),
    Long(u16),
}

impl Payload {
    pub fn len(self) -> usize {
        match self {
            Payload::Short(n) => n as usize,
            Payload::Long(n) => (n as usize).min(MAX_PAYLOAD),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub(crate) fn bytes(self, salt: u8) -> Vec<u8> {
        (0..self.len())
            .map(|i| (i as u8).wrapping_mul(31) ^ salt)
            .collect()
    }
}

/// One step of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Call(CallStep),
    Garbage { header: Vec<u8>, payload: Payload },
    Raw(Vec<u8>),
    Batch(Vec<CallStep>),
    BadLengths { how: u8, by: u8, call: CallStep },
    Sync,
}

/// A parsed input.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub hello: u8,
    pub steps: Vec<Step>,
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn payload(&mut self) -> Payload {
        match self.u8() {
            n @ 0..=250 => Payload::Short(n),
            _ => Payload::Long(self.u16()),
        }
    }

    fn call(&mut self) -> CallStep {
        let method = self.u8();
        let flags = self.u8();
        let id = self.u8();
        let count = ((flags >> 4) as usize).min(6);
        let params = (0..count)
            .map(|_| (self.u8(), self.u8(), self.u8()))
            .collect();
        CallStep {
            method,
            flags,
            id,
            params,
            payload: self.payload(),
        }
    }
}

impl Script {
    /// Reads an input (every byte string is a script).
    pub fn parse(data: &[u8]) -> Script {
        let mut c = Cursor(data);
        let hello = c.u8();
        let mut steps = Vec::new();
        let mut messages = 0;
        while !c.0.is_empty() && messages < MAX_MESSAGES {
            let step = match c.u8() % 16 {
                0..=10 => Step::Call(c.call()),
                11 => {
                    let len = c.u8() as usize;
                    let header = c.bytes(len);
                    Step::Garbage {
                        header,
                        payload: c.payload(),
                    }
                }
                12 => {
                    let len = (c.u16() as usize).min(MAX_PAYLOAD);
                    Step::Raw(c.bytes(len))
                }
                13 => {
                    let count = 1 + c.u8() as usize % 4;
                    Step::Batch((0..count).map(|_| c.call()).collect())
                }
                14 => {
                    let (how, by) = (c.u8(), c.u8());
                    Step::BadLengths {
                        how,
                        by,
                        call: c.call(),
                    }
                }
                _ => Step::Sync,
            };
            messages += 1;
            steps.push(step);
        }
        Script { hello, steps }
    }

    /// The input that parses back to this script (for the seed corpus).
    pub fn to_bytes(&self) -> Vec<u8> {
        fn call(out: &mut Vec<u8>, c: &CallStep) {
            assert_eq!(c.params.len(), ((c.flags >> 4) as usize).min(6));
            out.extend([c.method, c.flags, c.id]);
            for &(k, kind, arg) in &c.params {
                out.extend([k, kind, arg]);
            }
            payload(out, c.payload);
        }
        fn payload(out: &mut Vec<u8>, p: Payload) {
            match p {
                Payload::Short(n) => {
                    assert!(n <= 250);
                    out.push(n);
                }
                Payload::Long(n) => {
                    out.push(255);
                    out.extend(n.to_be_bytes());
                }
            }
        }
        let mut out = vec![self.hello];
        for step in &self.steps {
            match step {
                Step::Call(c) => {
                    out.push(0);
                    call(&mut out, c);
                }
                Step::Garbage { header, payload: p } => {
                    out.extend([11, header.len() as u8]);
                    out.extend(header);
                    payload(&mut out, *p);
                }
                Step::Raw(bytes) => {
                    out.push(12);
                    out.extend((bytes.len() as u16).to_be_bytes());
                    out.extend(bytes);
                }
                Step::Batch(calls) => {
                    assert!((1..=4).contains(&calls.len()));
                    out.extend([13, calls.len() as u8 - 1]);
                    for c in calls {
                        call(&mut out, c);
                    }
                }
                Step::BadLengths { how, by, call: c } => {
                    out.extend([14, *how, *by]);
                    call(&mut out, c);
                }
                Step::Sync => out.push(15),
            }
        }
        out
    }
}

impl CallStep {
    /// A call to `method` with `params` given as (key, kind, arg) triples (for the
    /// corpus generator: names are looked up in the tables).
    pub fn new(method: &str, id: u8, params: &[(&str, Value)], payload: Payload) -> CallStep {
        let method = Method::ALL
            .iter()
            .position(|m| m.as_str() == method)
            .unwrap_or_else(|| panic!("no method {method}")) as u8;
        let params: Vec<(u8, u8, u8)> = params
            .iter()
            .map(|(key, v)| {
                let k = KEYS.iter().position(|k| k == key).expect("a known key") as u8;
                let (kind, arg) = (0..8u8)
                    .flat_map(|kind| (0..=255u8).map(move |arg| (kind, arg)))
                    .find(|&(kind, arg)| value(kind, arg) == *v)
                    .unwrap_or_else(|| panic!("{v} is not a value an input can make"));
                (k, kind, arg)
            })
            .collect();
        CallStep {
            method,
            flags: (params.len() as u8) << 4,
            id,
            params,
            payload,
        }
    }

    /// The same call with `noreply`.
    pub fn noreply(mut self) -> CallStep {
        self.flags |= 1;
        self
    }

    /// The call's frame: header JSON, then the payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let method = match self.method {
            m @ 0..0xf0 => Method::ALL[m as usize % Method::ALL.len()].as_str(),
            m => UNKNOWN_METHODS[m as usize % UNKNOWN_METHODS.len()],
        };
        let mut header = Map::new();
        header.insert("type".into(), "call".into());
        header.insert("id".into(), self.id.into());
        header.insert("method".into(), method.into());
        if self.flags & 1 == 1 {
            header.insert("noreply".into(), true.into());
        }
        if self.flags & 2 == 0 {
            let params = if self.flags & 4 == 4 {
                value(7, self.id) // a number, an array or a string: not an object
            } else {
                let mut params = Map::new();
                for &(k, kind, arg) in &self.params {
                    params.insert(KEYS[k as usize % KEYS.len()].into(), value(kind, arg));
                }
                Value::Object(params)
            };
            header.insert("params".into(), params);
        }
        frame(
            &serde_json::to_vec(&Value::Object(header)).expect("JSON"),
            &self.payload.bytes(self.id),
        )
    }
}

pub(crate) fn frame(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + header.len() + payload.len());
    encode_raw_frame(header, payload, DEFAULT_MAX_FRAME, &mut out).expect("a small frame");
    out
}

/// Whether the sidecar could answer `host` without the host's resolver and without
/// leaving loopback (the same test as the sidecar's `needs_host_resolver`, stricter).
pub fn safe_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 || host.contains('\0') {
        return true; // refused before any resolver runs
    }
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_unspecified(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
        Err(_) => false,
    }
}

/// Replaces every `host` string that is not [`safe_host`] in a JSON value.
fn sanitize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(host) if key == "host" && !safe_host(host) => {
                        *v = Value::from("localhost");
                    }
                    _ => sanitize(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize),
        _ => {}
    }
}

/// A header made of arbitrary bytes, made safe if it is JSON: every `host` that is not
/// [`safe_host`] replaced, and re-serialized (which also collapses duplicate keys, so the
/// sidecar parses exactly the value that was checked).
pub(crate) fn safe_header(header: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(header) {
        Ok(mut value) => {
            sanitize(&mut value);
            serde_json::to_vec(&value).expect("JSON")
        }
        Err(_) => header.to_vec(),
    }
}

/// A raw message made safe: its well-framed frames get safe headers; from the first
/// framing error on, the bytes stay as they are (the sidecar reads no further).
pub(crate) fn safe_message(bytes: &[u8]) -> Vec<u8> {
    let mut reader = bytes;
    let mut out = Vec::with_capacity(bytes.len());
    while !reader.is_empty() {
        let before = reader;
        match read_frame(&mut reader, DEFAULT_MAX_FRAME) {
            Ok(Some(f)) => {
                let header = safe_header(&f.header);
                encode_raw_frame(&header, &f.payload, usize::MAX, &mut out).expect("fits");
            }
            _ => {
                out.extend_from_slice(before);
                break;
            }
        }
    }
    out
}

/// Whether the sidecar's reader fails on this message (as its in-process source does).
pub(crate) fn badly_framed(message: &[u8], max_frame: usize) -> bool {
    let mut reader = message;
    while !reader.is_empty() {
        match read_frame(&mut reader, max_frame) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return true,
        }
    }
    false
}
