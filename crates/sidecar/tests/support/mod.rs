//! A raw protocol guest for the sidecar's own tests: speaks frames directly (so tests can
//! also send broken ones) over the in-process pipe or a Unix socket.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
pub use sidecar_protocol::Mode;
use sidecar_protocol::{read_frame, Header, DEFAULT_MAX_FRAME};

pub mod bystander;
pub mod child;
mod native;
#[allow(unused_imports)] // not every test binary uses the native peers
pub use native::*;

pub const DEADLINE: Duration = Duration::from_secs(10);

pub enum Wire {
    Pipe(inproc_pipe::End),
    Unix(UnixStream),
    /// A `sidecar serve --stdio` child: we write its stdin, read its stdout.
    Child(std::process::ChildStdin, std::process::ChildStdout),
}

/// One received frame: a reply or an event, with its payload.
#[derive(Debug, Clone)]
pub enum Incoming {
    Reply {
        id: u64,
        outcome: Result<Value, Value>,
        payload: Vec<u8>,
    },
    Event {
        event: Value,
        payload: Vec<u8>,
    },
}

pub struct RawGuest {
    wire: Wire,
    next_id: u64,
    pending_events: VecDeque<(Value, Vec<u8>)>,
    pub hello: Value,
    /// Poll mode: the ids this guest knows, with the poll method for each.
    poll_mode: bool,
    known: Vec<(u64, &'static str)>,
    next_poll: usize,
}

pub fn encode(header: &Value, payload: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let total = 4 + h.len() + payload.len();
    let mut out = Vec::with_capacity(4 + total);
    out.extend((total as u32).to_be_bytes());
    out.extend((h.len() as u32).to_be_bytes());
    out.extend(h);
    out.extend(payload);
    out
}

/// A frame read from a stream, back in its encoded form (as the pipe delivers frames).
fn reencode(frame: sidecar_protocol::RawFrame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(usize::MAX, &mut out).unwrap();
    out
}

pub const ALL_CAPS: &[&str] = &[
    "push", "poll", "noreply", "tcp", "unix", "udp", "dns", "credit",
];

impl RawGuest {
    pub fn new(wire: Wire) -> Self {
        RawGuest {
            wire,
            next_id: 1,
            pending_events: VecDeque::new(),
            hello: Value::Null,
            poll_mode: false,
            known: Vec::new(),
            next_poll: 0,
        }
    }

    /// Connects and says hello (push mode); panics if refused.
    pub fn attach(wire: Wire, vm: &str, secret: &str) -> Self {
        Self::attach_mode(wire, vm, secret, Mode::Push)
    }

    /// Connects and says hello in `mode`; panics if refused.
    pub fn attach_mode(wire: Wire, vm: &str, secret: &str, mode: Mode) -> Self {
        Self::attach_caps(wire, vm, secret, mode, ALL_CAPS)
    }

    /// [`RawGuest::attach_mode`], offering `caps`.
    pub fn attach_caps(wire: Wire, vm: &str, secret: &str, mode: Mode, caps: &[&str]) -> Self {
        let mut guest = RawGuest::new(wire);
        let mode_name = if mode == Mode::Poll { "poll" } else { "push" };
        let params = json!({"version": 1, "vm": vm, "secret": secret,
                            "capabilities": caps, "mode": mode_name});
        guest.hello = guest.call("hello", params, b"").expect("hello refused");
        guest.poll_mode = mode == Mode::Poll;
        guest
    }

    /// Treats this guest as a poll-mode one (after a hello made by hand in poll mode).
    pub fn set_poll_mode(&mut self) {
        self.poll_mode = true;
    }

    /// Poll mode: remembers the ids a reply or event created, forgets closed ones.
    fn learn(&mut self, result: &Value) {
        if !self.poll_mode || !result.is_object() {
            return;
        }
        if result.get("event").is_some() {
            match result["event"].as_str() {
                Some("accept") => self
                    .known
                    .push((result["socket"].as_u64().unwrap(), "net.poll")),
                Some("close") => {
                    let id = result["socket"]
                        .as_u64()
                        .or(result["server"].as_u64())
                        .unwrap();
                    self.known.retain(|(k, _)| *k != id);
                }
                _ => {}
            }
            return;
        }
        if let Some(server) = result.get("server").and_then(Value::as_u64) {
            self.known.push((server, "net.server_poll"));
        } else if let Some(socket) = result.get("socket").and_then(Value::as_u64) {
            let udp = result.get("remote").is_none() && result.get("local").is_none();
            self.known
                .push((socket, if udp { "dgram.poll" } else { "net.poll" }));
        }
    }

