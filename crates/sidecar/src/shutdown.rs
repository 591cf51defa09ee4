//! Stopping a sidecar without losing what it owes its guests.
//!
//! A sidecar that is told to stop (`SIGTERM`, [`crate::Sidecar::shutdown`], a drop) ends
//! in three steps, in this order:
//!
//! 1. **Stop accepting**: the Unix listeners' accept loops and every published port's
//!    task end (their sockets close), so no session or connection starts meanwhile.
//! 2. **Tell every guest**: each session gets `close` for every socket and server it still
//!    holds (a connection first gets `error ECONNRESET`: it is cut, not ended), then its
//!    transport is closed (so is every connection still waiting for its hello). Only
//!    after every session is closed is the
//!    socket table torn down, so the teardown's own pushes (a peer's `end`…) find closed
//!    transports and no event follows a `close` for its id.
//! 3. **Flush**: the transports' writer tasks write out what is queued (then send FIN).
//!    A guest that does not read is not waited for forever: after [`FLUSH_GRACE`] the
//!    rest is dropped, logged and counted (`shutdown_unflushed_sessions`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sidecar_protocol::{ErrorCode, EventBody, ServerId, SocketId, WireError};
use tokio::task::JoinHandle;

use crate::core::session::Handle;
use crate::core::Core;

/// How long a stopping sidecar waits for its guests to take their queued events.
pub const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// Runs the three steps (see the module docs). `acceptors` are the Unix listeners'
/// accept loops.
pub async fn shutdown(core: &Rc<RefCell<Core>>, acceptors: Vec<JoinHandle<()>>) {
    let mut stopping = acceptors;
    {
        let mut core = core.borrow_mut();
        stopping.extend(core.publishers.drain().map(|(_, task)| task));
        core.udp_publications.clear();
    }
    for task in &stopping {
        task.abort();
    }
    for task in stopping {
        let _ = task.await;
    }

    let sessions: Vec<_> = core.borrow().sessions.keys().copied().collect();
    for sid in &sessions {
        let core = core.borrow();
        let session = &core.sessions[sid];
        for (id, handle) in session.handles() {
            match handle {
                Handle::Server(_) => {
                    session
                        .out
                        .deliver(EventBody::server_closed(ServerId(id)), &[]);
                }
                Handle::Udp(_) => {
                    session
                        .out
                        .deliver(EventBody::socket_closed(SocketId(id), false), &[]);
                }
                // A connection is cut, not ended: reported as the kernel would a reset, so
                // a reader never takes the cut for the peer's end of stream.
                Handle::Stream(_) | Handle::Host(_) => {
                    let cut = WireError::new(ErrorCode::Econnreset, "the sidecar is stopping");
                    session
                        .out
                        .deliver(EventBody::socket_error(SocketId(id), cut), &[]);
                    session
                        .out
                        .deliver(EventBody::socket_closed(SocketId(id), true), &[]);
                }
            }
        }
        session.out.close();
    }
    for sid in sessions {
        core.borrow_mut().end_session(sid);
    }
    // Connections that never said hello (or are between bind and hello) have nothing
    // to flush: their serving tasks close them now, so their writers end at once.
    core.borrow().stopping.send_replace(true);
    core.borrow().fabric.shutdown();

    let mut writers = std::mem::take(&mut core.borrow_mut().writers);
    let flushed = tokio::time::timeout(FLUSH_GRACE, async {
        while writers.join_next().await.is_some() {}
    })
    .await;
    if flushed.is_err() {
        let left = writers.len();
        core.borrow()
            .metrics
            .shutdown_unflushed_sessions
            .fetch_add(left as u64, Ordering::Relaxed);
        tracing::warn!(
            sessions = left,
            grace = ?FLUSH_GRACE,
            "stopping: guests that did not read their queued events in time; the rest is dropped"
        );
    }
}
