//! A scripted fake sidecar for the client's tests.
//!
//! The test thread plays the sidecar step by step (expect this call, reply that, push
//! this event) while the guest runs on its own thread. Every wait has a deadline, so a
//! missing frame fails the test instead of hanging it, and nothing sleeps to synchronise:
//! a guest that must have received an event before its next step makes a blocking call
//! (a *fence*, e.g. `stats`) that the fake answers only after pushing the event.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use guest_client::protocol::{
    encode_event, encode_reply_err, encode_reply_ok, Address, Call, CallParams, ErrorCode, Event,
    EventBody, FrameDecoder, Header, HelloParams, HelloResult, RawFrame, ServerId, SocketId,
    WireError, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use guest_client::{Client, InProcTransport, CLIENT_CAPABILITIES};
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
}

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
            FakeSidecar {
                link: Some(Link::InProc(sidecar)),
                seq: 0,
            },
        )
    }

    /// The fake over the sidecar's end of a byte stream.
    pub fn over_stream(stream: UnixStream) -> FakeSidecar {
        FakeSidecar {
            link: Some(Link::Stream {
                stream,
                decoder: FrameDecoder::default(),
            }),
            seq: 0,
        }
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

    /// The next call from the guest.
    pub fn recv(&mut self) -> Received {
        let raw = self.recv_frame().expect("the guest closed the stream");
        match raw.parse_header().expect("guest sent a bad header") {
            Header::Call(call) => Received {
                call,
                payload: raw.payload,
            },
            other => panic!("the guest sent a non-call {other:?}"),
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

/// Reads from a byte stream until `n` bytes arrived (for transport tests).
pub fn read_n(stream: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}