    pub fn send_raw(&mut self, bytes: Vec<u8>) -> bool {
        match &mut self.wire {
            Wire::Pipe(end) => end.tx.send(bytes).is_ok(),
            Wire::Unix(stream) => stream.write_all(&bytes).is_ok(),
            Wire::Child(stdin, _) => stdin.write_all(&bytes).and_then(|()| stdin.flush()).is_ok(),
        }
    }

    /// The next frame, or `None` when the sidecar closed the stream or the deadline passed.
    pub fn recv(&mut self, deadline: Instant) -> Option<Incoming> {
        let bytes = match &mut self.wire {
            Wire::Pipe(end) => end.rx.recv_until(deadline).ok()??,
            Wire::Unix(stream) => {
                stream
                    .set_read_timeout(Some(
                        deadline
                            .saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(1)),
                    ))
                    .unwrap();
                reencode(read_frame(stream, DEFAULT_MAX_FRAME).ok()??)
            }
            Wire::Child(_, stdout) => reencode(read_frame(stdout, DEFAULT_MAX_FRAME).ok()??),
        };
        let mut reader = bytes.as_slice();
        let raw = read_frame(&mut reader, DEFAULT_MAX_FRAME).unwrap().unwrap();
        let value: Value = serde_json::from_slice(&raw.header).unwrap();
        match raw.parse_header().unwrap() {
            Header::Reply(reply) => Some(Incoming::Reply {
                id: reply.id,
                outcome: reply.outcome.map_err(|e| serde_json::to_value(e).unwrap()),
                payload: raw.payload,
            }),
            Header::Event(_) => Some(Incoming::Event {
                event: value,
                payload: raw.payload,
            }),
            Header::Call(_) => panic!("the sidecar sent a call"),
        }
    }

    pub fn send_call(&mut self, method: &str, params: Value, payload: &[u8], noreply: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut header = json!({"type": "call", "id": id, "method": method, "params": params});
        if noreply {
            header["noreply"] = true.into();
        }
        self.send_raw(encode(&header, payload));
        id
    }

    /// A blocking call: events that arrive first are queued. `Err` holds the error object.
    pub fn call(&mut self, method: &str, params: Value, payload: &[u8]) -> Result<Value, Value> {
        let id = self.send_call(method, params, payload, false);
        self.wait_reply(id)
    }

    pub fn wait_reply(&mut self, id: u64) -> Result<Value, Value> {
        self.wait_reply_payload(id).map(|(value, _)| value)
    }

    fn wait_reply_payload(&mut self, id: u64) -> Result<(Value, Vec<u8>), Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.recv(deadline).expect("no reply before the deadline") {
                Incoming::Reply {
                    id: got,
                    outcome,
                    payload,
                } if got == id => {
                    if let Ok(result) = &outcome {
                        self.learn(result);
                    }
                    return outcome.map(|value| (value, payload));
                }
                Incoming::Reply { id: got, .. } => panic!("reply to {got} while waiting for {id}"),
                Incoming::Event { event, payload } => {
                    self.pending_events.push_back((event, payload))
                }
            }
        }
    }

    /// The next event (queued ones first). In poll mode: polls the known ids in turn.
    pub fn event(&mut self) -> (Value, Vec<u8>) {
        if let Some(e) = self.pending_events.pop_front() {
            return e;
        }
        if self.poll_mode {
            return self.poll_event();
        }
        let deadline = Instant::now() + DEADLINE;
        match self.recv(deadline).expect("no event before the deadline") {
            Incoming::Event { event, payload } => (event, payload),
            Incoming::Reply { id, .. } => panic!("unexpected reply {id}"),
        }
    }

    fn poll_event(&mut self) -> (Value, Vec<u8>) {
        let deadline = Instant::now() + DEADLINE;
        let mut empty_in_a_row = 0;
        while Instant::now() < deadline {
            assert!(!self.known.is_empty(), "poll mode: no id to poll");
            let (id, method) = self.known[self.next_poll % self.known.len()];
            // A full round of empty answers: let the next poll wait (parked, 20 ms).
            let wait_ms = if empty_in_a_row >= self.known.len() {
                20
            } else {
                0
            };
            let key = if method == "net.server_poll" {
                "server"
            } else {
                "socket"
            };
            let call = self.send_call(method, json!({key: id, "wait_ms": wait_ms}), b"", false);
            match self.wait_reply_payload(call) {
                Ok((event, payload)) if !event.is_null() => return (event, payload),
                Ok(_) => {
                    empty_in_a_row += 1;
                    self.next_poll += 1;
                }
                Err(e) => panic!("poll of {id} failed: {e}"),
            }
        }
        panic!("no event before the deadline (poll mode)");
    }

    /// The next event of a given kind, skipping (and returning) others before it.
    pub fn event_of(&mut self, kind: &str) -> (Value, Vec<u8>, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let (event, payload) = self.event();
            if event["event"] == kind {
                return (event, payload, skipped);
            }
            skipped.push(event);
        }
    }

    /// Reads `len` bytes of `data` events for `socket`, granting the credit back as a
    /// consuming guest does.
    pub fn read_data(&mut self, socket: u64, len: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < len {
            let (event, payload) = self.event();
            assert_eq!(event["event"], "data", "expected data, got {event}");
            assert_eq!(event["socket"], socket);
            self.send_call(
                "net.credit",
                json!({"socket": socket, "bytes": payload.len()}),
                b"",
                true,
            );
            got.extend(payload);
        }
        got
    }

    pub fn stats(&mut self) -> Value {
        self.call("stats", json!({}), b"").unwrap()
    }

    /// Events received (while waiting for a reply) and not taken yet.
    pub fn queued_events(&self) -> usize {
        self.pending_events.len()
    }

    /// A `net.connect` to `host:port` that must succeed, then its `connect` event.
    /// Returns the socket id and the reply.
    pub fn connect_ok(&mut self, host: &str, port: u16) -> (u64, Value) {
        let params = json!({"host": host, "port": port});
        let reply = self
            .call("net.connect", params, b"")
            .unwrap_or_else(|e| panic!("connect to {host}:{port}: {e}"));
        let socket = reply["socket"].as_u64().unwrap();
        let (connect, _, _) = self.event_of("connect");
        assert_eq!(connect["socket"], socket, "{connect}");
        (socket, reply)
    }

    pub fn into_wire(self) -> Wire {
        self.wire
    }

    pub fn read_unix_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        if let Wire::Unix(stream) = &mut self.wire {
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            let _ = stream.read_to_end(&mut rest);
        }
        rest
    }
}

