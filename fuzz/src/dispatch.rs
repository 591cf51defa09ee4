//! The `dispatcher` target: a live in-process sidecar (VMs `a`/`sa` and `b`/`sb`, the
//! default config: no allow rules, so nothing leaves a VM), started once per process; per
//! input, a new session says a valid hello and then sends what the input describes.
//!
//! # Input
//!
//! `[hello flags] step*`, read byte by byte (a missing byte reads as 0). Hello flags:
//! bit 0 VM `b` (else `a`), bit 1 poll mode, bit 2 the smallest guest `max_frame` (4096,
//! so the sidecar splits and refuses what would not fit), bit 3 only `push`/`poll` as
//! capabilities (else every one), bit 4 the `event_channel` capability too.
//!
//! Each step starts with a tag byte; `tag % 16`:
//! - `0..=10` **call**: `[method, flags, id, (key, kind, arg)*, payload]`. `method` indexes
//!   [`sidecar_protocol::Method::ALL`] (values from 0xf0 pick an unknown name instead);
//!   `flags`: bit 0 `noreply`, bit 1 no `params`, bit 2 `params` not an object, bits 4..7
//!   the number of params (at most 6), each a key from [`KEYS`] and a value from `kind`/`arg`
//!   ([`value`]): small integers, ids, ports, strings, hosts, booleans, null, odd numbers.
//!   Payload: `0` none, `1..=250` that many bytes, `251..` a big-endian `u16` length
//!   follows (at most 64 KiB).
//! - `11` **garbage header**: `[len, bytes.., payload]`, a well-framed frame whose header
//!   is those bytes.
//! - `12` **raw message**: `[len u16, bytes..]`, sent as one pipe message as they are:
//!   several frames, half a frame, a lying prefix.
//! - `13` **batch**: `[count]` then up to 4 calls, sent as one pipe message.
//! - `14` **bad lengths**: `[how, by]` then a call whose prefix is made wrong (`total` too
//!   large or too small, `header_len` past `total`, a `total` past the limit).
//! - `15` **sync**: a `stats` call whose reply is awaited before the next step.
//!
//! At most [`MAX_MESSAGES`] messages per input. The format (parsing, encoding, making
//! hosts safe) is in `dispatch/script.rs`; this file runs a script against the sidecar.
//!
//! Host names only ever come from [`HOSTS`]: `localhost`, loopback and unspecified
//! literals, and names the sidecar refuses before asking any resolver. A header built
//! from raw bytes that happens to be JSON naming another `host` has it replaced, so no
//! input makes the sidecar resolve a name or reach past the machine's loopback.
//!
//! # Checked
//!
//! - no panic anywhere in the process (libFuzzer aborts on one, on any thread);
//! - every frame the sidecar sends is one well-formed frame of at most the guest's
//!   `max_frame`, whose header is a reply or an event (never a call);
//! - the session stays open unless a message was badly framed, and then it is closed
//!   (after at most one `error` event); while open it answers a final `stats`;
//! - after the session is dropped, a fresh session still gets its `stats` answered
//!   within the deadline.

mod script;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidecar::{Sidecar, SidecarConfig};
use sidecar_protocol::{read_frame, Header, DEFAULT_MAX_FRAME};

use script::{badly_framed, frame, safe_header, safe_message};
pub use script::{
    safe_host, value, CallStep, Payload, Script, Step, HOSTS, KEYS, MAX_MESSAGES, MAX_PAYLOAD,
    PORTS, STRINGS,
};

/// How long the sidecar may take to answer.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// `PUSHNET_FUZZ_TRACE=1`: print every frame sent and received (to debug an input).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("PUSHNET_FUZZ_TRACE").is_some())
}

/// The sidecar every input talks to, started on first use.
pub fn sidecar() -> &'static Sidecar {
    static SIDECAR: OnceLock<Sidecar> = OnceLock::new();
    SIDECAR.get_or_init(|| {
        let config = SidecarConfig::default()
            .with_vm("a", "sa")
            .with_vm("b", "sb");
        Sidecar::start(config).expect("the sidecar starts")
    })
}

/// One session from the guest's side.
struct Session {
    end: inproc_pipe::End,
    max_frame: usize,
}

/// What came back for one wait.
enum Got {
    Reply(u64, Value),
    Event,
    Closed,
    Late,
}

impl Session {
    fn open(hello: Value, max_frame: usize) -> Session {
        let end = sidecar()
            .connect_in_process()
            .expect("a new in-process session");
        let session = Session { end, max_frame };
        let call = json!({"type": "call", "id": 0, "method": "hello", "params": hello});
        session.send(frame(&serde_json::to_vec(&call).unwrap(), b""));
        let result = session.wait_reply(0).expect("hello is answered");
        assert!(result.get("session").is_some(), "hello refused: {result}");
        session
    }

    fn send(&self, message: Vec<u8>) -> bool {
        if trace() {
            eprintln!(
                "  -> {}",
                String::from_utf8_lossy(&message[..message.len().min(160)])
            );
        }
        self.end.tx.send(message).is_ok()
    }

