//! A scripted fake sidecar for the client's tests.
//!
//! The test thread plays the sidecar step by step (expect this call, reply that, push
//! this event) while the guest runs on its own thread. Every wait has a deadline, so a
//! missing frame fails the test instead of hanging it, and nothing sleeps to synchronise:
//! a guest that must have received an event before its next step makes a blocking call
//! (a *fence*, e.g. `stats`) that the fake answers only after pushing the event.
//!
//! In **poll mode** ([`FakeSidecar::set_poll_mode`]) the fake pushes nothing: events are
//! handed out as replies to the guest's polls ([`FakeSidecar::deliver`]), and polls that
//! come while the test waits for another call are answered `null` and logged, so a test
//! can assert what the loop polled, and that it always asked with `wait_ms = 0`.
//! [`FakeSidecar::deliver`] also works in push mode (it pushes), so one test body can
//! run in both modes.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use guest_client::protocol::{
    encode_event, encode_reply_err, encode_reply_ok, Address, Call, CallParams, DgramPollParams,
    ErrorCode, Event, EventBody, FrameDecoder, Header, HelloParams, HelloResult, Mode, PollParams,
    RawFrame, ServerId, ServerPollParams, SocketId, WireError, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use guest_client::{Client, GuestLoop, InProcTransport, CLIENT_CAPABILITIES};
use serde::Serialize;

/// How long any step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

pub fn deadline() -> Instant {
    Instant::now() + STEP
}

/// The sidecar's side of one session.
enum Link {
    InProc(inproc_pipe::End),
    Stream {
        stream: UnixStream,
        decoder: FrameDecoder,
    },
}

pub struct FakeSidecar {
    link: Option<Link>,
    seq: u64,
    /// Poll mode: nothing is pushed; stray polls are answered `null`.
    poll_mode: bool,
    /// Every poll the guest sent, in order, and whether it got an event.
    pub poll_log: Vec<(Polled, bool)>,
}

/// What a poll call asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Polled {
    /// `net.poll`
    Socket(u64),
    /// `net.server_poll`
    Server(u64),
    /// `dgram.poll`
    Udp(u64),
}

/// One event to hand out: body and payload.
pub type Scripted = (EventBody, Vec<u8>);

/// A received call: id, method, params, payload, noreply.
#[derive(Debug)]
pub struct Received {
    pub call: Call,
    pub payload: Vec<u8>,
}

impl Received {
    /// The params as `P`, after checking the method.
    pub fn params<P: CallParams>(&self) -> P {
        assert_eq!(
            self.call.method,
            P::METHOD.as_str(),
            "unexpected call {self:?}"
        );
        serde_json::from_value(self.call.params.clone())
            .unwrap_or_else(|e| panic!("bad params for {}: {e}", self.call.method))
    }
}

impl FakeSidecar {
    /// An in-process pair: the guest's transport and the fake.
    pub fn in_process() -> (InProcTransport, FakeSidecar) {
        let (guest, sidecar) = inproc_pipe::duplex();
        (
            InProcTransport::new(guest),
            FakeSidecar::new(Link::InProc(sidecar)),
        )
    }

    /// The fake over the sidecar's end of a byte stream.
    pub fn over_stream(stream: UnixStream) -> FakeSidecar {
        FakeSidecar::new(Link::Stream {
            stream,
            decoder: FrameDecoder::default(),
        })
    }

    fn new(link: Link) -> FakeSidecar {
        FakeSidecar {
            link: Some(link),
            seq: 0,
            poll_mode: false,
            poll_log: Vec::new(),
        }
    }

    /// Plays a poll-mode sidecar from now on (see the module docs).
    pub fn set_poll_mode(&mut self, on: bool) {
        self.poll_mode = on;
    }

    pub fn is_poll_mode(&self) -> bool {
        self.poll_mode
    }

