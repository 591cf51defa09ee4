//! UDP: create, bind, connect, send, close; `message` events with the sender.
//!
//! A datagram to a socket of the same VM stays in memory; one to anywhere else goes out
//! through the socket's host kernel socket ([`HostUdp`]) if the operator's policy allows
//! the destination, else it is refused (`EACCES`), or, for a loopback destination,
//! dropped and counted as the kernel would with nobody listening.
//!
//! A datagram goes straight from the sender's call to the receiver's guest (boundaries
//! kept). UDP is lossy by nature, never silently: a datagram to a port nobody bound is
//! dropped and counted (and a *connected* sender's next operation fails `ECONNREFUSED`,
//! as Linux reports the ICMP error); one that finds no room at a poll-mode receiver is
//! dropped and counted. Receivers match as TCP listeners do (`0.0.0.0`, dual-stack `::`,
//! v4-mapped), and a connected socket only receives from its peer.

use std::net::{IpAddr, SocketAddr};

use sidecar_protocol::{
    Address, BindResult, DgramConnectResult, ErrorCode, EventBody, SocketId, UdpType, WireError,
    MAX_UDP_PAYLOAD,
};

use super::servers::resolve_in_vm;
use super::udp_group::{is_group, UdpOptions};
use super::{Core, Handle, SessionId, UdpKey};
use crate::addr::{
    as_seen_by_listener, bindable, canonical, effective_destination, is_vm_local, source_for,
};
use crate::host::HostUdp;
use crate::metrics::bump;
use crate::policy::Proto;

pub struct UdpSock {
    pub session: SessionId,
    pub id: SocketId,
    pub vm: String,
    pub udp_type: UdpType,
    pub bound: Option<SocketAddr>,
    pub connected: Option<SocketAddr>,
    /// A datagram to the connected peer found nobody: the next operation reports it.
    pub refused: bool,
    /// The kernel socket for destinations outside the VM, opened on first use.
    pub host: Option<HostUdp>,
    /// Groups joined, broadcast, TTLs, address reuse (see `core::udp_group`).
    pub options: UdpOptions,
}

fn family_ok(udp_type: UdpType, ip: IpAddr) -> bool {
    // A udp6 socket is dual-stack: it may talk to IPv4 (as v4-mapped).
    udp_type == UdpType::Udp6 || canonical(ip).is_ipv4()
}

/// Resolves `host` for a socket of `udp_type`: the first address of a family it can use.
fn resolve_for(udp_type: UdpType, host: &str) -> Result<IpAddr, WireError> {
    let ips = resolve_in_vm(host)?;
    let pick = match udp_type {
        UdpType::Udp4 => ips.iter().find(|ip| canonical(**ip).is_ipv4()),
        UdpType::Udp6 => ips.iter().find(|ip| ip.is_ipv6()).or(ips.first()),
    };
    pick.copied().ok_or_else(|| {
        WireError::new(
            ErrorCode::Eafnosupport,
            format!("{host} has no address for this socket type"),
        )
    })
}

impl Core {
    pub fn udp_create(&mut self, sid: SessionId, udp_type: UdpType) -> Result<SocketId, WireError> {
        self.check_room(sid, 1)?;
        let key = UdpKey(self.next_key());
        let session = self.session_mut(sid)?;
        let vm = session.vm.clone();
        let id = SocketId(session.insert(Handle::Udp(key)));
        self.vm_of(sid)?.open += 1;
        let sock = UdpSock {
            session: sid,
            id,
            vm,
            udp_type,
            bound: None,
            connected: None,
            refused: false,
            host: None,
            options: UdpOptions::default(),
        };
        self.udp.insert(key, sock);
        Ok(id)
    }

    pub fn udp_bind(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        host: Option<&str>,
        port: u16,
        reuse_addr: bool,
    ) -> Result<BindResult, WireError> {
        let key = self.udp_of(sid, socket)?;
        if self.udp[&key].bound.is_some() {
            return Err(WireError::invalid("the socket is already bound"));
        }
        self.udp
            .get_mut(&key)
            .expect("looked up")
            .options
            .reuse_addr = reuse_addr;
        let local = self.bind_udp_key(sid, key, host, port)?;
        Ok(BindResult {
            local: Address::Inet(local),
        })
    }

