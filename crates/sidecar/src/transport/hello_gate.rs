//! The hello gate: what a connection may cost before it is attached to a VM.
//!
//! Why: before its hello a connection is nobody's tenant, so no VM's limits can bound it.
//! Left alone, a thousand connections that never speak hold a thousand fds forever, two
//! hundred that announce 16 MiB frames hold gigabytes, and one connection can guess
//! secrets thousands of times a second. So, sidecar wide (PROTOCOL.md §13):
//!
//! - at most `unattached_connections` are waiting at once ([`Gate::enter`]); one more
//!   takes the place of the one that has waited longest, which is closed (`EAGAIN`). So a
//!   flood of silent connections cannot lock a real client out: it only shortens how long
//!   each silent connection may wait, and a client that says hello at once (a round trip
//!   on the host) gets in unless the flood opens the whole cap's worth in that time;
//! - each has `hello_timeout` to attach (a timer on its own task), then `ETIMEDOUT`;
//! - its frames are limited to `hello_max_frame` until it attaches (the source refuses a
//!   bigger announcement from its prefix, before reading it);
//! - a refused hello is answered only after `refused_hello_delay` (a timer on that
//!   connection's task: the loop serves everyone else meanwhile), then closed: one
//!   connection guesses a few times a second, and the cap bounds how many guess at once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::Notify;

use sidecar_protocol::{
    encode_reply_ok, BoundResult, ErrorCode, Header, RawFrame, Request, WireError, PROTOCOL_VERSION,
};

use super::{reply_err_direct, Attach};
use crate::core::{Core, HelloOutcome};
use crate::metrics::{bump, drop_one, Metrics};
use crate::outbound::FrameSink;

/// The connections waiting for their hello, oldest first, each with the signal that
/// evicts it (one per sidecar, in its core).
#[derive(Default)]
pub struct WaitingRoom {
    waiting: RefCell<VecDeque<(u64, Rc<Notify>)>>,
    next: Cell<u64>,
}

/// A connection's place among the unattached ones; dropping it frees the place.
pub(super) struct Gate {
    metrics: Arc<Metrics>,
    room: Rc<WaitingRoom>,
    id: u64,
    evicted: Rc<Notify>,
}

impl Gate {
    /// Takes a place. When the sidecar already has `unattached_connections` waiting, the
    /// one that has waited longest is evicted (counted `unattached_refused`) to make room.
    pub(super) fn enter(core: &Rc<RefCell<Core>>) -> Gate {
        let c = core.borrow();
        let cap = c.config.limits.unattached_connections.max(1);
        let room = Rc::clone(&c.waiting_room);
        let mut waiting = room.waiting.borrow_mut();
        while waiting.len() >= cap {
            let Some((_, oldest)) = waiting.pop_front() else {
                break;
            };
            oldest.notify_one();
            bump(&c.metrics.unattached_refused);
            crate::warn_limited!(
                cap,
                "closed the oldest connection not attached: too many waiting"
            );
        }
        let id = room.next.get();
        room.next.set(id + 1);
        let evicted = Rc::new(Notify::new());
        waiting.push_back((id, Rc::clone(&evicted)));
        drop(waiting);
        bump(&c.metrics.unattached_now);
        Gate {
            metrics: Arc::clone(&c.metrics),
            room,
            id,
            evicted,
        }
    }

    /// Resolves when a newer connection has taken this one's place.
    pub(super) async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        drop_one(&self.metrics.unattached_now);
        self.room
            .waiting
            .borrow_mut()
            .retain(|(id, _)| *id != self.id);
    }
}

/// A connection evicted from the waiting room: `EAGAIN`.
pub(super) fn evicted(core: &Rc<RefCell<Core>>, sink: &Arc<dyn FrameSink>) {
    let c = core.borrow();
    let cap = c.config.limits.unattached_connections;
    let message = format!(
        "closed: the sidecar had {cap} newer connections not attached yet \
         (unattached_connections); say hello at once"
    );
    let error = WireError::new(ErrorCode::Eagain, message);
    reply_err_direct(sink, 0, &error, c.config.limits.max_frame);
}

/// A connection that did not attach within `hello_timeout`: `ETIMEDOUT`, counted.
pub(super) fn timed_out(core: &Rc<RefCell<Core>>, sink: &Arc<dyn FrameSink>) {
    let c = core.borrow();
    bump(&c.metrics.hello_timeouts);
    let timeout = c.config.limits.hello_timeout;
    crate::warn_limited!(?timeout, "closing a connection that did not attach in time");
    let message = format!("no hello within {timeout:?} (hello_timeout); closing");
    let error = WireError::new(ErrorCode::Etimedout, message);
    reply_err_direct(sink, 0, &error, c.config.limits.max_frame);
}

/// What a hello did to its stream.
pub(super) enum HelloStep {
    Attached(Attach),
    /// The operator's `bind`: the stream belongs to this VM now; a hello comes next.
    Bound(String),
    /// Refused: this error reply (after `refused_hello_delay`), then close the stream.
    Refused(u64, WireError),
}

/// The first frame must be a hello (or the operator's `bind`, then a hello).
pub(super) fn hello(
    core: &Rc<RefCell<Core>>,
    raw: RawFrame,
    sink: &Arc<dyn FrameSink>,
    max_frame: usize,
    bound: &Option<String>,
) -> HelloStep {
    let refuse = |id: u64, error: WireError| {
        bump(&core.borrow().metrics.refused_hellos);
        HelloStep::Refused(id, error)
    };
    let max_header = core.borrow().config.limits.max_header;
    if let Err(e) = sidecar_protocol::check_header_len(&raw.header, max_header) {
        return refuse(e.id.unwrap_or(0), e.to_wire_error());
    }
    let call = match raw.parse_header() {
        Ok(Header::Call(call)) => call,
        // A reply carries an id to answer; an event none (id 0, as before any hello).
        Ok(Header::Reply(reply)) => {
            return refuse(
                reply.id,
                WireError::new(ErrorCode::Eproto, "expected a hello call, not a reply"),
            )
        }
        Ok(Header::Event(_)) => {
            return refuse(
                0,
                WireError::new(ErrorCode::Eproto, "expected a hello call, not an event"),
            )
        }
        Err(e) => return refuse(e.id.unwrap_or(0), e.to_wire_error()),
    };
    let id = call.id;
    // A mode this sidecar does not have is a feature it lacks (`ENOTSUP`, PROTOCOL.md
    // §14), not a malformed param.
    if call.method == "hello" {
        if let Some(mode) = call.params.get("mode").and_then(|m| m.as_str()) {
            if !matches!(mode, "push" | "poll") {
                let message = format!("mode {mode:?} is not supported: \"push\" or \"poll\"");
                return refuse(id, WireError::new(ErrorCode::Enotsup, message));
            }
        }
    }
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
        // Counted by the core (`refused_hellos`).
        Err(error) => HelloStep::Refused(id, error),
    }
}

/// Logs a refused hello (never its secret), rate limited.
pub(super) fn log_refusal(error: &WireError) {
    crate::warn_limited!(code = %error.code, message = %error.message, "refused a hello");
}