    fn send(&mut self, frame: Vec<u8>) {
        match self.link.as_mut().expect("link closed") {
            Link::InProc(end) => end.tx.send(frame).expect("guest gone"),
            Link::Stream { stream, .. } => stream.write_all(&frame).expect("guest gone"),
        }
    }

    /// The next frame from the guest, `None` if the guest closed the stream.
    fn recv_frame(&mut self) -> Option<RawFrame> {
        let until = deadline();
        match self.link.as_mut().expect("link closed") {
            Link::InProc(end) => match end.rx.recv_until(until) {
                Ok(Some(bytes)) => {
                    let mut reader = bytes.as_slice();
                    guest_client::protocol::read_frame(&mut reader, DEFAULT_MAX_FRAME)
                        .expect("guest sent a bad frame")
                }
                Ok(None) => panic!("no frame from the guest within {STEP:?}"),
                Err(_) => None,
            },
            Link::Stream { stream, decoder } => loop {
                if let Some(frame) = decoder.next_frame().expect("guest sent a bad frame") {
                    return Some(frame);
                }
                let left = until.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "no frame from the guest within {STEP:?}");
                stream.set_read_timeout(Some(left)).unwrap();
                match decoder.read_from(stream) {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read from the guest: {e}"),
                }
            },
        }
    }

    /// The next call from the guest (in poll mode: the next that is not a poll; polls
    /// meanwhile are answered `null`).
    pub fn recv(&mut self) -> Received {
        loop {
            let received = self.recv_any();
            match self.poll_mode.then(|| polled(&received)).flatten() {
                Some(target) => self.answer_poll(&received, target, None),
                None => return received,
            }
        }
    }

    /// The next call from the guest, polls included.
    pub fn recv_any(&mut self) -> Received {
        let raw = self.recv_frame().expect("the guest closed the stream");
        match raw.parse_header().expect("guest sent a bad header") {
            Header::Call(call) => Received {
                call,
                payload: raw.payload,
            },
            other => panic!("the guest sent a non-call {other:?}"),
        }
    }

    /// Replies to a poll (`null` or the event, numbered with the next `seq`) and logs it.
    pub fn answer_poll(&mut self, received: &Received, target: Polled, event: Option<Scripted>) {
        assert!(!received.call.noreply, "a poll must be a blocking call");
        assert_eq!(
            received.call.params.get("wait_ms").and_then(|v| v.as_u64()),
            Some(0),
            "the loop polls with wait_ms 0: {:?}",
            received.call
        );
        self.poll_log.push((target, event.is_some()));
        let mut frame = Vec::new();
        match event {
            None => encode_reply_ok(received.call.id, &(), b"", DEFAULT_MAX_FRAME, &mut frame),
            Some((body, payload)) => {
                self.seq += 1;
                let event = Event::new(self.seq, body);
                encode_reply_ok(
                    received.call.id,
                    &event,
                    &payload,
                    DEFAULT_MAX_FRAME,
                    &mut frame,
                )
            }
        }
        .unwrap();
        self.send(frame);
    }

    /// Hands `events` to the guest: pushed at once in push mode; in poll mode each as
    /// the reply to the next poll of `target` (other polls get `null`; any other call
    /// fails the test).
    pub fn deliver(&mut self, target: Polled, events: Vec<Scripted>) {
        for (body, payload) in events {
            if !self.poll_mode {
                self.push(body, &payload);
                continue;
            }
            loop {
                let received = self.recv_any();
                let asked = polled(&received)
                    .unwrap_or_else(|| panic!("expected a poll of {target:?}, got {received:?}"));
                if asked == target {
                    self.answer_poll(&received, asked, Some((body, payload)));
                    break;
                }
                self.answer_poll(&received, asked, None);
            }
        }
    }

    /// Answers polls with `script(target)` until a call that is not a poll arrives, and
    /// returns that call.
    pub fn serve_polls(&mut self, mut script: impl FnMut(Polled) -> Option<Scripted>) -> Received {
        loop {
            let received = self.recv_any();
            let Some(target) = polled(&received) else {
                return received;
            };
            let event = script(target);
            self.answer_poll(&received, target, event);
        }
    }

    /// The next call, which must be `P`: `(id, params, payload, noreply)`.
    pub fn expect<P: CallParams>(&mut self) -> (u64, P, Vec<u8>, bool) {
        let received = self.recv();
        let params = received.params::<P>();
        (
            received.call.id,
            params,
            received.payload,
            received.call.noreply,
        )
    }

    /// Waits until the guest closes its stream (fails if it sends anything instead).
    pub fn expect_closed(&mut self) {
        if let Some(raw) = self.recv_frame() {
            panic!(
                "expected the guest to close, got {}",
                String::from_utf8_lossy(&raw.header)
            );
        }
    }

    pub fn reply<T: Serialize>(&mut self, id: u64, result: &T) {
        let mut frame = Vec::new();
        encode_reply_ok(id, result, b"", DEFAULT_MAX_FRAME, &mut frame).unwrap();
        self.send(frame);
    }

    pub fn reply_err(&mut self, id: u64, code: ErrorCode, message: &str) {
        let mut frame = Vec::new();
        encode_reply_err(
            id,
            &WireError::new(code, message),
            DEFAULT_MAX_FRAME,
            &mut frame,
        )
        .unwrap();
        self.send(frame);
    }

    /// Pushes an event with the next `seq`; returns that seq.
    pub fn push(&mut self, body: EventBody, payload: &[u8]) -> u64 {
        assert!(!self.poll_mode, "a poll-mode sidecar pushes nothing");
        self.seq += 1;
        let mut frame = Vec::new();
        encode_event(
            &Event::new(self.seq, body),
            payload,
            DEFAULT_MAX_FRAME,
            &mut frame,
        )
        .unwrap();
        self.send(frame);
        self.seq
    }

    /// Sends bytes that are a frame but not a valid header.
    pub fn send_garbage_header(&mut self) {
        let mut frame = Vec::new();
        guest_client::protocol::encode_raw_frame(b"{not json", b"", DEFAULT_MAX_FRAME, &mut frame)
            .unwrap();
        self.send(frame);
    }

    /// Drops the link: the guest's transport sees the stream end.
    pub fn disconnect(&mut self) {
        self.link = None;
    }

    /// Answers the guest's hello with the capabilities both sides have (this fake
    /// supports all of the client's) and returns the hello params.
    pub fn accept_hello(&mut self) -> HelloParams {
        self.accept_hello_with(CLIENT_CAPABILITIES)
    }

    pub fn accept_hello_with(&mut self, sidecar_caps: &[&str]) -> HelloParams {
        let (id, params, _, _) = self.expect::<HelloParams>();
        self.poll_mode = params.mode == Mode::Poll;
        let result = HelloResult {
            version: PROTOCOL_VERSION,
            session: 7,
            capabilities: guest_client::protocol::capability::intersect(
                sidecar_caps,
                &params.capabilities,
            ),
            event_channel_token: None,
            max_frame: DEFAULT_MAX_FRAME as u32,
        };
        self.reply(id, &result);
        params
    }

    /// Answers a `stats` fence with `{}` after running `before` (pushes the guest must
    /// have received by the time its call returns).
    pub fn fence(&mut self, before: impl FnOnce(&mut FakeSidecar)) {
        let (id, _, _, _) = self.expect::<guest_client::protocol::StatsParams>();
        before(self);
        self.reply(id, &serde_json::json!({}));
    }
}