    fn bind_udp_key(
        &mut self,
        sid: SessionId,
        key: UdpKey,
        host: Option<&str>,
        port: u16,
    ) -> Result<SocketAddr, WireError> {
        let udp_type = self.udp[&key].udp_type;
        let ip = match host {
            Some(host) => resolve_for(udp_type, host)?,
            None => udp_type.wildcard().parse().expect("a wildcard literal"),
        };
        if !family_ok(udp_type, ip) {
            return Err(WireError::new(
                ErrorCode::Eafnosupport,
                format!("a {udp_type:?} socket cannot bind {ip}"),
            ));
        }
        if !bindable(ip) {
            return Err(WireError::new(
                ErrorCode::Eaddrnotavail,
                format!("{ip} is not an address of this VM (it has loopback only)"),
            ));
        }
        let vm = self.vm_of(sid)?;
        let port = match port {
            0 => vm.free_udp_port().ok_or_else(|| {
                WireError::new(ErrorCode::Eaddrinuse, "no ephemeral UDP port is free")
            })?,
            port => port,
        };
        if self.udp_bind_refused(key, ip, port) {
            return Err(WireError::new(
                ErrorCode::Eaddrinuse,
                format!("bind EADDRINUSE {ip}:{port}"),
            ));
        }
        self.vm_of(sid)?.add_udp(ip, port, key);
        let local = SocketAddr::new(ip, port);
        let sock = self.udp.get_mut(&key).expect("looked up");
        sock.bound = Some(local);
        let vm = sock.vm.clone();
        self.refresh_udp_routes(Some(&vm));
        Ok(local)
    }

    /// The socket's local address, binding an ephemeral port first if it has none.
    pub(super) fn udp_local(
        &mut self,
        sid: SessionId,
        key: UdpKey,
    ) -> Result<SocketAddr, WireError> {
        match self.udp[&key].bound {
            Some(addr) => Ok(addr),
            None => self.bind_udp_key(sid, key, None, 0),
        }
    }

    /// A destination, checked as the kernel would (where it goes is decided per datagram).
    fn udp_destination(
        &self,
        udp_type: UdpType,
        host: &str,
        port: u16,
    ) -> Result<SocketAddr, WireError> {
        let ip = resolve_for(udp_type, host)?;
        if !family_ok(udp_type, ip) {
            return Err(WireError::new(
                ErrorCode::Eafnosupport,
                format!("a {udp_type:?} socket cannot reach {ip}"),
            ));
        }
        if port == 0 {
            return Err(WireError::invalid("port 0 is not a destination"));
        }
        Ok(SocketAddr::new(effective_destination(ip), port))
    }

    fn take_refused(&mut self, key: UdpKey) -> Result<(), WireError> {
        let sock = self.udp.get_mut(&key).expect("looked up");
        if let Some(host) = &sock.host {
            host.take_refused()?;
        }
        if std::mem::take(&mut sock.refused) {
            return Err(WireError::new(
                ErrorCode::Econnrefused,
                "a datagram to the connected peer found nobody listening",
            ));
        }
        Ok(())
    }

    pub fn udp_connect(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        host: Option<&str>,
        port: u16,
    ) -> Result<DgramConnectResult, WireError> {
        let key = self.udp_of(sid, socket)?;
        if self.udp[&key].connected.is_some() {
            return Err(WireError::new(
                ErrorCode::Eisconn,
                "the socket is already connected",
            ));
        }
        let dest =
            self.udp_destination(self.udp[&key].udp_type, host.unwrap_or("localhost"), port)?;
        // Outside the VM: the policy decides now (a loopback peer may also appear in it
        // later; each datagram is routed when sent).
        let vm = self.udp[&key].vm.clone();
        let outside = !is_vm_local(dest.ip()) && !is_group(dest.ip());
        if outside || self.config.allowing(&vm, dest, Proto::Udp).is_some() {
            self.outside(&vm, Proto::Udp, &[dest], "connect")?;
            self.host_udp(key)?.connect(dest);
        }
        let local = self.udp_local(sid, key)?;
        self.udp.get_mut(&key).expect("looked up").connected = Some(dest);
        self.refresh_udp_routes(Some(&vm));
        Ok(DgramConnectResult {
            local: Address::Inet(local),
            remote: Address::Inet(dest),
        })
    }

