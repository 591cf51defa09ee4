//! Host name lookups as egress: `dns.lookup` and connect-by-name.
//!
//! Why egress: a query carries the guest's chosen name to whatever resolver the host
//! uses, so a guest that may reach nothing outside its VM could still send data out
//! through names (`<secret>.attacker.example`). So:
//!
//! - `localhost` and IP literals are the VM's own names, answered here, no query.
//! - A VM whose policy (its own rules plus the sidecar-wide ones) allows nothing outside
//!   it gets `ENOTFOUND` for every other name, and no query leaves the host
//!   (`dns_refused_policy`).
//! - Otherwise the name goes to the [`DnsPool`](super::dns_pool::DnsPool) (bounded,
//!   fair, with a deadline: `EAGAIN` past the VM's `dns_lookups_per_vm`, `ETIMEDOUT` past
//!   `dns_timeout`), and a `dns.lookup` answer keeps only the addresses some rule of the
//!   VM allows (on any port, any protocol: the call names neither) plus the VM's own
//!   (loopback, unspecified: reachable in the VM without a rule). None left: `ENOTFOUND`
//!   (fails closed). Not `EACCES`: `getaddrinfo` has no such answer, and resolvers'
//!   callers (Node's `dns.lookup` first) handle `ENOTFOUND` as "cannot reach that name".
//!   A connect by name takes every address and is routed on them as any connect is
//!   (`EACCES` for a destination the policy denies, as with an address).

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use sidecar_protocol::{ErrorCode, Family, LookupAddress, LookupResult, WireError};

use super::dns_pool::Ticket;
use crate::addr::is_vm_local;
use crate::calls::Responder;
use crate::core::{Core, SessionId};
use crate::metrics::{bump, Metrics};

/// Whether `host` is a name only the host's resolver can answer.
pub fn needs_host_resolver(host: &str) -> bool {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    !host.eq_ignore_ascii_case("localhost") && literal.parse::<IpAddr>().is_err()
}

/// A lookup let through to the pool: wait for it with [`Admitted::answer`].
pub struct Admitted {
    ticket: Ticket,
    host: String,
    deadline: Instant,
    timeout_ms: u128,
    metrics: Arc<Metrics>,
}

/// Lets a lookup of `host` (a name that [`needs_host_resolver`]) by session `sid`
/// through, or says why not: not a host name or a VM that may not leave (`ENOTFOUND`, no
/// query), too many in flight (`EAGAIN`). It must be answered by `until` at the latest
/// (a connect's own deadline), by `dns_timeout` from now in any case.
pub fn admit(
    core: &Core,
    sid: SessionId,
    host: &str,
    until: Option<Instant>,
) -> Result<Admitted, WireError> {
    if host.is_empty() || host.len() > 253 || host.contains('\0') {
        return Err(WireError::new(
            ErrorCode::Enotfound,
            format!("getaddrinfo ENOTFOUND {host:?}: not a host name"),
        ));
    }
    let vm = &core
        .session(sid)
        .ok_or_else(|| WireError::new(ErrorCode::Ebadf, "the session has ended"))?
        .vm;
    if !core.config.may_leave(vm) {
        bump(&core.metrics.dns_refused_policy);
        return Err(WireError::new(
            ErrorCode::Enotfound,
            format!(
                "getaddrinfo ENOTFOUND {host}: the policy allows nothing outside the VM, \
                 so only localhost and IP literals resolve"
            ),
        ));
    }
    let (global, cap) = (&core.config.limits, core.vm_limits(vm).dns_lookups_per_vm);
    let ticket = core
        .host
        .dns
        .submit(vm, host.to_owned(), cap, global.dns_threads)
        .map_err(|busy| {
            bump(&core.metrics.dns_busy);
            WireError::new(
                ErrorCode::Eagain,
                format!(
                    "getaddrinfo EAGAIN {host}: the VM has {} lookups in flight (limit {})",
                    busy.in_flight, busy.cap
                ),
            )
        })?;
    bump(&core.metrics.dns_lookups);
    let timeout = Instant::now() + global.dns_timeout;
    Ok(Admitted {
        ticket,
        host: host.to_owned(),
        deadline: until.map_or(timeout, |until| until.min(timeout)),
        timeout_ms: global.dns_timeout.as_millis(),
        metrics: Arc::clone(&core.metrics),
    })
}

