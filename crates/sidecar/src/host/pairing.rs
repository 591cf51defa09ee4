//! Peer pairing: a guest of one VM connecting to another VM's published port on this same
//! sidecar. Both ends of that kernel connection would be ours, every byte crossing the
//! kernel twice and the readiness thread on each side. Instead the two are **paired**
//! before the first byte and the data flows in memory, as between two guests of one VM.
//!
//! How, without ever being wrong:
//! 1. The connecting side binds its kernel socket to an ephemeral port *before* it
//!    connects and records a pending pair under that port (so the accept cannot overtake
//!    the record), then connects as usual.
//! 2. The published port's accept (on the RPC loop) finds the pending pair by the
//!    client's port: it links the connecting guest's socket and a new accepted socket in
//!    memory, answers the connect, pushes `accept`, and notifies the pair's fabric key.
//!    The two kernel sockets are closed unused.
//! 3. The connecting side waits on that key with a bounded deadline (and the counted
//!    fallback). If the accept has not come by then, the pending pair is withdrawn and
//!    the connection stays on the kernel path: slower, never wrong. `pairing_wait = 0`
//!    disables pairing.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use notify_fabric::WaitOptions;
use sidecar_protocol::{Address, ErrorCode, SocketId, WireError};

use crate::calls::Responder;
use crate::core::{Core, Key, PairAddrs, ServerKey, SessionId};

/// A connect to one of our own published ports, waiting for its accept.
pub struct PendingPair {
    pub session: SessionId,
    pub id: SocketId,
    /// The published address it connects to.
    pub dest: SocketAddr,
    pub responder: Responder,
    /// Answered by the accept (paired, or refused): the connect task only cleans up.
    pub answered: bool,
}

/// How the wait for the accept ended.
pub enum PairWait {
    /// The accept answered the connect (paired, or refused).
    Answered,
    /// No accept in time: carry on over the kernel.
    KernelPath,
}

impl Core {
    /// Whether a connect to `dest` should try to pair (it is published here, and pairing
    /// is on).
    pub fn pairs_with(&self, dest: SocketAddr) -> bool {
        !self.config.limits.pairing_wait.is_zero() && self.published_at(dest).is_some()
    }

    /// The published address a connect to `dest` reaches: `dest` itself, or a
    /// publication on the unspecified address (`0.0.0.0:P`, `[::]:P`) when `dest` is a
    /// loopback address of the same family and port (the kernel routes it there too).
    pub fn published_at(&self, dest: SocketAddr) -> Option<SocketAddr> {
        if self.published.contains_key(&dest) {
            return Some(dest);
        }
        if !dest.ip().is_loopback() {
            return None;
        }
        let any = match dest {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], dest.port())),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], dest.port())),
        };
        self.published.contains_key(&any).then_some(any)
    }

    /// The accept side: a connection from `peer` to published `host` whose client is a
    /// pending pair of ours. Links them in memory to `server` and answers the connect
    /// (or answers it with `server`'s error: nobody listens, the VM is at its limit).
    /// Returns false if `peer` is not a pending pair (the kernel path then goes on).
    pub fn pair_on_accept(
        &mut self,
        host: SocketAddr,
        peer: SocketAddr,
        server: Result<ServerKey, WireError>,
    ) -> bool {
        let port = peer.port();
        let Some(pending) = self
            .pairing
            .get(&port)
            .filter(|p| p.dest == host && !p.answered)
        else {
            return false;
        };
        let (sid, id, responder) = (pending.session, pending.id, pending.responder.clone());
        let linked = match server {
            Err(e) => Err(e),
            Ok(server_key) if !self.servers[&server_key].has_room() => Err(WireError::new(
                ErrorCode::Econnrefused,
                format!("connect ECONNREFUSED {host}: the listener's backlog is full"),
            )),
            Ok(server_key) => {
                let server_local = self.servers[&server_key].local.clone();
                let server_sid = self.servers[&server_key].session;
                let addrs = PairAddrs {
                    client_local: Address::Inet(peer),
                    client_remote: Address::Inet(host),
                    server_local,
                    server_remote: Address::Inet(peer),
                    client_port: None,
                };
                self.check_room(sid, 1)
                    .and_then(|()| self.check_room(server_sid, 1))
                    .and_then(|()| self.link(sid, id, server_key, addrs))
            }
        };
        match linked {
            Ok(()) => {
                responder.connected(id, Address::Inet(peer), Address::Inet(host));
                crate::metrics::bump(&self.metrics.pairs_made);
            }
            Err(e) => responder.err(e),
        }
        if let Some(pending) = self.pairing.get_mut(&port) {
            pending.answered = true;
        }
        self.fabric.notify_all(&Key::Paired(port));
        true
    }
}

/// The connect side gives up before its kernel connect completed: withdraws the pending
/// pair. Returns whether the accept had already answered the connect.
pub fn withdraw(core: &mut Core, port: u16) -> bool {
    core.pairing.remove(&port).is_some_and(|p| p.answered)
}

/// The connect side: waits (parked) for the accept to answer the pending pair at `port`,
/// up to the pairing deadline. The pending record is gone when this returns.
pub async fn wait_for_accept(core_rc: &Rc<RefCell<Core>>, port: u16) -> PairWait {
    let (fabric, wait, fallback) = {
        let core = core_rc.borrow();
        let limits = &core.config.limits;
        (
            core.fabric.clone(),
            limits.pairing_wait,
            limits.parked_fallback,
        )
    };
    let options = WaitOptions::until(Instant::now() + wait).with_fallback(fallback);
    let answered = fabric
        .wait_until(&Key::Paired(port), options, || {
            core_rc
                .borrow()
                .pairing
                .get(&port)
                .filter(|p| p.answered)
                .map(|_| ())
        })
        .await;
    let mut core = core_rc.borrow_mut();
    // The accept may have answered in the same turn the deadline fired: the record decides.
    let was_answered = core.pairing.remove(&port).is_some_and(|p| p.answered);
    match answered {
        _ if was_answered => PairWait::Answered,
        Ok(()) => PairWait::Answered,
        Err(_) => {
            crate::metrics::bump(&core.metrics.pairs_missed);
            PairWait::KernelPath
        }
    }
}
