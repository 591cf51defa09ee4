//! Host TCP connect, as a parked call: a non-blocking `connect`, its completion awaited as
//! **writable readiness** of the socket's registration, with the connect's deadline,
//! while the RPC loop keeps serving every other call. Candidates (`localhost` → 127.0.0.1
//! then ::1, or a name's addresses) are tried in order until one connects.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpStream};

use super::stream::HostStream;
use std::rc::Rc;
use std::time::Instant;

use readiness::Interest;
use sidecar_protocol::{Address, ErrorCode, SocketId, WireError};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::io_wire_error;
use super::pairing::{self, PairWait, PendingPair};
use super::tcp::HostTcp;
use crate::calls::Responder;
use crate::core::{Core, Handle, SessionId};

/// Parks a connect to `candidates` (already allowed by the policy). It counts as pending
/// in the session's VM until it ends; a VM at its pending connections limit gets `EAGAIN`.
pub fn park_host_connect(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    candidates: Vec<SocketAddr>,
    deadline: Instant,
    responder: Responder,
) {
    let counted = {
        let mut core = core_rc.borrow_mut();
        match core.session_mut(sid).map(|s| s.vm.clone()) {
            Ok(vm) => core.start_connecting(&vm),
            Err(e) => Err(e),
        }
    };
    let connecting = match counted {
        Ok(connecting) => connecting,
        Err(e) => return responder.err(e),
    };
    let task = connect(
        Rc::clone(core_rc),
        sid,
        candidates,
        deadline,
        responder.clone(),
    );
    let task = async move {
        task.await;
        drop(connecting);
    };
    crate::parked::park(core_rc, sid, &responder, task);
}

async fn connect(
    core_rc: Rc<RefCell<Core>>,
    sid: SessionId,
    candidates: Vec<SocketAddr>,
    deadline: Instant,
    responder: Responder,
) {
    let mut last = None;
    for addr in candidates {
        let started = start(&mut core_rc.borrow_mut(), sid, addr, &responder);
        let (tcp, pair_port) = match started {
            Ok(started) => started,
            Err(Failure::Fatal(e)) => return responder.err(e),
            Err(Failure::Next(e)) => {
                last = Some(e);
                continue;
            }
        };
        let writable = tcp.reg.writable_until(deadline).await;
        // Paired already (the accept came first), or about to give up: either way the
        // pending pair is settled here.
        let answered = match (pair_port, &writable) {
            (Some(port), Ok(true)) => {
                let core = core_rc.borrow();
                core.pairing.get(&port).is_some_and(|p| p.answered)
            }
            (Some(port), _) => pairing::withdraw(&mut core_rc.borrow_mut(), port),
            (None, _) => false,
        };
        if answered {
            return;
        }
        match writable {
            Ok(true) => {}
            Ok(false) => {
                return responder.err(WireError::new(
                    ErrorCode::Etimedout,
                    format!("connect ETIMEDOUT {addr}"),
                ))
            }
            Err(_) => {
                return responder.err(WireError::new(
                    ErrorCode::Ecanceled,
                    "the sidecar is shutting down",
                ))
            }
        }
        let stream = tcp.reg.get_ref();
        // Writable with no pending error, and a peer: connected.
        let outcome = match stream.take_error() {
            Ok(None) => stream.peer_connected(),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        match (outcome, pair_port) {
            (Ok(()), Some(port)) => match pairing::wait_for_accept(&core_rc, port).await {
                PairWait::Answered => return, // paired (or refused) by the accept
                PairWait::KernelPath => return established(&core_rc, sid, tcp, addr, &responder),
            },
            (Ok(()), None) => return established(&core_rc, sid, tcp, addr, &responder),
            (Err(e), pair_port) => {
                if pair_port.is_some_and(|port| pairing::withdraw(&mut core_rc.borrow_mut(), port))
                {
                    return;
                }
                last = Some(connect_error(addr, &e));
            }
        }
    }
    responder.err(last.unwrap_or_else(|| {
        WireError::new(ErrorCode::Econnrefused, "connect ECONNREFUSED (no address)")
    }))
}

enum Failure {
    /// Not worth trying another address (the session is gone, its VM is full…).
    Fatal(WireError),
    /// This address failed; the next may work.
    Next(WireError),
}

fn connect_error(addr: SocketAddr, e: &io::Error) -> WireError {
    io_wire_error(&format!("connect {addr}"), e)
}

/// Opens a non-blocking socket, starts connecting, registers it. The guest's id is
/// minted now (the handler needs it) and handed out only once connected. A connect to one
/// of our own published ports binds its port first and records a pending pair under it
/// (see [`pairing`]); that port is returned.
fn start(
    core: &mut Core,
    sid: SessionId,
    addr: SocketAddr,
    responder: &Responder,
) -> Result<(HostTcp, Option<u16>), Failure> {
    core.check_room(sid, 1).map_err(Failure::Fatal)?;
    core.check_fd_room(1).map_err(Failure::Fatal)?;
    let id = SocketId(core.session_mut(sid).map_err(Failure::Fatal)?.mint_id());
    let io_failure = |e: io::Error| Failure::Next(connect_error(addr, &e));
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(io_failure)?;
    socket.set_nonblocking(true).map_err(io_failure)?;
    let pairs_with = core
        .pairs_with(addr)
        .then(|| core.published_at(addr))
        .flatten();
    let pair_port = if let Some(published) = pairs_with {
        let any = match addr {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        socket.bind(&any.into()).map_err(io_failure)?;
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .ok_or_else(|| Failure::Next(connect_error(addr, &io::ErrorKind::Other.into())))?;
        core.pairing.insert(
            port,
            PendingPair {
                session: sid,
                id,
                dest: published,
                responder: responder.clone(),
                answered: false,
            },
        );
        Some(port)
    } else {
        None
    };
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            if let Some(port) = pair_port {
                core.pairing.remove(&port);
            }
            return Err(io_failure(e));
        }
    }
    let stream = HostStream::from(TcpStream::from(socket));
    let remote = Address::Inet(addr);
    match HostTcp::register(core, sid, id, stream, Interest::WRITABLE, remote) {
        Ok(tcp) => Ok((tcp, pair_port)),
        Err(e) => {
            if let Some(port) = pair_port {
                core.pairing.remove(&port);
            }
            Err(io_failure(e))
        }
    }
}

/// Connected: hand the guest its socket (reply + `connect`), then start reading, so no
/// `data` can precede the `connect`.
pub(crate) fn established(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    mut tcp: HostTcp,
    addr: impl std::fmt::Display,
    responder: &Responder,
) {
    let mut core = core_rc.borrow_mut();
    if let Err(e) = core.check_room(sid, 1) {
        return responder.err(e);
    }
    if let Some(local) = tcp.reg.get_ref().local_address() {
        tcp.local = local;
    }
    let key = tcp.key();
    let id = tcp.id();
    let Ok(session) = core.session_mut(sid) else {
        return;
    };
    session.insert_at(id.0, Handle::Host(key));
    if let Ok(vm) = core.vm_of(sid) {
        vm.open += 1;
    }
    tracing::debug!(session = sid, %addr, socket = id.0, "host connection established");
    responder.connected(id, tcp.local.clone(), tcp.remote.clone());
    tcp.open();
    core.hosts.insert(key, tcp);
}
