//! From a session's frame to its answer: parse the header and the request, check the
//! capability, run it against the [`Core`], reply (or, for `noreply` calls, report only a
//! failure as an `error` event carrying the request id).
//!
//! Nothing here blocks or sleeps. A connect that must wait for backlog room is *parked*: a
//! task on the RPC loop waits on the server's fabric key ([`crate::parked`]) while this
//! loop goes on serving every other call.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;
use sidecar_protocol::{
    capability, check_header_len, clamp_wait, parse_call, parse_header_derived, Address,
    ConnectResult, CreateSocketResult, Empty, Endpoint, ErrorCode, EventBody, Header, RawFrame,
    Request, SendResult, SocketId, WireError,
};
use stage_trace::Stage;

use std::net::SocketAddr;

use crate::core::udp_group::UdpOption;
use crate::core::{ConnectStep, Core, PollKind, SessionId, Target};
use crate::metrics::bump;
use crate::outbound::Outbound;

/// Answers one call: a reply, or for `noreply` calls an `error` event on failure only.
#[derive(Clone)]
pub struct Responder {
    pub out: Arc<Outbound>,
    pub id: u64,
    pub noreply: bool,
    /// The socket the call names, reported with a `noreply` failure.
    pub socket: Option<SocketId>,
}

impl Responder {
    pub fn ok<T: Serialize + ?Sized>(&self, result: &T) {
        if !self.noreply {
            self.out.reply_ok(self.id, result, &[]);
        }
    }

    pub fn err(&self, error: WireError) {
        if self.noreply {
            let body = EventBody::request_error(self.id, self.socket, error);
            self.out.deliver(body, &[]);
        } else {
            self.out.reply_err(self.id, &error);
        }
    }

    pub fn done<T: Serialize>(&self, result: Result<T, WireError>) {
        match result {
            Ok(value) => self.ok(&value),
            Err(e) => self.err(e),
        }
    }

    /// A connection is established: the reply, then the `connect` event (which carries the
    /// request id instead when the connect was `noreply`, since the guest learns the new
    /// socket id from it).
    pub fn connected(&self, socket: SocketId, local: Address, remote: Address) {
        let result = ConnectResult {
            socket,
            local: local.clone(),
            remote: remote.clone(),
        };
        self.ok(&result);
        let request = self.noreply.then_some(self.id);
        let event = EventBody::Connect {
            socket,
            local,
            remote,
            request,
        };
        self.out.deliver(event, &[]);
    }
}