/// The target of a poll call, `None` for other calls.
fn polled(received: &Received) -> Option<Polled> {
    let call = &received.call;
    let params = || call.params.clone();
    match call.method.as_str() {
        "net.poll" => serde_json::from_value::<PollParams>(params())
            .ok()
            .map(|p| Polled::Socket(p.socket.0)),
        "net.server_poll" => serde_json::from_value::<ServerPollParams>(params())
            .ok()
            .map(|p| Polled::Server(p.server.0)),
        "dgram.poll" => serde_json::from_value::<DgramPollParams>(params())
            .ok()
            .map(|p| Polled::Udp(p.socket.0)),
        _ => None,
    }
}

/// A guest running on its own thread, joined with a deadline (a regression that leaves
/// the guest waiting fails the test instead of hanging it).
pub struct Guest<T> {
    result: mpsc::Receiver<T>,
    thread: Option<thread::JoinHandle<()>>,
}

pub fn spawn_guest<T: Send + 'static>(guest: impl FnOnce() -> T + Send + 'static) -> Guest<T> {
    let (tx, result) = mpsc::channel();
    let thread = thread::spawn(move || {
        let _ = tx.send(guest());
    });
    Guest {
        result,
        thread: Some(thread),
    }
}

impl<T> Guest<T> {
    /// The guest's result; panics if it does not finish within [`STEP`], and re-raises
    /// the guest's own panic.
    pub fn join(mut self) -> T {
        match self.result.recv_timeout(STEP) {
            Ok(value) => value,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the guest did not finish within {STEP:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let thread = self.thread.take().expect("joined once");
                match thread.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => panic!("the guest ended without a result"),
                }
            }
        }
    }
}

