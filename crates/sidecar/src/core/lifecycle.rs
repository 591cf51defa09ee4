//! A session's beginning (`hello`: attach to a VM, or attach an event channel; or the
//! operator's `bind`, which attaches a stream to a VM for a guest to say hello on) and end
//! (its sockets close as a process exit closes them, its servers vanish, its parked calls
//! are dropped).

use std::sync::Arc;

use sidecar_protocol::{
    capability, ErrorCode, HelloParams, HelloResult, Mode, WireError, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};

use super::{Core, Handle, Session, SessionId};
use crate::config::random_token;
use crate::metrics::{bump, drop_one};
use crate::outbound::{FrameSink, Outbound};

/// Longest `cwd` a guest may set in hello (PATH_MAX): longer is `ENAMETOOLONG`.
pub const MAX_CWD: usize = 4096;

/// What this sidecar offers in hello (the reply carries the intersection).
pub const SUPPORTED_CAPABILITIES: &[&str] = &[
    capability::PUSH,
    capability::POLL,
    capability::EVENT_CHANNEL,
    capability::NOREPLY,
    capability::TCP,
    capability::UNIX,
    capability::UDP,
    capability::DNS,
    capability::CREDIT,
    capability::PRESSURE,
];

/// A successful hello.
pub enum HelloOutcome {
    /// The operator's `bind`: the stream now belongs to this VM, and the guest's hello
    /// (without a secret) comes next.
    Bound(String),
    /// A new session on its primary stream.
    Session(SessionId, HelloResult),
    /// This stream is now the event channel of an existing session.
    EventChannel(SessionId, HelloResult),
}

