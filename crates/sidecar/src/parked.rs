//! Parked calls: a call that must wait for state is answered later by a task on the RPC
//! loop that waits on a fabric key, never by blocking the loop.
//!
//! A connect to a listener whose backlog is full waits on the server's
//! [`Key::ServerRoom`], notified when an accept is acknowledged or the server closes (one
//! whose VM is at its pending connections limit, on the VM's [`Key::VmRoom`]). The
//! wait has the connect's deadline (`ETIMEDOUT`) and a bounded fallback re-check, counted
//! by the fabric (`fallback_found_work` must stay 0). Each session may park a bounded
//! number of calls; a session that ends drops its parked calls.
//!
//! A poll-mode `net.poll` with `wait_ms > 0` waits the same way on the id's
//! [`Key::Poll`], with its clamped wait as the deadline.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use notify_fabric::{WaitOptions, WakeReason};
use sidecar_protocol::{ErrorCode, WireError};

use crate::calls::Responder;
use crate::core::{ConnectStep, Core, Key, SessionId, Target};
use crate::metrics::{bump, drop_one};

/// Runs `task` as a parked call of session `sid`: counted, bounded per session, dropped
/// with the session. Refuses (`ENOBUFS`) through `responder` past the session's limit.
pub fn park(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    responder: &Responder,
    task: impl Future<Output = ()> + 'static,
) {
    let mut core = core_rc.borrow_mut();
    let limit = core.session_limits(sid).parked_calls_per_session;
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
    let (ticket_done, core_done) = (Rc::clone(&ticket), Rc::clone(core_rc));
    let handle = tokio::task::spawn_local(async move {
        task.await;
        let mut core = core_done.borrow_mut();
        if let Some(session) = core.sessions.get_mut(&sid) {
            session.unpark(ticket_done.get());
        }
        drop_one(&core.metrics.parked_now);
    });
    let session = core.sessions.get_mut(&sid).expect("checked above");
    ticket.set(session.park(handle.abort_handle()));
    bump(&core.metrics.parked_now);
    bump(&core.metrics.parked_total);
}

/// Parks a connect that found its listener's backlog full, or the listener's VM at its
/// pending connections limit: it waits on `room` ([`Key::ServerRoom`] or
/// [`Key::VmRoom`]).
pub fn park_connect(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    target: Target,
    room: Key,
    deadline: Instant,
    responder: Responder,
) {
    let task = wait_for_room(
        Rc::clone(core_rc),
        sid,
        target,
        room,
        deadline,
        responder.clone(),
    );
    park(core_rc, sid, &responder, task);
}

async fn wait_for_room(
    core_rc: Rc<RefCell<Core>>,
    sid: SessionId,
    target: Target,
    mut room: Key,
    deadline: Instant,
    responder: Responder,
) {
    let (fabric, fallback) = {
        let core = core_rc.borrow();
        (core.fabric.clone(), core.config.limits.parked_fallback)
    };
    let options = WaitOptions::until(deadline).with_fallback(fallback);
    let outcome = loop {
        let waiting_on = room;
        let step = fabric
            .wait_until(&waiting_on, options, || {
                match core_rc.borrow_mut().try_connect(sid, &target) {
                    Ok(ConnectStep::Full(s)) if s == waiting_on => None,
                    other => Some(other),
                }
            })
            .await;
        match step {
            // Another listener took the address and is full too, or the backlog has room
            // now but the VM has not (or the other way round): wait on that.
            Ok(Ok(ConnectStep::Full(other))) => room = other,
            Ok(result) => break result,
            Err(WakeReason::Deadline) => {
                let why = match waiting_on {
                    Key::VmRoom(_) => "the VM's pending connections stayed at its limit",
                    _ => "the listener's backlog stayed full",
                };
                break Err(WireError::new(
                    ErrorCode::Etimedout,
                    format!("connect ETIMEDOUT: {why}"),
                ));
            }
            Err(_) => return,
        }
    };
    match outcome {
        Ok(ConnectStep::Connected {
            socket,
            local,
            remote,
        }) => responder.connected(socket, local, remote),
        Ok(ConnectStep::Full(_)) => unreachable!("a full backlog keeps the call parked"),
        // The listener went away meanwhile, and the policy lets the connect go outside.
        Ok(ConnectStep::Outside(candidates)) => {
            crate::host::connect::park_host_connect(&core_rc, sid, candidates, deadline, responder)
        }
        Ok(ConnectStep::OutsideUnix(path)) => {
            let shown = match &target {
                Target::Unix(path) => path.clone(),
                _ => String::new(),
            };
            crate::host::connect_unix::park(&core_rc, sid, path, shown, deadline, responder)
        }
        Err(e) => responder.err(e),
    }
}

/// Parks a poll (`wait_ms > 0`) until `id` has an event or the (clamped) wait ends. A
/// wait that ends empty was woken by a timer: it is counted as a timer-origin wake.
pub fn park_poll(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    id: u64,
    wait: Duration,
    responder: Responder,
) {
    let core_task = Rc::clone(core_rc);
    let reply = responder.clone();
    let task = async move {
        let fabric = core_task.borrow().fabric.clone();
        let options = WaitOptions::until(Instant::now() + wait);
        let got = fabric
            .wait_until(&Key::Poll(sid, id), options, || {
                core_task.borrow_mut().take_polled(sid, id)
            })
            .await;
        match got {
            Ok(polled) => reply.out.reply_polled(reply.id, Some(polled)),
            Err(WakeReason::Deadline) => {
                bump(&core_task.borrow().metrics.timer_origin_wakes);
                reply.out.reply_polled(reply.id, None);
            }
            Err(_) => {}
        }
    };
    park(core_rc, sid, &responder, task);
}