    /// `dgram.disconnect`: the socket hears from anyone again (in the VM, through its host
    /// socket, and on a published port) and needs a destination per send. `ENOTCONN` if
    /// it is not connected. A pending `ECONNREFUSED` about the old peer is forgotten.
    pub fn udp_disconnect(&mut self, sid: SessionId, socket: SocketId) -> Result<(), WireError> {
        let key = self.udp_of(sid, socket)?;
        let sock = self.udp.get_mut(&key).expect("looked up");
        if sock.connected.take().is_none() {
            return Err(WireError::new(
                ErrorCode::Enotconn,
                "the socket is not connected",
            ));
        }
        sock.refused = false;
        if let Some(host) = &sock.host {
            host.disconnect();
        }
        let vm = sock.vm.clone();
        self.refresh_udp_routes(Some(&vm));
        Ok(())
    }

    /// Sends one datagram. Returns its size; a datagram nobody receives is still "sent"
    /// (and counted as dropped), as UDP does.
    pub fn udp_send(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        host: Option<&str>,
        port: Option<u16>,
        payload: &[u8],
    ) -> Result<u64, WireError> {
        let key = self.udp_of(sid, socket)?;
        self.take_refused(key)?;
        if payload.len() > MAX_UDP_PAYLOAD {
            return Err(WireError::new(
                ErrorCode::Emsgsize,
                format!(
                    "a datagram of {} bytes is over the limit of {MAX_UDP_PAYLOAD}",
                    payload.len()
                ),
            ));
        }
        let sock = &self.udp[&key];
        let dest = match (host, port) {
            (_, Some(port)) => {
                self.udp_destination(sock.udp_type, host.unwrap_or("localhost"), port)?
            }
            (Some(_), None) => return Err(WireError::invalid("a host needs a port")),
            (None, None) => sock.connected.ok_or_else(|| {
                WireError::new(
                    ErrorCode::Edestaddrreq,
                    "no destination and the socket is not connected",
                )
            })?,
        };
        // To a group, or everyone: the VM's members (and out, where the policy allows).
        if is_group(dest.ip()) {
            self.udp_send_group(sid, key, dest, payload)?;
            return Ok(payload.len() as u64);
        }
        // A reply to a sender of one of the VM's UDP publications leaves from there.
        if let Some(sent) = self.published_reply(key, dest, payload) {
            sent?;
            return Ok(payload.len() as u64);
        }
        // Refused outright (EACCES) before anything changes, such as an implicit bind.
        let vm = self.udp[&key].vm.clone();
        if !is_vm_local(dest.ip()) {
            self.outside(&vm, Proto::Udp, &[dest], "send")?;
        }
        let bound = self.udp_local(sid, key)?;
        let source = match bound.ip().is_unspecified() {
            true => SocketAddr::new(source_for(dest.ip()), bound.port()),
            false => bound,
        };
        // In the VM if someone there receives it; else outside, if the policy allows.
        if is_vm_local(dest.ip()) {
            if let Some(receiver) = self.in_vm_receiver(key, source, dest) {
                self.deliver_datagram(receiver, source, payload);
                return Ok(payload.len() as u64);
            }
        }
        match self.outside(&vm, Proto::Udp, &[dest], "send") {
            Ok(_) => self.host_udp(key)?.send(payload, dest)?,
            // Loopback, nobody there, not allowed outside: dropped and counted, as the
            // kernel drops it (a connected sender learns of it next time).
            Err(e) if e.code == ErrorCode::Econnrefused => self.drop_unreceived(key, dest),
            Err(e) => return Err(e),
        }
        Ok(payload.len() as u64)
    }