/// Handles one frame of an attached session.
pub fn handle_frame(core_rc: &Rc<RefCell<Core>>, sid: SessionId, raw: RawFrame) {
    stage_trace::mark(Stage::CallHandled);
    let mut core = core_rc.borrow_mut();
    let Some(session) = core.session(sid) else {
        return;
    };
    let out = Arc::clone(&session.out);
    // A header over the limit is refused before any parse (the session goes on).
    if let Err(e) = check_header_len(&raw.header, core.config.limits.max_header) {
        bump(&core.metrics.headers_too_large);
        crate::warn_limited!(bytes = raw.header.len(), "refused a header over max_header");
        match e.id {
            Some(id) => out.reply_err(id, &e.to_wire_error()),
            None => {
                out.deliver(unaddressed_error(e.to_wire_error()), &[]);
            }
        }
        return;
    }
    // The canonical shape with valid params is read straight into its typed request;
    // anything else takes the general parser, which decides and reports. Each parser
    // reads the header once: no input is parsed more than twice.
    let (id, noreply, request) = match parse_call(&raw.header) {
        Some(call) => (call.id, call.noreply, Ok(call.request)),
        None => match parse_header_derived(&raw.header) {
            Ok(Header::Call(call)) => (call.id, call.noreply, call.into_request()),
            Ok(not_a_call) => {
                // A reply or an event from a guest: answered as any malformed header is,
                // to the id it carries (an event carries none).
                bump(&core.metrics.bad_frames);
                let (id, kind) = match &not_a_call {
                    Header::Reply(reply) => (Some(reply.id), "reply"),
                    _ => (None, "event"),
                };
                let error = WireError::new(
                    ErrorCode::Eproto,
                    format!("a guest sends calls only, not a {kind}"),
                );
                match id {
                    Some(id) => out.reply_err(id, &error),
                    None => {
                        out.deliver(unaddressed_error(error), &[]);
                    }
                }
                return;
            }
            Err(e) => {
                bump(&core.metrics.bad_frames);
                match e.to_reply() {
                    Some(reply) => out.reply_err(reply.id, &e.to_wire_error()),
                    None => {
                        let error = WireError::new(ErrorCode::Eproto, e.to_string());
                        out.deliver(unaddressed_error(error), &[]);
                    }
                }
                return;
            }
        },
    };
    let noreply = noreply && session.has(capability::NOREPLY);
    let mut responder = Responder {
        out,
        id,
        noreply,
        socket: None,
    };
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            bump(&core.metrics.bad_frames);
            return responder.err(e.to_wire_error());
        }
    };
    let method = request.method();
    core.metrics.calls.bump(method);
    if let Some(session) = core.sessions.get(&sid) {
        session.calls.bump(method);
    }
    if !raw.payload.is_empty() && !method.has_payload() {
        return responder.err(WireError::invalid(format!("{method} takes no payload")));
    }
    let checked =
        check_capability(&core, sid, &request).and_then(|()| check_names(&core, sid, &request));
    if let Err(e) = checked {
        return responder.err(e);
    }
    responder.socket = named_socket(&request);
    if let Some(socket) = responder.socket {
        // A call racing with the socket's `close`: nothing may name the id after its close
        // event. Destroying or crediting it again is a no-op; other calls fail (`EBADF`)
        // with the request id only.
        let closed = core
            .session(sid)
            .is_some_and(|s| s.handle(socket.0).is_none() && s.was_issued(socket.0));
        // Any call naming an accepted host connection acknowledges its accept (in-VM
        // streams are acknowledged by the calls themselves).
        core.touch_host(sid, socket);
        let pollable = matches!(request, Request::Poll(_) | Request::DgramPoll(_));
        if closed && !pollable {
            if matches!(
                request,
                Request::Destroy(_) | Request::Credit(_) | Request::DgramClose(_)
            ) {
                return responder.ok(&Empty {});
            }
            responder.socket = None;
        }
    }
    match request {
        Request::Hello(_) => responder.err(WireError::invalid("this stream already said hello")),
        Request::Connect(p) => {
            drop(core);
            connect(core_rc, sid, &p.endpoint, p.timeout(), responder);
        }
        Request::Listen(p) => responder.done(core.listen(sid, &p)),
        Request::Write(p) => responder.done(core.write(sid, p.socket, &raw.payload)),
        Request::Shutdown(p) => responder.done(core.shutdown(sid, p.socket).map(|_| Empty {})),
        Request::Destroy(p) => match core.destroy(sid, p.socket, p.reset) {
            Ok(()) => {
                responder.ok(&Empty {});
                let closed = EventBody::socket_closed(p.socket, false);
                responder.out.deliver(closed, &[]);
            }
            Err(e) => responder.err(e),
        },
        Request::ServerClose(p) => match core.server_of(sid, p.server) {
            Ok(key) => {
                responder.ok(&Empty {});
                core.close_server(key, true);
            }
            Err(e) => responder.err(e),
        },
        Request::SetNoDelay(p) => {
            let set = match core.host_of(sid, p.socket) {
                Some(host) => host.set_option(Some(p.enable), None),
                None => core.set_option(sid, p.socket, |end| end.no_delay = p.enable),
            };
            responder.done(set.map(|_| Empty {}))
        }
        Request::SetKeepAlive(p) => {
            let set = match core.host_of(sid, p.socket) {
                Some(host) => host.set_option(None, Some(p.enable)),
                None => core.set_option(sid, p.socket, |end| end.keep_alive = p.enable),
            };
            responder.done(set.map(|_| Empty {}))
        }
        Request::Credit(p) => responder.done(core.credit(sid, p.socket, p.bytes).map(|_| Empty {})),
        Request::DnsLookup(p) => {
            drop(core);
            crate::host::resolve::dns_lookup(core_rc, sid, p.host, p.family, responder);
        }
        Request::Poll(p) => {
            drop(core);
            poll(
                core_rc,
                sid,
                p.socket.0,
                PollKind::Stream,
                p.wait_ms,
                responder,
            );
        }
        Request::ServerPoll(p) => {
            drop(core);
            poll(
                core_rc,
                sid,
                p.server.0,
                PollKind::Server,
                p.wait_ms,
                responder,
            );
        }
        Request::DgramPoll(p) => {
            drop(core);
            poll(
                core_rc,
                sid,
                p.socket.0,
                PollKind::Udp,
                p.wait_ms,
                responder,
            );
        }
        Request::DgramCreateSocket(p) => {
            let created = core.udp_create(sid, p.udp_type);
            responder.done(created.map(|socket| CreateSocketResult { socket }))
        }
        Request::DgramBind(p) => {
            let bound = core.udp_bind(sid, p.socket, p.host.as_deref(), p.port, p.reuse_addr);
            responder.done(bound)
        }
        Request::DgramConnect(p) => {
            responder.done(core.udp_connect(sid, p.socket, p.host.as_deref(), p.port))
        }
        Request::DgramDisconnect(p) => {
            responder.done(core.udp_disconnect(sid, p.socket).map(|()| Empty {}))
        }
        Request::DgramSend(p) => {
            let sent = core.udp_send(sid, p.socket, p.host.as_deref(), p.port, &raw.payload);
            responder.done(sent.map(|bytes| SendResult { bytes }))
        }
        Request::DgramClose(p) => match core.udp_of(sid, p.socket) {
            Ok(key) => {
                responder.ok(&Empty {});
                core.close_udp(key, true);
            }
            Err(e) => responder.err(e),
        },
        Request::DgramAddMembership(p) => {
            let joined = core.udp_add_membership(sid, p.socket, &p.group, p.interface.as_deref());
            responder.done(joined.map(|()| Empty {}))
        }
        Request::DgramDropMembership(p) => {
            let left = core.udp_drop_membership(sid, p.socket, &p.group, p.interface.as_deref());
            responder.done(left.map(|()| Empty {}))
        }
        Request::DgramSetBroadcast(p) => set_udp(
            &mut core,
            sid,
            p.socket,
            UdpOption::Broadcast(p.enable),
            &responder,
        ),
        Request::DgramSetTtl(p) => {
            set_udp(&mut core, sid, p.socket, UdpOption::Ttl(p.ttl), &responder)
        }
        Request::DgramSetMulticastTtl(p) => set_udp(
            &mut core,
            sid,
            p.socket,
            UdpOption::MulticastTtl(p.ttl),
            &responder,
        ),
        Request::DgramSetMulticastLoopback(p) => set_udp(
            &mut core,
            sid,
            p.socket,
            UdpOption::MulticastLoopback(p.enable),
            &responder,
        ),
        Request::DgramSetMulticastInterface(p) => set_udp(
            &mut core,
            sid,
            p.socket,
            UdpOption::MulticastInterface(&p.interface),
            &responder,
        ),
        Request::Stats(_) => responder.ok(&crate::stats::session_stats(&core, sid)),
    }
}

