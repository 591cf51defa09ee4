//! Parked calls: a call that must wait for state is answered later by a task on the RPC
//! loop that waits on a fabric key, never by blocking the loop.
//!
//! A connect to a listener whose backlog is full waits on the server's
//! [`Key::ServerRoom`], notified when an accept is acknowledged or the server closes. The
//! wait has the connect's deadline (`ETIMEDOUT`) and a bounded fallback re-check, counted
//! by the fabric (`fallback_found_work` must stay 0). Each session may park a bounded
//! number of calls; a session that ends drops its parked calls.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use notify_fabric::{WaitOptions, WakeReason};
use sidecar_protocol::{ErrorCode, WireError};

use crate::calls::Responder;
use crate::core::{ConnectStep, Core, Key, ServerKey, SessionId, Target};
use crate::metrics::{bump, drop_one};

pub fn park_connect(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    target: Target,
    server: ServerKey,
    deadline: Instant,
    responder: Responder,
) {
    let mut core = core_rc.borrow_mut();
    let limit = core.config.limits.parked_calls_per_session;
    let Some(session) = core.sessions.get(&sid) else {
        return;
    };
    if session.parked_count() >= limit {
        return responder.err(WireError::new(
            ErrorCode::Enobufs,
            format!("too many parked calls (limit {limit})"),
        ));
    }
    let ticket = Rc::new(Cell::new(0));
    let task = tokio::task::spawn_local(wait_for_room(
        Rc::clone(core_rc),
        sid,
        target,
        server,
        deadline,
        responder,
        Rc::clone(&ticket),
    ));
    let session = core.sessions.get_mut(&sid).expect("checked above");
    ticket.set(session.park(task.abort_handle()));
    bump(&core.metrics.parked_now);
    bump(&core.metrics.parked_total);
}

async fn wait_for_room(
    core_rc: Rc<RefCell<Core>>,
    sid: SessionId,
    target: Target,
    mut server: ServerKey,
    deadline: Instant,
    responder: Responder,
    ticket: Rc<Cell<u64>>,
) {
    let (fabric, fallback) = {
        let core = core_rc.borrow();
        (core.fabric.clone(), core.config.limits.parked_fallback)
    };
    let options = WaitOptions::until(deadline).with_fallback(fallback);
    let outcome = loop {
        let waiting_on = server;
        let step = fabric
            .wait_until(&Key::ServerRoom(waiting_on), options, || {
                match core_rc.borrow_mut().try_connect(sid, &target) {
                    Ok(ConnectStep::Full(s)) if s == waiting_on => None,
                    other => Some(other),
                }
            })
            .await;
        match step {
            // Another listener took the address and is full too: wait on that one.
            Ok(Ok(ConnectStep::Full(other))) => server = other,
            Ok(result) => break result,
            Err(WakeReason::Deadline) => {
                break Err(WireError::new(
                    ErrorCode::Etimedout,
                    "connect ETIMEDOUT: the listener's backlog stayed full",
                ))
            }
            Err(_) => return,
        }
    };
    let mut core = core_rc.borrow_mut();
    if let Some(session) = core.sessions.get_mut(&sid) {
        session.unpark(ticket.get());
    }
    drop_one(&core.metrics.parked_now);
    drop(core);
    match outcome {
        Ok(ConnectStep::Connected {
            socket,
            local,
            remote,
        }) => responder.connected(socket, local, remote),
        Ok(ConnectStep::Full(_)) => unreachable!("a full backlog keeps the call parked"),
        Err(e) => responder.err(e),
    }
}