/// A sidecar with two VMs (`a`/`sa`, `b`/`sb`) serving in-process and on a Unix socket
/// (or in-process only: [`Harness::in_process_only`]).
pub struct Harness {
    pub sidecar: sidecar::Sidecar,
    pub socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    InProcess,
    Unix,
}

/// A transport and a mode: the same test bodies run in push and in poll mode.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub transport: Transport,
    pub mode: Mode,
}

impl From<Transport> for Setup {
    fn from(transport: Transport) -> Setup {
        Setup {
            transport,
            mode: Mode::Push,
        }
    }
}

pub const TRANSPORTS: [Setup; 4] = [
    Setup {
        transport: Transport::InProcess,
        mode: Mode::Push,
    },
    Setup {
        transport: Transport::Unix,
        mode: Mode::Push,
    },
    Setup {
        transport: Transport::InProcess,
        mode: Mode::Poll,
    },
    Setup {
        transport: Transport::Unix,
        mode: Mode::Poll,
    },
];

impl Harness {
    pub fn new() -> Self {
        let config = sidecar::SidecarConfig::default()
            .with_vm("a", "sa")
            .with_vm("b", "sb");
        Self::with_config(config)
    }

    pub fn with_config(config: sidecar::SidecarConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sidecar.sock");
        let sidecar = sidecar::Sidecar::start(config).unwrap();
        sidecar.listen_unix(&socket).unwrap();
        Harness {
            sidecar,
            socket,
            _dir: dir,
        }
    }

    /// A sidecar started with `Sidecar::start_in_process` (its RPC loop has no I/O
    /// driver): only in-process wires can be made.
    pub fn in_process_only(config: sidecar::SidecarConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("never-bound.sock");
        let sidecar = sidecar::Sidecar::start_in_process(config).unwrap();
        Harness {
            sidecar,
            socket,
            _dir: dir,
        }
    }

    pub fn wire(&self, setup: impl Into<Setup>) -> Wire {
        match setup.into().transport {
            Transport::InProcess => Wire::Pipe(self.sidecar.connect_in_process().unwrap()),
            Transport::Unix => {
                assert!(
                    self.socket.exists(),
                    "this harness serves in-process sessions only"
                );
                Wire::Unix(UnixStream::connect(&self.socket).unwrap())
            }
        }
    }

    /// A guest attached to VM `a` over `setup`'s transport, in its mode.
    pub fn guest(&self, setup: impl Into<Setup>) -> RawGuest {
        self.guest_in(setup, "a")
    }

    pub fn guest_in(&self, setup: impl Into<Setup>, vm: &str) -> RawGuest {
        let setup = setup.into();
        let secret = format!("s{vm}");
        RawGuest::attach_mode(self.wire(setup), vm, &secret, setup.mode)
    }