    /// The socket's host kernel socket, opened now if it has none.
    pub(super) fn host_udp(&mut self, key: UdpKey) -> Result<&HostUdp, WireError> {
        let sock = &self.udp[&key];
        let limits = self.vm_limits(&sock.vm);
        let room = (limits.udp_receive_buffer, limits.event_queue_bytes);
        if sock.host.is_none() {
            self.check_fd_room(1)?;
            let out = std::sync::Arc::clone(&self.sessions[&sock.session].out);
            let opened = HostUdp::open(
                &self.host.reactor,
                sock.id,
                out,
                std::sync::Arc::clone(&self.metrics),
                room,
                sock.udp_type == UdpType::Udp6,
            )
            .map_err(|e| crate::host::io_wire_error("socket", &e))?;
            self.udp.get_mut(&key).expect("exists").host = Some(opened);
        }
        Ok(self.udp[&key].host.as_ref().expect("opened"))
    }

    /// The in-VM socket that receives a datagram from `source` to `dest`, if any.
    fn in_vm_receiver(
        &self,
        from: UdpKey,
        source: SocketAddr,
        dest: SocketAddr,
    ) -> Option<(IpAddr, UdpKey)> {
        let vm = self.vms.get(&self.udp[&from].vm)?;
        // A connected socket only hears from its peer.
        vm.udp_receiver(dest.port(), dest.ip(), |key| {
            self.udp[&key].connected.is_none_or(|peer| {
                canonical(peer.ip()) == canonical(source.ip()) && peer.port() == source.port()
            })
        })
    }

    /// A datagram nobody in the VM receives: counted, and a connected sender's next
    /// operation fails `ECONNREFUSED`.
    fn drop_unreceived(&mut self, from: UdpKey, dest: SocketAddr) {
        let vm_name = self.udp[&from].vm.clone();
        if let Some(vm) = self.vms.get(&vm_name) {
            bump(&vm.udp_drops.no_receiver);
        }
        let sender = self.udp.get_mut(&from).expect("exists");
        if sender.connected == Some(dest) {
            sender.refused = true;
        }
    }

    pub(crate) fn deliver_datagram(
        &mut self,
        (bound_ip, to): (IpAddr, UdpKey),
        source: SocketAddr,
        payload: &[u8],
    ) {
        let target = &self.udp[&to];
        let limits = self.vm_limits(&target.vm);
        let (poll_room, push_room) = (limits.udp_receive_buffer, limits.event_queue_bytes);
        let Some(session) = self.sessions.get(&target.session) else {
            return;
        };
        let id = target.id.0;
        if !session
            .out
            .has_datagram_room(id, payload.len(), poll_room, push_room)
        {
            if let Some(vm) = self.vms.get(&target.vm) {
                bump(&vm.udp_drops.no_room);
            }
            return;
        }
        let message = EventBody::Message {
            socket: target.id,
            remote: Address::Inet(as_seen_by_listener(bound_ip, source)),
        };
        session.out.deliver(message, payload);
    }

    /// Frees a UDP socket; pushes its `close` if `notify_guest`.
    pub fn close_udp(&mut self, key: UdpKey, notify_guest: bool) {
        let Some(sock) = self.udp.remove(&key) else {
            return;
        };
        // Its host socket's handler runs on the readiness thread: stop it pushing first,
        // so no `message` follows the `close` below (`sock`, and with it the host
        // socket's registration, is dropped only at the end of this function).
        if let Some(host) = &sock.host {
            host.close();
        }
        if let Some(vm) = self.vms.get_mut(&sock.vm) {
            if let Some(bound) = sock.bound {
                vm.remove_udp(bound.port(), key);
            }
            vm.open -= 1;
        }
        // Likewise a published port's route (its handler also runs on the readiness
        // thread): no `message` for this socket once this returns.
        if sock.bound.is_some() {
            self.refresh_udp_routes(Some(&sock.vm));
        }
        if let Some(session) = self.sessions.get_mut(&sock.session) {
            session.remove(sock.id.0);
            if notify_guest {
                session
                    .out
                    .deliver(EventBody::socket_closed(sock.id, false), &[]);
            }
        }
    }
}
