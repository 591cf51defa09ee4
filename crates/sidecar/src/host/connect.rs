//! Host TCP connect, as a parked call: a non-blocking `connect`, its completion awaited as
//! **writable readiness** of the socket's registration, with the connect's deadline,
//! while the RPC loop keeps serving every other call. Candidates (`localhost` → 127.0.0.1
//! then ::1, or a name's addresses) are tried in order until one connects.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use readiness::{Action, Interest};
use sidecar_protocol::{capability, Address, ErrorCode, SocketId, WireError};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::tcp::{HostTcp, TcpShared};
use super::{io_wire_error, HostKey};
use crate::calls::Responder;
use crate::core::{Core, Handle, SessionId};

/// Parks a connect to `candidates` (already allowed by the policy).
pub fn park_host_connect(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    candidates: Vec<SocketAddr>,
    deadline: Instant,
    responder: Responder,
) {
    let task = connect(
        Rc::clone(core_rc),
        sid,
        candidates,
        deadline,
        responder.clone(),
    );
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
        let started = start(&mut core_rc.borrow_mut(), sid, addr);
        let tcp = match started {
            Ok(tcp) => tcp,
            Err(Failure::Fatal(e)) => return responder.err(e),
            Err(Failure::Next(e)) => {
                last = Some(e);
                continue;
            }
        };
        match tcp.reg.writable_until(deadline).await {
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
            Ok(None) => stream.peer_addr().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => return established(&core_rc, sid, tcp, addr, &responder),
            Err(e) => last = Some(connect_error(addr, &e)),
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
/// minted now (the handler needs it) and handed out only once connected.
fn start(core: &mut Core, sid: SessionId, addr: SocketAddr) -> Result<HostTcp, Failure> {
    core.check_room(sid, 1).map_err(Failure::Fatal)?;
    let session = core.session_mut(sid).map_err(Failure::Fatal)?;
    let window = session.has(capability::CREDIT).then_some(session.credit);
    let out = Arc::clone(&session.out);
    let id = SocketId(session.mint_id());
    let key = HostKey(core.next_key());
    let limits = (
        core.config.limits.write_high_water,
        core.config.limits.write_hard_limit,
    );
    let io_failure = |e: io::Error| Failure::Next(connect_error(addr, &e));
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(io_failure)?;
    socket.set_nonblocking(true).map_err(io_failure)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(io_failure(e)),
    }
    let stream = TcpStream::from(socket);
    let shared = TcpShared::new(key, sid, id, out, window, limits, core.host.notices.clone());
    let handler = Arc::clone(&shared);
    let reg = core
        .host
        .reactor
        .register(
            stream,
            Interest::WRITABLE,
            Action::handler(move |stream: &TcpStream, ready| handler.on_ready(stream, ready)),
        )
        .map_err(io_failure)?;
    let local = reg
        .get_ref()
        .local_addr()
        .map(Address::Inet)
        .unwrap_or_else(|_| Address::Unix(String::new()));
    Ok(HostTcp {
        reg,
        shared,
        local,
        remote: Address::Inet(addr),
    })
}

/// Connected: hand the guest its socket (reply + `connect`), then start reading, so no
/// `data` can precede the `connect`.
fn established(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    mut tcp: HostTcp,
    addr: SocketAddr,
    responder: &Responder,
) {
    let mut core = core_rc.borrow_mut();
    if let Err(e) = core.check_room(sid, 1) {
        return responder.err(e);
    }
    if let Ok(local) = tcp.reg.get_ref().local_addr() {
        tcp.local = Address::Inet(local);
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