    /// The operator's view, once the sidecar has processed everything sent so far.
    pub fn stats(&self) -> Value {
        self.sidecar.stats().unwrap()
    }
}

/// A sidecar with VMs `a`/`sa` and `b`/`sb` whose policy allows `rules`
/// (`ADDR[/PREFIX][:PORT[-PORT]]`, or `unix:PATH`), for tests of host sockets.
pub fn allowing(rules: &[&str]) -> Harness {
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb");
    for rule in rules {
        config = config.with_rule(None, rule.parse().unwrap_or_else(|e| panic!("{e}")));
    }
    Harness::with_config(config)
}

/// A connected pair: (server guest, server-side socket id, client guest, client socket id).
pub struct Conn {
    pub server: RawGuest,
    pub server_sock: u64,
    pub client: RawGuest,
    pub client_sock: u64,
    pub server_id: u64,
}

pub fn connect_pair(
    h: &Harness,
    transport: impl Into<Setup> + Copy,
    listen: Value,
    connect: Value,
) -> Conn {
    let mut server = h.guest(transport);
    let mut client = h.guest(transport);
    let listened = server.call("net.listen", listen, b"").expect("listen");
    let server_id = listened["server"].as_u64().unwrap();
    let mut connect = connect;
    if connect.get("path").is_none() && connect.get("port").is_none() {
        connect["port"] = listened["local"]["port"].clone();
    }
    let connected = client.call("net.connect", connect, b"").expect("connect");
    let client_sock = connected["socket"].as_u64().unwrap();
    let (accept, _, _) = server.event_of("accept");
    let server_sock = accept["socket"].as_u64().unwrap();
    // Take the connection (acknowledges the accept, as the guest client does).
    server.send_call(
        "net.credit",
        json!({"socket": server_sock, "bytes": 0}),
        b"",
        true,
    );
    let (connect_event, _, _) = client.event_of("connect");
    assert_eq!(connect_event["socket"], client_sock);
    Conn {
        server,
        server_sock,
        client,
        client_sock,
        server_id,
    }
}

/// The error code of a call that must fail.
pub fn code(result: Result<Value, Value>) -> String {
    result.expect_err("the call should fail")["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A `hello` with exactly these params on a fresh stream: the guest and the outcome.
pub fn hello_with(
    h: &Harness,
    transport: Transport,
    params: Value,
) -> (RawGuest, Result<Value, Value>) {
    let mut g = RawGuest::new(h.wire(transport));
    let outcome = g.call("hello", params, b"");
    g.hello = outcome.clone().unwrap_or(Value::Null);
    (g, outcome)
}

/// A push-mode guest of `vm` (secret `s{vm}`, every capability) whose hello also
/// carries `extra` (e.g. `{"credit": 1024}` or `{"cwd": "/srv"}`); panics if refused.
pub fn attach_with(h: &Harness, transport: Transport, vm: &str, extra: Value) -> RawGuest {
    let mut params = json!({"version": 1, "vm": vm, "secret": format!("s{vm}"),
                            "capabilities": ALL_CAPS});
    for (key, value) in extra.as_object().expect("an object") {
        params[key] = value.clone();
    }
    let (g, outcome) = hello_with(h, transport, params);
    outcome.expect("hello refused");
    g
}

/// A new UDP socket (`"udp4"` or `"udp6"`), unbound: its id.
pub fn udp_socket(g: &mut RawGuest, kind: &str) -> u64 {
    let created = g.call("dgram.createSocket", json!({"type": kind}), b"");
    created.expect("dgram.createSocket")["socket"]
        .as_u64()
        .unwrap()
}

/// Reads frames until the replies to `ids` have all come, in whatever order (parked
/// calls answer out of order); events in between are dropped.
pub fn replies(
    g: &mut RawGuest,
    ids: &[u64],
) -> std::collections::HashMap<u64, Result<Value, Value>> {
    let mut got = std::collections::HashMap::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < ids.len() {
        match g.recv(deadline).expect("replies before the deadline") {
            Incoming::Reply { id, outcome, .. } if ids.contains(&id) => {
                got.insert(id, outcome);
            }
            Incoming::Reply { id, .. } => panic!("unexpected reply {id}"),
            Incoming::Event { .. } => {}
        }
    }
    got
}

/// Asks the operator's stats until `done` holds (each ask is a round trip through the
/// sidecar's loop, so whatever it was processing is done), within the deadline.
pub fn settle(h: &Harness, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stats = h.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: {stats}");
        std::thread::yield_now();
    }
}

/// Byte `i` of a test stream: `i % 251`; bytes `offset..offset + len` of it.
pub fn pattern_at(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}