impl Admitted {
    /// The addresses (the resolver's order, without duplicates), `ENOTFOUND`, or
    /// `ETIMEDOUT` at the deadline.
    pub async fn answer(self) -> Result<Vec<IpAddr>, WireError> {
        let host = self.host;
        let Some(answer) = self.ticket.answer(self.deadline).await else {
            bump(&self.metrics.dns_timeouts);
            return Err(WireError::new(
                ErrorCode::Etimedout,
                format!(
                    "getaddrinfo ETIMEDOUT {host}: no answer within {} ms",
                    self.timeout_ms
                ),
            ));
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in answer.unwrap_or_default() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(WireError::new(
                ErrorCode::Enotfound,
                format!("getaddrinfo ENOTFOUND {host}"),
            ));
        }
        Ok(ips)
    }
}

/// Resolves a connect's host name ([`admit`], then the answer, unfiltered: the connect
/// routes on the addresses, policy included), answered by `deadline` at the latest.
pub async fn resolve(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    host: String,
    deadline: Instant,
) -> Result<Vec<IpAddr>, WireError> {
    let admitted = admit(&core_rc.borrow(), sid, &host, Some(deadline))?;
    admitted.answer().await
}

/// `dns.lookup`: `localhost` → the VM's loopbacks, an IP literal → itself, any other
/// name → admitted to the pool and answered from a parked call, filtered by the policy.
pub fn dns_lookup(
    core_rc: &Rc<RefCell<Core>>,
    sid: SessionId,
    host: String,
    family: Family,
    responder: Responder,
) {
    if !needs_host_resolver(&host) {
        let ips = crate::core::resolve_in_vm(&host);
        return responder.done(ips.and_then(|ips| lookup_result(&host, ips, family)));
    }
    let admitted = match admit(&core_rc.borrow(), sid, &host, None) {
        Ok(admitted) => admitted,
        Err(e) => return responder.err(e),
    };
    let (core_task, reply) = (Rc::clone(core_rc), responder.clone());
    let task = async move {
        let ips = admitted.answer().await;
        let allowed = ips.and_then(|ips| allowed_answer(&core_task.borrow(), sid, &host, ips));
        reply.done(allowed.and_then(|ips| lookup_result(&host, ips, family)));
    };
    crate::parked::park(core_rc, sid, &responder, task);
}

/// The addresses of `ips` session `sid`'s VM may use: those of the VM itself and those
/// some rule allows (policy as it is now, after a reload too); none: `ENOTFOUND`.
fn allowed_answer(
    core: &Core,
    sid: SessionId,
    host: &str,
    ips: Vec<IpAddr>,
) -> Result<Vec<IpAddr>, WireError> {
    let vm = &core
        .session(sid)
        .ok_or_else(|| WireError::new(ErrorCode::Ebadf, "the session has ended"))?
        .vm;
    let allowed: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| is_vm_local(*ip) || core.config.covers(vm, *ip))
        .collect();
    if allowed.is_empty() {
        bump(&core.metrics.dns_refused_policy);
        return Err(WireError::new(
            ErrorCode::Enotfound,
            format!("getaddrinfo ENOTFOUND {host} (the policy allows none of its addresses)"),
        ));
    }
    Ok(allowed)
}

fn lookup_result(host: &str, ips: Vec<IpAddr>, family: Family) -> Result<LookupResult, WireError> {
    let addresses: Vec<LookupAddress> = ips
        .into_iter()
        .filter(|ip| family == Family::Any || Family::of(ip) == family)
        .map(LookupAddress::from)
        .collect();
    if addresses.is_empty() {
        return Err(WireError::new(
            ErrorCode::Enotfound,
            format!("getaddrinfo ENOTFOUND {host} (no address of that family)"),
        ));
    }
    Ok(LookupResult { addresses })
}