impl Core {
    pub fn hello(
        &mut self,
        params: &HelloParams,
        sink: Arc<dyn FrameSink>,
        bound: Option<&str>,
    ) -> Result<HelloOutcome, WireError> {
        let refused = |code, message: String| {
            bump(&self.metrics.refused_hellos);
            Err(WireError::new(code, message))
        };
        if params.version != PROTOCOL_VERSION {
            return refused(
                ErrorCode::Eprotonosupport,
                format!(
                    "protocol version {} is not supported (this sidecar speaks {PROTOCOL_VERSION})",
                    params.version
                ),
            );
        }
        if params.bind {
            if bound.is_some() || params.event_channel_token.is_some() {
                return refused(
                    ErrorCode::Einval,
                    "bind is the first frame of a stream that has no VM yet".into(),
                );
            }
            if !self.config.secret_matches(&params.vm, &params.secret) {
                return refused(ErrorCode::Eacces, "unknown VM or wrong secret".into());
            }
            tracing::debug!(vm = %params.vm, "stream bound");
            return Ok(HelloOutcome::Bound(params.vm.clone()));
        }
        if let Some(token) = &params.event_channel_token {
            // The token alone attaches (it is one-time, unguessable, and only the
            // session's own primary stream was told it); a secret, if given, must match.
            if !params.secret.is_empty() && !self.config.secret_matches(&params.vm, &params.secret)
            {
                return refused(ErrorCode::Eacces, "unknown VM or wrong secret".into());
            }
            let vm_ok = |s: &Session| params.vm.is_empty() || s.vm == params.vm;
            return match self.event_tokens.remove(token) {
                // The transport attaches `sink` once it has written this hello's reply:
                // events queued for the channel must follow the reply, not precede it.
                Some(sid) if self.sessions.get(&sid).is_some_and(vm_ok) => Ok(
                    HelloOutcome::EventChannel(sid, self.hello_result(sid, None)),
                ),
                _ => refused(
                    ErrorCode::Eacces,
                    "unknown or already used event channel token".into(),
                ),
            };
        }
        let vm = match bound {
            Some(vm) => {
                if !params.secret.is_empty() || !(params.vm.is_empty() || params.vm == vm) {
                    let message = format!(
                        "this stream was attached to VM {vm} by the operator: say hello \
                         without vm and secret"
                    );
                    return refused(ErrorCode::Einval, message);
                }
                if !self.config.vms.contains_key(vm) {
                    return refused(ErrorCode::Eacces, format!("no VM named {vm} is defined"));
                }
                vm.to_owned()
            }
            None => {
                if !self.config.secret_matches(&params.vm, &params.secret) {
                    return refused(ErrorCode::Eacces, "unknown VM or wrong secret".into());
                }
                params.vm.clone()
            }
        };
        if params.credit == 0 {
            return refused(ErrorCode::Einval, "the credit window must be > 0".into());
        }
        if let Some(cwd) = params.cwd.as_deref().filter(|cwd| cwd.len() > MAX_CWD) {
            let message = format!("cwd of {} bytes is longer than {MAX_CWD}", cwd.len());
            return refused(ErrorCode::Enametoolong, message);
        }
        let limit = self.vm_limits(&vm).sessions_per_vm;
        if self.vms.get(&vm).is_some_and(|v| v.sessions >= limit) {
            crate::warn_limited!(vm = %vm, limit, "refused a session: sessions_per_vm");
            let message = format!("VM {vm} has {limit} sessions attached (sessions_per_vm)");
            return refused(ErrorCode::Emfile, message);
        }
        // A window beyond `max_credit` is clamped to it (PROTOCOL.md §13).
        let credit = params.credit.min(self.config.limits.max_credit);
        let capabilities = capability::intersect(SUPPORTED_CAPABILITIES, &params.capabilities);
        let guest_max_frame = params
            .max_frame
            .map(|m| m as usize)
            .unwrap_or(DEFAULT_MAX_FRAME)
            .max(4096);
        let sid = self.next_key();
        let out = Arc::new(
            Outbound::new(
                sink,
                guest_max_frame,
                Arc::clone(&self.metrics),
                params.mode,
                sid,
                self.fabric.clone(),
                capability::has(&capabilities, capability::PRESSURE),
            )
            .with_outbound_cap(self.vm_limits(&vm).session_outbound_bytes),
        );
        // The event channel exists for push mode; a poll-mode session never gets a token.
        let wants_channel =
            params.mode == Mode::Push && capability::has(&capabilities, capability::EVENT_CHANNEL);
        let token = wants_channel.then(|| {
            let token = random_token();
            self.event_tokens.insert(token.clone(), sid);
            out.expect_event_channel();
            token
        });
        let cwd = params.cwd.clone().unwrap_or_else(|| "/".into());
        let session = Session::new(sid, vm.clone(), params.mode, credit, cwd, capabilities, out);
        self.sessions.insert(sid, session);
        if let Some(v) = self.vms.get_mut(&vm) {
            v.sessions += 1;
        }
        bump(&self.metrics.sessions_now);
        bump(&self.metrics.sessions_total);
        tracing::debug!(session = sid, vm = %vm, "session attached");
        Ok(HelloOutcome::Session(sid, self.hello_result(sid, token)))
    }

    fn hello_result(&self, sid: SessionId, token: Option<String>) -> HelloResult {
        HelloResult {
            version: PROTOCOL_VERSION,
            session: sid,
            capabilities: self.sessions[&sid].capabilities.clone(),
            event_channel_token: token,
            max_frame: self.config.limits.max_frame as u32,
        }
    }

    /// Ends a session: its sockets close (peers get `end` then `close`), its servers
    /// vanish (connects parked on them are refused), its parked calls are dropped.
    pub fn end_session(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let dropped = session.drop_parked();
        for _ in 0..dropped {
            drop_one(&self.metrics.parked_now);
        }
        let handles: Vec<Handle> = session.handles().map(|(_, h)| h).collect();
        for handle in handles {
            match handle {
                Handle::Stream(key) => self.abort_stream(key),
                Handle::Server(key) => self.close_server(key, false),
                Handle::Udp(key) => self.close_udp(key, false),
                Handle::Host(key) => self.close_host(key, false, false),
            }
        }
        self.event_tokens.retain(|_, owner| *owner != sid);
        if let Some(session) = self.sessions.remove(&sid) {
            session.out.close();
            if let Some(v) = self.vms.get_mut(&session.vm) {
                v.sessions = v.sessions.saturating_sub(1);
            }
            crate::memory::freed(&self.metrics);
            drop_one(&self.metrics.sessions_now);
            tracing::debug!(session = sid, vm = %session.vm, "session ended");
        }
    }
}
