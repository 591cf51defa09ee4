//! Host Unix connect, as a parked call: a guest's connect to a host socket file that a
//! `unix:` rule allows ([`crate::policy::unix`]; the path was checked and resolved
//! already). A non-blocking `connect(2)` on a Unix socket completes at once or fails at
//! once on Linux (`EAGAIN` for a full backlog, as libuv reports it too); where it may
//! report `EINPROGRESS` (macOS), completion is awaited as writable readiness with the
//! connect's deadline, as for TCP ([`super::connect`]). The connection is then a host
//! connection like any other ([`super::tcp`]): same events, credit, drain and limits.

use std::cell::RefCell;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use readiness::Interest;
use sidecar_protocol::{Address, ErrorCode, SocketId, WireError};
use socket2::{Domain, SockAddr, Socket, Type};

use super::io_wire_error;
use super::stream::HostStream;
use super::tcp::HostTcp;
use crate::calls::Responder;
use crate::core::{Core, SessionId};

/// Parks a connect to host socket file `path`; `shown` is the guest's own (normalised)
/// path, the one its messages and its socket's `remote` name. It counts as pending in
/// the session's VM until it ends, as a host TCP connect does.
pub fn park(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    path: PathBuf,
    shown: String,
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
    let (core_task, responder_task) = (Rc::clone(core_rc), responder.clone());
    let task = async move {
        connect(core_task, sid, path, shown, deadline, responder_task).await;
        drop(connecting);
    };
    crate::parked::park(core_rc, sid, &responder, task);
}

async fn connect(
    core_rc: Rc<RefCell<Core>>,
    sid: SessionId,
    path: PathBuf,
    shown: String,
    deadline: Instant,
    responder: Responder,
) {
    let started = start(&mut core_rc.borrow_mut(), sid, &path, &shown);
    let tcp = match started {
        Ok(tcp) => tcp,
        Err(e) => return responder.err(e),
    };
    match tcp.reg.writable_until(deadline).await {
        Ok(true) => {}
        Ok(false) => {
            return responder.err(WireError::new(
                ErrorCode::Etimedout,
                format!("connect ETIMEDOUT {shown}"),
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
    let outcome = match stream.take_error() {
        Ok(None) => stream.peer_connected(),
        Ok(Some(e)) | Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => super::connect::established(&core_rc, sid, tcp, &shown, &responder),
        Err(e) => responder.err(io_wire_error(&format!("connect {shown}"), &e)),
    }
}

/// Opens a non-blocking Unix socket, starts connecting, registers it (its guest id minted
/// now, handed out once connected).
fn start(
    core: &mut Core,
    sid: SessionId,
    path: &PathBuf,
    shown: &str,
) -> Result<HostTcp, WireError> {
    core.check_room(sid, 1)?;
    core.check_fd_room(1)?;
    let id = SocketId(core.session_mut(sid)?.mint_id());
    let failed = |e: io::Error| io_wire_error(&format!("connect {shown}"), &e);
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    let addr = SockAddr::unix(path).map_err(failed)?;
    match socket.connect(&addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(failed(e)),
    }
    let stream = HostStream::from(UnixStream::from(std::os::fd::OwnedFd::from(socket)));
    let remote = Address::Unix(shown.to_owned());
    HostTcp::register(core, sid, id, stream, Interest::WRITABLE, remote).map_err(failed)
}
