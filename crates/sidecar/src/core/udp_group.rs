//! UDP multicast and broadcast inside a VM, and the socket options that go with them
//! (Node's `addMembership`, `setBroadcast`, `setTTL`, `setMulticastTTL`,
//! `setMulticastLoopback`, `setMulticastInterface`, `reuseAddr`).
//!
//! A VM is one host with loopback only, so its groups are its own: a datagram a VM socket
//! sends to group G on port P reaches every socket of **that VM** bound on P (to the
//! wildcard or to G) that joined G — never another VM's, whatever it joined. With the
//! sender's multicast loopback off it reaches none (every VM socket is local). A
//! broadcast (`255.255.255.255`, which needs `setBroadcast(true)`, else `EACCES` as the
//! kernel answers) reaches every socket of the VM bound on P to a wildcard. A group or
//! broadcast datagram nobody receives is counted as dropped, as a unicast one is.
//!
//! Outside the VM: a datagram to a group also leaves through the socket's host UDP
//! socket when a `udp:` rule of the policy covers the group address (sent with the
//! kernel's default multicast TTL); membership is never joined on the host, so nothing
//! from a host group comes in. Broadcast never leaves the VM.
//!
//! `reuse_addr` lets sockets that all set it bind the same address and port, so several
//! can listen to one group as on a real host; a unicast datagram reaches one of them.

use std::net::{IpAddr, SocketAddr};

use sidecar_protocol::{ErrorCode, SocketId, UdpType, WireError};

use super::{Core, SessionId, UdpKey};
use crate::addr::{binds_overlap, canonical, is_vm_local, source_for};
use crate::metrics::bump;
use crate::policy::Proto;

/// Groups one socket may join (Linux's `igmp_max_memberships`): `ENOBUFS` beyond.
pub const MAX_MEMBERSHIPS: usize = 20;

/// A UDP socket's options, as the kernel keeps them.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    pub reuse_addr: bool,
    pub broadcast: bool,
    pub ttl: u8,
    pub multicast_ttl: u8,
    pub multicast_loopback: bool,
    pub multicast_interface: Option<IpAddr>,
    /// Joined groups, with the interface each was joined on.
    pub groups: Vec<(IpAddr, Option<IpAddr>)>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            reuse_addr: false,
            broadcast: false,
            ttl: 64,
            multicast_ttl: 1,
            multicast_loopback: true,
            multicast_interface: None,
            groups: Vec::new(),
        }
    }
}

/// Whether a datagram to `ip` goes to a group (multicast) or to everyone (broadcast).
pub fn is_group(ip: IpAddr) -> bool {
    ip.is_multicast() || is_broadcast(ip)
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(canonical(ip), IpAddr::V4(v4) if v4.is_broadcast())
}

fn family_fits(udp_type: UdpType, ip: IpAddr) -> bool {
    match udp_type {
        UdpType::Udp4 => ip.is_ipv4(),
        UdpType::Udp6 => ip.is_ipv6(),
    }
}

/// An IP literal (an IPv6 scope, `%eth0`, is ignored: a VM has one interface).
fn literal(what: &str, text: &str) -> Result<IpAddr, WireError> {
    let bare = text.split('%').next().unwrap_or_default();
    bare.parse()
        .map_err(|_| WireError::invalid(format!("{what} {text:?} is not an IP address")))
}

/// A group address for a socket of `udp_type`: a multicast literal of its family.
fn group_of(udp_type: UdpType, group: &str) -> Result<IpAddr, WireError> {
    let ip = literal("group", group)?;
    if !ip.is_multicast() || !family_fits(udp_type, ip) {
        return Err(WireError::invalid(format!(
            "{group} is not a {udp_type:?} multicast group"
        )));
    }
    Ok(ip)
}

/// An interface address: one of the VM's (loopback or the wildcard), of the family.
fn interface_of(udp_type: UdpType, interface: Option<&str>) -> Result<Option<IpAddr>, WireError> {
    let Some(text) = interface else {
        return Ok(None);
    };
    let ip = literal("interface", text)?;
    if !family_fits(udp_type, ip) {
        return Err(WireError::invalid(format!(
            "interface {text} does not fit a {udp_type:?} socket"
        )));
    }
    if !is_vm_local(ip) {
        return Err(WireError::new(
            ErrorCode::Eaddrnotavail,
            format!("{text} is not an interface of this VM (it has loopback only)"),
        ));
    }
    Ok(Some(ip))
}

impl Core {
    /// `dgram.add_membership`. Binds an ephemeral port first if unbound (as libuv does).
    pub fn udp_add_membership(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        group: &str,
        interface: Option<&str>,
    ) -> Result<(), WireError> {
        let key = self.udp_of(sid, socket)?;
        let udp_type = self.udp[&key].udp_type;
        let membership = (
            group_of(udp_type, group)?,
            interface_of(udp_type, interface)?,
        );
        let groups = &self.udp[&key].options.groups;
        if groups.contains(&membership) {
            return Err(WireError::new(
                ErrorCode::Eaddrinuse,
                format!("addMembership EADDRINUSE: already a member of {group}"),
            ));
        }
        if groups.len() >= MAX_MEMBERSHIPS {
            return Err(WireError::new(
                ErrorCode::Enobufs,
                format!("a socket joins at most {MAX_MEMBERSHIPS} groups"),
            ));
        }
        self.udp_local(sid, key)?;
        let sock = self.udp.get_mut(&key).expect("looked up");
        sock.options.groups.push(membership);
        Ok(())
    }