/// An `error` event about no socket, server or request: the answer to a frame whose
/// request id cannot be known (PROTOCOL.md §3).
fn unaddressed_error(error: WireError) -> EventBody {
    EventBody::Error {
        socket: None,
        server: None,
        request: None,
        code: error.code,
        message: error.message,
    }
}

/// A `dgram.set_*` option call.
fn set_udp(
    core: &mut Core,
    sid: SessionId,
    socket: SocketId,
    option: UdpOption<'_>,
    responder: &Responder,
) {
    responder.done(core.udp_set_option(sid, socket, option).map(|()| Empty {}))
}

/// The socket a call names (for `noreply` failure reports).
fn named_socket(request: &Request) -> Option<SocketId> {
    match request {
        Request::Write(p) => Some(p.socket),
        Request::Shutdown(p) => Some(p.socket),
        Request::Destroy(p) => Some(p.socket),
        Request::SetNoDelay(p) => Some(p.socket),
        Request::SetKeepAlive(p) => Some(p.socket),
        Request::Credit(p) => Some(p.socket),
        Request::Poll(p) => Some(p.socket),
        Request::DgramBind(p) => Some(p.socket),
        Request::DgramConnect(p) => Some(p.socket),
        Request::DgramDisconnect(p) => Some(p.socket),
        Request::DgramSend(p) => Some(p.socket),
        Request::DgramPoll(p) => Some(p.socket),
        Request::DgramClose(p) => Some(p.socket),
        Request::DgramAddMembership(p) => Some(p.socket),
        Request::DgramDropMembership(p) => Some(p.socket),
        Request::DgramSetBroadcast(p) => Some(p.socket),
        Request::DgramSetTtl(p) => Some(p.socket),
        Request::DgramSetMulticastTtl(p) => Some(p.socket),
        Request::DgramSetMulticastLoopback(p) => Some(p.socket),
        Request::DgramSetMulticastInterface(p) => Some(p.socket),
        _ => None,
    }
}

