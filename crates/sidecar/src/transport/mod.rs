//! Transports: what carries a session's frames. The core never knows which one it is.
//!
//! Every transport gives the same two things: a [`FrameSource`] (the guest's frames, read
//! without blocking the RPC loop) and a [`FrameSink`] (pushes, never blocking the pusher).
//! [`serve_connection`] runs one connection over them: the hello gate, then calls, then
//! the session's end when the stream ends or breaks.
//!
//! - [`inproc`]: a channel pair, for embedders, tests and benches.
//! - [`stream`]: any byte stream the RPC loop can poll: a Unix socket connection
//!   (`serve --listen`), or stdin/stdout (`serve --stdio`). The RPC loop reads it through
//!   tokio's reactor, so a guest's call wakes exactly one sidecar thread.

pub mod inproc;
pub mod listen;
pub mod stream;
pub mod turn;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use sidecar_protocol::{
    encode_reply_err, encode_reply_ok, BoundResult, ErrorCode, EventBody, FrameError, Header,
    RawFrame, Request, WireError, PROTOCOL_VERSION,
};

use crate::calls;
use crate::core::{Core, HelloOutcome, SessionId};
use crate::metrics::bump;
use crate::outbound::FrameSink;

/// Why a connection's frames stopped.
#[derive(Debug)]
pub enum SourceEnd {
    /// The guest closed the stream (at a frame boundary).
    Closed,
    /// The stream broke framing: oversized, inconsistent, or cut inside a frame.
    Framing(FrameError),
}

/// The guest's side of a connection: frames, read without blocking the loop. Used only on
/// the single-threaded RPC loop, so its futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait FrameSource {
    /// Waits for at least one frame and appends every complete frame available.
    async fn next_batch(&mut self, out: &mut Vec<RawFrame>) -> Result<(), SourceEnd>;
}

/// What a connection is, once its hello is done.
#[derive(Debug, Clone, Copy)]
enum Attach {
    AwaitingHello,
    Primary(SessionId),
    EventChannel(SessionId),
}

/// Serves one connection until it ends; then its session (if any) ends too. `bound`:
/// the VM the operator attached this stream to before a guest got it (its hello then
/// carries no secret), or `None` for a stream that must present one.
pub async fn serve_connection(
    core: Rc<RefCell<Core>>,
    mut source: impl FrameSource,
    sink: Arc<dyn FrameSink>,
    max_frame: usize,
    mut bound: Option<String>,
) {
    let mut attach = Attach::AwaitingHello;
    let mut batch = Vec::new();
    let mut turn = turn::Turn::new(&core);
    'connection: loop {
        batch.clear();
        // A source may return frames it decoded whole before a framing error in the same
        // read: they are served first (the stream was in sync up to the bad frame), then
        // the error ends the connection below.
        let ended = source.next_batch(&mut batch).await;
        for raw in batch.drain(..) {
            // Its share of the loop, and back-pressure from its unread replies.
            let (sid, channel) = match attach {
                Attach::Primary(sid) => (Some(sid), false),
                Attach::EventChannel(sid) => (Some(sid), true),
                Attach::AwaitingHello => (None, false),
            };
            turn.before_frame(&core, sid, channel, &raw).await;
            attach = match attach {
                Attach::AwaitingHello => match hello(&core, raw, &sink, max_frame, &bound) {
                    HelloStep::Attached(attached) => attached,
                    HelloStep::Bound(vm) => {
                        bound = Some(vm);
                        attach
                    }
                    HelloStep::Close => break 'connection,
                },
                Attach::Primary(sid) => {
                    if core.borrow().session(sid).is_none() {
                        break 'connection;
                    }
                    calls::handle_frame(&core, sid, raw);
                    attach
                }
                Attach::EventChannel(sid) => {
                    let error = WireError::invalid("the event channel carries no calls");
                    reply_err_direct(&sink, raw_id(&raw), &error, max_frame);
                    if core.borrow().session(sid).is_none() {
                        break 'connection;
                    }
                    attach
                }
            };
        }
        match ended {
            Ok(()) => {}
            Err(SourceEnd::Closed) => break,
            Err(SourceEnd::Framing(e)) => {
                report_framing_error(&core, attach, &sink, max_frame, &e);
                break;
            }
        }
    }
    match attach {
        Attach::Primary(sid) | Attach::EventChannel(sid) => core.borrow_mut().end_session(sid),
        Attach::AwaitingHello => {}
    }
    sink.close();
}