    /// Checks one frame from the sidecar.
    fn receive(&self, deadline: Instant) -> Got {
        let message = match self.end.rx.recv_until(deadline) {
            Ok(Some(message)) => message,
            Ok(None) => return Got::Late,
            Err(_) => return Got::Closed,
        };
        let mut reader = &message[..];
        if trace() {
            let header_len = u32::from_be_bytes(message[4..8].try_into().unwrap()) as usize;
            let header = String::from_utf8_lossy(&message[8..(8 + header_len).min(message.len())]);
            eprintln!("  <- {header} (+{} bytes)", message.len() - 8 - header_len);
        }
        let frame = read_frame(&mut reader, self.max_frame)
            .unwrap_or_else(|e| panic!("the sidecar sent a bad frame: {e}"))
            .expect("a pipe message holds a frame");
        assert!(
            reader.is_empty(),
            "a pipe message from the sidecar holds one frame"
        );
        match frame.parse_header() {
            Ok(Header::Reply(reply)) => {
                let result = match reply.outcome {
                    Ok(value) => value,
                    Err(e) => json!({"error": e.code.as_str()}),
                };
                Got::Reply(reply.id, result)
            }
            Ok(Header::Event(_)) => Got::Event,
            Ok(Header::Call(call)) => panic!("the sidecar sent a call: {call:?}"),
            Err(e) => panic!("the sidecar sent a header it cannot parse itself: {e}"),
        }
    }

    /// Waits for the reply to `id`: `Err(true)` if the stream closed first.
    fn wait_reply(&self, id: u64) -> Result<Value, bool> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.receive(deadline) {
                Got::Reply(got, value) if got == id => return Ok(value),
                Got::Reply(..) | Got::Event => {}
                Got::Closed => return Err(true),
                Got::Late => panic!("no reply to {id} within {DEADLINE:?}: the sidecar hangs"),
            }
        }
    }

    /// Reads until the sidecar closes the stream.
    fn wait_closed(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.receive(deadline) {
                Got::Closed => return,
                Got::Late => panic!("a badly framed message did not close the session"),
                _ => {}
            }
        }
    }
}

fn hello_params(flags: u8) -> (Value, usize) {
    let vm = if flags & 1 == 1 { "b" } else { "a" };
    let mode = if flags & 2 == 2 { "poll" } else { "push" };
    let mut caps: Vec<&str> = if flags & 8 == 8 {
        vec!["push", "poll"]
    } else {
        vec![
            "push", "poll", "noreply", "tcp", "unix", "udp", "dns", "credit",
        ]
    };
    if flags & 16 == 16 {
        caps.push("event_channel");
    }
    let mut hello = json!({"version": 1, "vm": vm, "secret": format!("s{vm}"),
                           "mode": mode, "capabilities": caps});
    // The sidecar raises a guest limit below 4096 to 4096.
    let max_frame = if flags & 4 == 4 {
        hello["max_frame"] = 4096.into();
        4096
    } else {
        DEFAULT_MAX_FRAME
    };
    (hello, max_frame)
}

/// Runs one input (see the module docs).
pub fn run(data: &[u8]) {
    let script = Script::parse(data);
    let (hello, max_frame) = hello_params(script.hello);
    let session = Session::open(hello, max_frame);
    let sidecar_limit = DEFAULT_MAX_FRAME;
    let mut closed = false;
    for step in &script.steps {
        let message = match step {
            Step::Call(call) => call.encode(),
            Step::Garbage { header, payload } => {
                frame(&safe_header(header), &payload.bytes(header.len() as u8))
            }
            Step::Raw(bytes) => safe_message(bytes),
            Step::Batch(calls) => calls.iter().flat_map(CallStep::encode).collect(),
            Step::BadLengths { how, by, call } => {
                let mut bytes = call.encode();
                let total = u32::from_be_bytes(bytes[..4].try_into().unwrap());
                let header_len = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
                let by = u32::from(*by) + 1;
                let (total, header_len) = match how % 4 {
                    0 => (total + by, header_len),
                    1 => (total.saturating_sub(by), header_len),
                    2 => (total, total.saturating_sub(4) + by),
                    _ => (u32::MAX - by, header_len),
                };
                bytes[..4].copy_from_slice(&total.to_be_bytes());
                bytes[4..8].copy_from_slice(&header_len.to_be_bytes());
                bytes
            }
            Step::Sync => {
                let id = 1 << 40;
                let call = json!({"type": "call", "id": id, "method": "stats"});
                session.send(frame(&serde_json::to_vec(&call).unwrap(), b""));
                match session.wait_reply(id) {
                    Ok(stats) => assert!(stats.get("session").is_some(), "{stats}"),
                    Err(_) => panic!("the session closed without a framing error"),
                }
                continue;
            }
        };
        let fatal = badly_framed(&message, sidecar_limit);
        if !session.send(message) {
            panic!("the session closed without a framing error");
        }
        if fatal {
            closed = true;
            break;
        }
    }
    if closed {
        session.wait_closed();
    } else {
        // Everything sent was served: the final `stats` is answered after it.
        let id = 1 << 41;
        let call = json!({"type": "call", "id": id, "method": "stats"});
        session.send(frame(&serde_json::to_vec(&call).unwrap(), b""));
        let stats = session
            .wait_reply(id)
            .unwrap_or_else(|_| panic!("the session closed without a framing error"));
        assert!(stats.get("session").is_some(), "{stats}");
    }
    drop(session);

    // The sidecar as a whole still serves: a fresh session gets its `stats`.
    let (hello, max_frame) = hello_params(0);
    let fresh = Session::open(hello, max_frame);
    let call = json!({"type": "call", "id": 1, "method": "stats"});
    fresh.send(frame(&serde_json::to_vec(&call).unwrap(), b""));
    let stats = fresh.wait_reply(1).expect("a fresh session is served");
    assert!(stats.get("session").is_some(), "{stats}");
}