/// A call may use only what hello negotiated.
fn check_capability(core: &Core, sid: SessionId, request: &Request) -> Result<(), WireError> {
    let needed = match request {
        Request::Connect(p) => endpoint_capability(&p.endpoint),
        Request::Listen(p) => endpoint_capability(&p.endpoint),
        Request::DnsLookup(_) => capability::DNS,
        // `bytes: 0` grants nothing: it is the accept acknowledgement, which every guest
        // may send (PROTOCOL.md, `net.listen`), with or without a receive window.
        Request::Credit(p) if p.bytes > 0 => capability::CREDIT,
        Request::DgramCreateSocket(_)
        | Request::DgramBind(_)
        | Request::DgramConnect(_)
        | Request::DgramDisconnect(_)
        | Request::DgramSend(_)
        | Request::DgramPoll(_)
        | Request::DgramClose(_)
        | Request::DgramAddMembership(_)
        | Request::DgramDropMembership(_)
        | Request::DgramSetBroadcast(_)
        | Request::DgramSetTtl(_)
        | Request::DgramSetMulticastTtl(_)
        | Request::DgramSetMulticastLoopback(_)
        | Request::DgramSetMulticastInterface(_) => capability::UDP,
        _ => return Ok(()),
    };
    match core.session(sid) {
        Some(session) if session.has(needed) => Ok(()),
        _ => Err(WireError::new(
            ErrorCode::Enotsup,
            format!("the {needed:?} capability was not negotiated in hello"),
        )),
    }
}

/// Longest Unix socket path: `sun_path` is 108 bytes on Linux, its NUL included (libuv
/// refuses a longer one the same way). A virtual path is kept per listener, so this also
/// bounds what 1024 listeners hold.
pub const MAX_UNIX_PATH: usize = 107;

/// Longest Unix path once resolved against the session's `cwd`, in bytes of JSON: the
/// frames that report it (a listen or connect reply, an `accept` or `connect` event) must
/// fit the smallest `max_frame` a guest may announce (4096) with room for the rest of
/// their header. A guest gives at most [`MAX_UNIX_PATH`] bytes, but a long `cwd` makes
/// the name longer.
pub const MAX_RESOLVED_UNIX_PATH: usize = 3072;