/// Hello params for `mode`, with the client's capabilities.
pub fn hello_in(mode: Mode) -> HelloParams {
    let mut params = Client::hello_params("dev", "s3cret");
    params.mode = mode;
    params
}

/// Runs `guest` on a thread with a loop connected to the fake (hello answered here; the
/// fake follows the mode asked for). `interval`: poll mode's timer, default if `None`.
pub fn run_loop<T: Send + 'static>(
    hello: HelloParams,
    interval: Option<Duration>,
    guest: impl FnOnce(GuestLoop) -> T + Send + 'static,
) -> (Guest<T>, FakeSidecar) {
    let (transport, mut fake) = FakeSidecar::in_process();
    let handle = spawn_guest(move || {
        let client = Client::connect(transport, hello).expect("hello");
        let lp = match interval {
            Some(interval) => GuestLoop::with_poll_interval(client, interval),
            None => GuestLoop::new(client),
        };
        guest(lp.expect("loop"))
    });
    fake.accept_hello();
    (handle, fake)
}

/// Connects a client on its own thread (hello needs the fake to answer).
pub fn connect_with(
    transport: InProcTransport,
    fake: &mut FakeSidecar,
    params: HelloParams,
) -> Client {
    let guest = spawn_guest(move || Client::connect(transport, params));
    fake.accept_hello();
    guest.join().expect("hello failed")
}

pub fn inet(addr: &str) -> Address {
    Address::Inet(addr.parse().unwrap())
}

pub fn accept_event(server: u64, socket: u64, local: &Address, remote: &Address) -> EventBody {
    EventBody::Accept {
        server: ServerId(server),
        socket: SocketId(socket),
        local: local.clone(),
        remote: remote.clone(),
    }
}

pub fn data(socket: u64) -> EventBody {
    EventBody::Data {
        socket: SocketId(socket),
    }
}

pub fn end(socket: u64) -> EventBody {
    EventBody::End {
        socket: SocketId(socket),
    }
}

pub fn closed(socket: u64) -> EventBody {
    EventBody::socket_closed(SocketId(socket), false)
}

/// A scripted `data` event.
pub fn data_of(socket: u64, bytes: &[u8]) -> Scripted {
    (data(socket), bytes.to_vec())
}

/// A scripted event without payload.
pub fn bare(body: EventBody) -> Scripted {
    (body, Vec::new())
}

/// Reads from a byte stream until `n` bytes arrived (for transport tests).
pub fn read_n(stream: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}
