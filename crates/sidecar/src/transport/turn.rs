//! A connection's share of the RPC loop, and its back-pressure.
//!
//! Why: the loop is one thread for every session. A guest that floods calls must not
//! hold it (each session serves at most [`FRAMES_PER_TURN`] frames, or `bytes_per_turn`
//! bytes of them, before the others get their turn), and a guest that floods calls but
//! never reads its replies must not make the sidecar queue them without bound: once what
//! is queued for it reaches `session_outbound_bytes`, its connection task stops reading
//! its calls until the guest has read (see [`crate::outbound::Room`]). That wait is this
//! connection's only: the loop goes on serving every other session.
//!
//! A flood of `dgram.send` (or in-VM writes) is bounded by the same turn: each frame
//! delivers at most one datagram (or one write's data) to its receiver, pushed straight
//! to the receiver's transport, so a turn's work is bounded by its frames and bytes.
//!
//! In-VM stream data held back for a session at its cap is pushed again by
//! [`resume_held`], one task for the whole loop, which waits for the session's room.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use sidecar_protocol::RawFrame;

use crate::core::{Core, SessionId};
use crate::metrics::bump;
use crate::outbound::{Gate, Outbound};

/// Frames of one connection served before the loop lets other sessions run.
/// Another VM's call waits behind at most one slice of a flooding guest's frames: with
/// 64 the `isolation_p99` noisy p99 read 2.1–2.4× its alone p99, with 16 1.4–1.5×, and
/// `tcp_bulk` and `cpu_per_event` did not move (a yield is cheap next to a frame).
pub const FRAMES_PER_TURN: usize = 16;

/// One connection's count of what it served since it last let the others run.
pub struct Turn {
    frames: usize,
    bytes: usize,
    bytes_per_turn: usize,
    /// The session's push side, once known.
    out: Option<(SessionId, Arc<Outbound>)>,
}

impl Turn {
    pub fn new(core: &Rc<RefCell<Core>>) -> Self {
        Turn {
            frames: 0,
            bytes: 0,
            bytes_per_turn: core.borrow().config.limits.bytes_per_turn.max(1),
            out: None,
        }
    }

    /// Called before serving `raw` on a connection of session `sid` (`None` before its
    /// hello; `event_channel` if this connection is its event channel): lets other
    /// sessions run once this one has had its turn, and waits while the session's guest
    /// has not read what is queued for it.
    pub async fn before_frame(
        &mut self,
        core: &Rc<RefCell<Core>>,
        sid: Option<SessionId>,
        event_channel: bool,
        raw: &RawFrame,
    ) {
        if self.frames >= FRAMES_PER_TURN || self.bytes >= self.bytes_per_turn {
            tokio::task::yield_now().await;
            self.frames = 0;
            self.bytes = 0;
        }
        self.frames += 1;
        self.bytes += raw.header.len() + raw.payload.len();
        let Some(sid) = sid else { return };
        if self.out.as_ref().map(|(s, _)| *s) != Some(sid) {
            let out = core.borrow().session(sid).map(|s| Arc::clone(&s.out));
            self.out = out.map(|out| (sid, out));
        }
        let Some((_, out)) = &self.out else { return };
        // Calls on an event channel (refused, but each gets a reply there) count all.
        let gate = if event_channel {
            Gate::All
        } else {
            Gate::Calls
        };
        if out.has_room(gate) {
            return;
        }
        let (fallback, metrics) = {
            let core = core.borrow();
            (
                core.config.limits.parked_fallback,
                Arc::clone(&core.metrics),
            )
        };
        bump(&metrics.outbound_held_back);
        out.wait_room(gate, fallback, &metrics).await;
        // The wait was this connection's turn given away.
        self.frames = 0;
        self.bytes = 0;
    }
}

/// Pushes the in-VM stream data held back for sessions at their outbound cap, once each
/// has room again. Runs for the loop's life.
pub async fn resume_held(core: Rc<RefCell<Core>>) {
    let notify = Rc::clone(&core.borrow().held_notify);
    loop {
        notify.notified().await;
        let held = std::mem::take(&mut core.borrow_mut().held);
        for sid in held {
            let Some(out) = core.borrow().session(sid).map(|s| Arc::clone(&s.out)) else {
                continue;
            };
            let core = Rc::clone(&core);
            tokio::task::spawn_local(async move {
                let (fallback, metrics) = {
                    let core = core.borrow();
                    (
                        core.config.limits.parked_fallback,
                        Arc::clone(&core.metrics),
                    )
                };
                out.wait_room(Gate::All, fallback, &metrics).await;
                if !out.is_closed() {
                    core.borrow_mut().resume_held(sid);
                }
            });
        }
    }
}