/// Names a guest gives: a Unix path longer than [`MAX_UNIX_PATH`], or longer than
/// [`MAX_RESOLVED_UNIX_PATH`] once resolved, is `ENAMETOOLONG`, refused before anything is
/// done (so no listener exists that its reply could not report).
fn check_names(core: &Core, sid: SessionId, request: &Request) -> Result<(), WireError> {
    let endpoint = match request {
        Request::Connect(p) => &p.endpoint,
        Request::Listen(p) => &p.endpoint,
        _ => return Ok(()),
    };
    let Endpoint::Unix { path } = endpoint else {
        return Ok(());
    };
    if path.len() > MAX_UNIX_PATH {
        return Err(WireError::new(
            ErrorCode::Enametoolong,
            format!(
                "a Unix path of {} bytes is longer than {MAX_UNIX_PATH}",
                path.len()
            ),
        ));
    }
    let cwd = core.session(sid).map_or("/", |s| s.cwd.as_str());
    let Some(resolved) = crate::addr::normalize_unix_path(path, cwd) else {
        return Ok(()); // empty or with a NUL: the call itself refuses it
    };
    let json_len = serde_json::to_string(&resolved).map_or(usize::MAX, |j| j.len() - 2);
    if json_len > MAX_RESOLVED_UNIX_PATH {
        return Err(WireError::new(
            ErrorCode::Enametoolong,
            format!(
                "a Unix path resolved against the cwd is {json_len} bytes (as JSON), \
                 longer than {MAX_RESOLVED_UNIX_PATH}"
            ),
        ));
    }
    Ok(())
}

fn endpoint_capability(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Inet { .. } => capability::TCP,
        Endpoint::Unix { .. } => capability::UNIX,
    }
}

fn connect(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    endpoint: &Endpoint,
    timeout: std::time::Duration,
    responder: Responder,
) {
    let deadline = std::time::Instant::now() + timeout;
    let target = core_rc.borrow_mut().connect_target(sid, endpoint);
    match target {
        Ok(Target::Name(host, port)) => {
            // The host's resolver blocks: resolve (an egress, on the DNS pool: see
            // host/resolve.rs) in a parked call, then go on.
            let (core_task, sid_task, responder_task) =
                (Rc::clone(core_rc), sid, responder.clone());
            let task = async move {
                match crate::host::resolve::resolve(&core_task, sid_task, host, deadline).await {
                    Ok(ips) => {
                        let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, port));
                        let target = Target::Tcp(addrs.collect());
                        connect_to(&core_task, sid_task, target, deadline, responder_task);
                    }
                    Err(e) => responder_task.err(e),
                }
            };
            crate::parked::park(core_rc, sid, &responder, task);
        }
        Ok(target) => connect_to(core_rc, sid, target, deadline, responder),
        Err(e) => responder.err(e),
    }
}

/// Connects to a resolved target: in the VM at once, parked for backlog room, or parked
/// on a host connect.
fn connect_to(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    target: Target,
    deadline: std::time::Instant,
    responder: Responder,
) {
    let step = core_rc.borrow_mut().try_connect(sid, &target);
    match step {
        Ok(ConnectStep::Connected {
            socket,
            local,
            remote,
        }) => responder.connected(socket, local, remote),
        Ok(ConnectStep::Full(room)) => {
            crate::parked::park_connect(core_rc, sid, target, room, deadline, responder);
        }
        Ok(ConnectStep::Outside(candidates)) => {
            crate::host::connect::park_host_connect(core_rc, sid, candidates, deadline, responder);
        }
        Ok(ConnectStep::OutsideUnix(path)) => {
            let shown = match &target {
                Target::Unix(path) => path.clone(),
                _ => String::new(),
            };
            crate::host::connect_unix::park(core_rc, sid, path, shown, deadline, responder);
        }
        Err(e) => responder.err(e),
    }
}

/// A poll call: an event now, `null` now (`wait_ms` 0), or parked until one arrives.
fn poll(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    id: u64,
    kind: PollKind,
    wait_ms: u64,
    responder: Responder,
) {
    let mut core = core_rc.borrow_mut();
    if let Err(e) = core.check_poll(sid, id, kind) {
        return responder.err(e);
    }
    let polled = core.take_polled(sid, id);
    drop(core);
    if polled.is_some() || wait_ms == 0 {
        return responder.out.reply_polled(responder.id, polled);
    }
    crate::parked::park_poll(core_rc, sid, id, clamp_wait(wait_ms), responder);
}
