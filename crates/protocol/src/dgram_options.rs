//! Params of the UDP socket options: multicast group membership, broadcast, TTLs, the
//! multicast interface, as Node's `dgram.Socket` methods of the same names set them.
//!
//! Groups and broadcast are the VM's own: what a VM socket sends to a group reaches the
//! VM's sockets that joined it (never another VM's); a broadcast reaches the VM's
//! sockets bound on that port. Every call answers [`Empty`](crate::Empty).

use serde::{Deserialize, Serialize};

use crate::address::SocketId;

fn yes() -> bool {
    true
}

/// `dgram.add_membership`: join multicast `group` (an IPv4 `224.0.0.0/4` or IPv6
/// `ff00::/8` literal of the socket's family) on `interface` (a VM address; default any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMembershipParams {
    /// The UDP socket (bound to an ephemeral port first if unbound, as libuv does).
    pub socket: SocketId,
    /// The group address.
    pub group: String,
    /// The local interface's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// `dgram.drop_membership`: leave `group` (`EADDRNOTAVAIL` if not a member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropMembershipParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// The group address.
    pub group: String,
    /// The interface it was joined on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// `dgram.set_broadcast`: `SO_BROADCAST`; without it a send to `255.255.255.255` is
/// `EACCES`, as the kernel answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetBroadcastParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// On or off (default on).
    #[serde(default = "yes")]
    pub enable: bool,
}

/// `dgram.set_ttl`: the unicast TTL, 1 to 255 (else `EINVAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTtlParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// Hops.
    pub ttl: u32,
}

/// `dgram.set_multicast_ttl`: the multicast TTL, 0 to 255 (else `EINVAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMulticastTtlParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// Hops.
    pub ttl: u32,
}

/// `dgram.set_multicast_loopback`: `IP_MULTICAST_LOOP` (default on). Off, what this
/// socket sends to a group reaches no socket of the VM (all of them are local).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMulticastLoopbackParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// On or off (default on).
    #[serde(default = "yes")]
    pub enable: bool,
}

/// `dgram.set_multicast_interface`: the interface multicast leaves from (a VM address of
/// the socket's family; `EADDRNOTAVAIL` for any other, `EINVAL` for a non-address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMulticastInterfaceParams {
    /// The UDP socket.
    pub socket: SocketId,
    /// The interface's address.
    pub interface: String,
}
