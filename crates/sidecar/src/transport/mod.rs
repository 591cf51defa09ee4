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

mod hello_gate;
pub mod inproc;
pub mod listen;
pub mod stream;
pub mod turn;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use sidecar_protocol::{
    encode_reply_err, ErrorCode, EventBody, FrameError, Header, RawFrame, WireError,
};

use crate::calls;
use crate::core::{Core, SessionId};
use crate::metrics::bump;
use crate::outbound::FrameSink;
pub use hello_gate::WaitingRoom;
use hello_gate::{Gate, HelloStep};

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

    /// Sets the largest frame accepted from now on, refused from its prefix before any of
    /// it is read. `one_per_batch`: a batch holds at most one frame, so a frame that
    /// follows a hello is measured against the limit that hello's attach sets.
    fn set_max_frame(&mut self, max_frame: usize, one_per_batch: bool);
}

/// What a connection is, once its hello is done.
#[derive(Debug, Clone, Copy)]
pub(super) enum Attach {
    AwaitingHello,
    Primary(SessionId),
    EventChannel(SessionId),
}

/// How a connection reached the sidecar, which decides what waiting for its hello costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Accepted from a listener: anyone who can reach the socket made it, so it waits
    /// for its hello under the whole gate (a place among the unattached, a deadline).
    Accepted,
    /// Handed over by the operator's own code (in process, or fds such as the streams
    /// `sidecar run` gives its child): there are only as many as the operator made, so
    /// it takes no place among the unattached (a flood of accepted connections cannot
    /// evict it) and has no deadline (a program may start slowly). Its frames before
    /// hello are still limited to `hello_max_frame`, and a refused hello still waits.
    Handed,
}

/// Serves one connection until it ends; then its session (if any) ends too. `bound`:
/// the VM the operator attached this stream to before a guest got it (its hello then
/// carries no secret), or `None` for a stream that must present one. Until it attaches,
/// the connection is under the hello gate (`hello_gate.rs`): a small frame limit and a
/// delayed answer to a refused hello, and for an [`Arrival::Accepted`] one a place among
/// the unattached and a deadline.
pub async fn serve_connection(
    core: Rc<RefCell<Core>>,
    mut source: impl FrameSource,
    sink: Arc<dyn FrameSink>,
    max_frame: usize,
    mut bound: Option<String>,
    arrival: Arrival,
) {
    let mut gate = (arrival == Arrival::Accepted).then(|| Gate::enter(&core));
    let (hello_timeout, hello_max_frame, refused_delay) = {
        let limits = &core.borrow().config.limits;
        (
            limits.hello_timeout,
            limits.hello_max_frame,
            limits.refused_hello_delay,
        )
    };
    source.set_max_frame(hello_max_frame.min(max_frame), true);
    let deadline = tokio::time::Instant::now() + hello_timeout;
    let mut attach = Attach::AwaitingHello;
    let mut batch = Vec::new();
    let mut turn = turn::Turn::new(&core);
    'connection: loop {
        batch.clear();
        // A source may return frames it decoded whole before a framing error in the same
        // read: they are served first (the stream was in sync up to the bad frame), then
        // the error ends the connection below.
        let ended = if let Some(waiting) = &gate {
            // The deadline is a timer on this connection's task (no poll); eviction a
            // notification. A batch cut short by either is dropped with the connection.
            let next = tokio::time::timeout_at(deadline, source.next_batch(&mut batch));
            tokio::select! {
                biased;
                read = next => match read {
                    Ok(ended) => ended,
                    Err(_) => {
                        hello_gate::timed_out(&core, &sink);
                        break 'connection;
                    }
                },
                () = waiting.evicted() => {
                    hello_gate::evicted(&core, &sink);
                    break 'connection;
                }
            }
        } else {
            source.next_batch(&mut batch).await
        };
        for raw in batch.drain(..) {
            // Its share of the loop, and back-pressure from its unread replies.
            let (sid, channel) = match attach {
                Attach::Primary(sid) => (Some(sid), false),
                Attach::EventChannel(sid) => (Some(sid), true),
                Attach::AwaitingHello => (None, false),
            };
            turn.before_frame(&core, sid, channel, &raw).await;
            attach = match attach {
                Attach::AwaitingHello => {
                    match hello_gate::hello(&core, raw, &sink, max_frame, &bound) {
                        HelloStep::Attached(attached) => {
                            gate = None;
                            source.set_max_frame(max_frame, false);
                            attached
                        }
                        HelloStep::Bound(vm) => {
                            bound = Some(vm);
                            attach
                        }
                        HelloStep::Refused(id, error) => {
                            hello_gate::log_refusal(&error);
                            // A timer on this connection's task: the loop serves the others.
                            tokio::time::sleep(refused_delay).await;
                            reply_err_direct(&sink, id, &error, max_frame);
                            break 'connection;
                        }
                    }
                }
                Attach::Primary(sid) => {
                    if core.borrow().session(sid).is_none() {
                        break 'connection;
                    }
                    calls::handle_frame(&core, sid, raw);
                    attach
                }
                Attach::EventChannel(sid) => {
                    let error = WireError::invalid("the event channel carries no calls");
                    let max_header = core.borrow().config.limits.max_header;
                    reply_err_direct(&sink, raw_id(&raw, max_header), &error, max_frame);
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
    drop(gate);
    match attach {
        Attach::Primary(sid) | Attach::EventChannel(sid) => core.borrow_mut().end_session(sid),
        Attach::AwaitingHello => {}
    }
    sink.close();
}

/// The id of a frame's call, for an error reply; a header over `max_header` is not parsed.
fn raw_id(raw: &RawFrame, max_header: usize) -> u64 {
    if let Err(e) = sidecar_protocol::check_header_len(&raw.header, max_header) {
        return e.id.unwrap_or(0);
    }
    match raw.parse_header() {
        Ok(Header::Call(call)) => call.id,
        Ok(_) => 0,
        Err(e) => e.id.unwrap_or(0),
    }
}

pub(super) fn reply_err_direct(
    sink: &Arc<dyn FrameSink>,
    id: u64,
    error: &WireError,
    max_frame: usize,
) {
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
        FrameError::TooLarge { .. } | FrameError::HeaderTooLarge { .. } => ErrorCode::Emsgsize,
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