/// What a hello did to its stream.
enum HelloStep {
    Attached(Attach),
    /// The operator's `bind`: the stream belongs to this VM now; a hello comes next.
    Bound(String),
    /// Refused (after an error reply): close the stream.
    Close,
}

/// The first frame must be a hello (or the operator's `bind`, then a hello).
fn hello(
    core: &Rc<RefCell<Core>>,
    raw: RawFrame,
    sink: &Arc<dyn FrameSink>,
    max_frame: usize,
    bound: &Option<String>,
) -> HelloStep {
    let refuse = |id: u64, error: WireError| {
        bump(&core.borrow().metrics.refused_hellos);
        reply_err_direct(sink, id, &error, max_frame);
        HelloStep::Close
    };
    let call = match raw.parse_header() {
        Ok(Header::Call(call)) => call,
        Ok(_) => {
            return refuse(
                0,
                WireError::new(ErrorCode::Eproto, "expected a hello call"),
            )
        }
        Err(e) => return refuse(e.id.unwrap_or(0), e.to_wire_error()),
    };
    let id = call.id;
    let params = match call.into_request() {
        Ok(Request::Hello(params)) => params,
        Ok(other) => {
            let message = format!("{} before hello: call hello first", other.method());
            return refuse(id, WireError::new(ErrorCode::Eproto, message));
        }
        Err(e) => return refuse(id, e.to_wire_error()),
    };
    let outcome = core
        .borrow_mut()
        .hello(&params, Arc::clone(sink), bound.as_deref());
    match outcome {
        Ok(HelloOutcome::Bound(vm)) => {
            let result = BoundResult {
                version: PROTOCOL_VERSION,
                vm: vm.clone(),
            };
            let mut frame = Vec::new();
            if encode_reply_ok(id, &result, &[], max_frame, &mut frame).is_ok() {
                let _ = sink.send(frame);
            }
            HelloStep::Bound(vm)
        }
        Ok(HelloOutcome::Session(sid, result)) => {
            let out = Arc::clone(&core.borrow().sessions[&sid].out);
            out.reply_ok(id, &result, &[]);
            HelloStep::Attached(Attach::Primary(sid))
        }
        Ok(HelloOutcome::EventChannel(sid, result)) => {
            let mut frame = Vec::new();
            if encode_reply_ok(id, &result, &[], max_frame, &mut frame).is_ok() {
                let _ = sink.send(frame);
            }
            // Only now, after its hello reply, may events flow on this stream.
            let out = Arc::clone(&core.borrow().sessions[&sid].out);
            out.attach_event_channel(Arc::clone(sink));
            HelloStep::Attached(Attach::EventChannel(sid))
        }
        Err(error) => {
            reply_err_direct(sink, id, &error, max_frame);
            HelloStep::Close
        }
    }
}

fn raw_id(raw: &RawFrame) -> u64 {
    match raw.parse_header() {
        Ok(Header::Call(call)) => call.id,
        Ok(_) => 0,
        Err(e) => e.id.unwrap_or(0),
    }
}

fn reply_err_direct(sink: &Arc<dyn FrameSink>, id: u64, error: &WireError, max_frame: usize) {
    let mut frame = Vec::new();
    if encode_reply_err(id, error, max_frame, &mut frame).is_ok() {
        let _ = sink.send(frame);
    }
}

/// A broken stream gets one typed error before it is closed: an `error` event in a
/// session, an error reply (id 0) before hello.
fn report_framing_error(
    core: &Rc<RefCell<Core>>,
    attach: Attach,
    sink: &Arc<dyn FrameSink>,
    max_frame: usize,
    error: &FrameError,
) {
    let core = core.borrow();
    bump(&core.metrics.framing_errors);
    let code = match error {
        FrameError::TooLarge { .. } => ErrorCode::Emsgsize,
        _ => ErrorCode::Eproto,
    };
    let wire = WireError::new(code, format!("{error}; closing the session"));
    tracing::debug!(%error, "closing a connection that broke framing");
    match attach {
        Attach::Primary(sid) | Attach::EventChannel(sid) if core.session(sid).is_some() => {
            let body = EventBody::Error {
                socket: None,
                server: None,
                request: None,
                code: wire.code.clone(),
                message: wire.message,
            };
            core.sessions[&sid].out.deliver(body, &[]);
        }
        _ => reply_err_direct(sink, 0, &wire, max_frame),
    }
}