    /// `dgram.drop_membership`: `EADDRNOTAVAIL` if not a member (the kernel's answer).
    pub fn udp_drop_membership(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        group: &str,
        interface: Option<&str>,
    ) -> Result<(), WireError> {
        let key = self.udp_of(sid, socket)?;
        let udp_type = self.udp[&key].udp_type;
        let membership = (
            group_of(udp_type, group)?,
            interface_of(udp_type, interface)?,
        );
        let groups = &mut self.udp.get_mut(&key).expect("looked up").options.groups;
        match groups.iter().position(|m| *m == membership) {
            Some(at) => {
                groups.remove(at);
                Ok(())
            }
            None => Err(WireError::new(
                ErrorCode::Eaddrnotavail,
                format!("dropMembership EADDRNOTAVAIL: not a member of {group}"),
            )),
        }
    }

    /// The other `dgram.set_*` options: checked as the kernel checks them, then kept.
    pub fn udp_set_option(
        &mut self,
        sid: SessionId,
        socket: SocketId,
        option: UdpOption<'_>,
    ) -> Result<(), WireError> {
        let key = self.udp_of(sid, socket)?;
        let udp_type = self.udp[&key].udp_type;
        let hops = |ttl: u32, min: u32| match u8::try_from(ttl) {
            Ok(hops) if ttl >= min => Ok(hops),
            _ => Err(WireError::invalid(format!(
                "a TTL of {ttl} is outside {min}..=255"
            ))),
        };
        let interface = match option {
            UdpOption::MulticastInterface(text) => interface_of(udp_type, Some(text))?,
            _ => None,
        };
        let options = &mut self.udp.get_mut(&key).expect("looked up").options;
        match option {
            UdpOption::Broadcast(on) => options.broadcast = on,
            UdpOption::Ttl(ttl) => options.ttl = hops(ttl, 1)?,
            UdpOption::MulticastTtl(ttl) => options.multicast_ttl = hops(ttl, 0)?,
            UdpOption::MulticastLoopback(on) => options.multicast_loopback = on,
            UdpOption::MulticastInterface(_) => options.multicast_interface = interface,
        }
        Ok(())
    }

    /// Whether binding socket `key` at `ip:port` conflicts with a socket bound there
    /// (none does where both set `reuse_addr`).
    pub(super) fn udp_bind_refused(&self, key: UdpKey, ip: IpAddr, port: u16) -> bool {
        let reuse = self.udp[&key].options.reuse_addr;
        let Some(vm) = self.vms.get(&self.udp[&key].vm) else {
            return false;
        };
        vm.udp_on(port).iter().any(|(bound, other)| {
            binds_overlap(*bound, ip) && !(reuse && self.udp[other].options.reuse_addr)
        })
    }

    /// Sends one datagram to a group or broadcast address `dest` (see the module doc).
    pub(super) fn udp_send_group(
        &mut self,
        sid: SessionId,
        key: UdpKey,
        dest: SocketAddr,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let broadcast = is_broadcast(dest.ip());
        let sock = &self.udp[&key];
        if broadcast && !sock.options.broadcast {
            return Err(WireError::new(
                ErrorCode::Eacces,
                format!("send EACCES {dest}: broadcast needs setBroadcast(true)"),
            ));
        }
        let (vm, loopback) = (sock.vm.clone(), sock.options.multicast_loopback);
        let bound = self.udp_local(sid, key)?;
        let source = match bound.ip().is_unspecified() {
            true => SocketAddr::new(source_for(dest.ip()), bound.port()),
            false => bound,
        };
        let receivers: Vec<(IpAddr, UdpKey)> = match self.vms.get(&vm) {
            Some(v) if broadcast || loopback => v
                .udp_on(dest.port())
                .iter()
                .copied()
                .filter(|(ip, k)| self.hears_group(*ip, *k, dest, source, broadcast))
                .collect(),
            _ => Vec::new(),
        };
        if receivers.is_empty() {
            if let Some(v) = self.vms.get(&vm) {
                bump(&v.udp_drops.no_receiver);
            }
        }
        for receiver in receivers {
            self.deliver_datagram(receiver, source, payload);
        }
        if !broadcast && self.config.allowing(&vm, dest, Proto::Udp).is_some() {
            self.host_udp(key)?.send(payload, dest)?;
        }
        Ok(())
    }

    /// Whether socket `key`, bound at `bound_ip` on the destination port, receives a
    /// group (or broadcast) datagram from `source` to `dest`.
    fn hears_group(
        &self,
        bound_ip: IpAddr,
        key: UdpKey,
        dest: SocketAddr,
        source: SocketAddr,
        broadcast: bool,
    ) -> bool {
        let sock = &self.udp[&key];
        let group = canonical(dest.ip());
        let from_peer = sock.connected.is_none_or(|peer| {
            canonical(peer.ip()) == canonical(source.ip()) && peer.port() == source.port()
        });
        let fits = match sock.udp_type {
            UdpType::Udp4 => group.is_ipv4(),
            UdpType::Udp6 => true,
        };
        let at = bound_ip.is_unspecified() || canonical(bound_ip) == group;
        let member = broadcast || sock.options.groups.iter().any(|(g, _)| *g == group);
        from_peer && fits && at && member
    }
}

/// One of the `dgram.set_*` options.
#[derive(Debug, Clone, Copy)]
pub enum UdpOption<'a> {
    Broadcast(bool),
    Ttl(u32),
    MulticastTtl(u32),
    MulticastLoopback(bool),
    MulticastInterface(&'a str),
}
