//! One VM's network namespace: its TCP listeners by port, its Unix paths, the ports its
//! connected sockets use, and its ephemeral port allocator; with its effective limits and
//! the counts they bound. Two VMs share nothing.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{ServerKey, UdpKey};
use crate::addr::{binds_overlap, listener_matches, EphemeralPorts};
use crate::config::Limits;

pub struct Vm {
    pub name: String,
    /// Sidecar-wide, never reused: names the VM's fabric key ([`super::Key::VmRoom`]).
    pub key: u64,
    /// The effective limits (the VM's overrides over the global ones), replaced when a
    /// configuration is applied.
    pub limits: Limits,
    /// Accepted connections pushed to this VM's guests that they have not taken yet.
    pub unaccepted: usize,
    /// Host connects of this VM in progress (see `core::pending`).
    pub connecting: Rc<Cell<usize>>,
    tcp: HashMap<u16, Vec<(IpAddr, ServerKey)>>,
    unix: HashMap<String, ServerKey>,
    /// Local ports held by connected in-VM sockets (a count per port).
    client_ports: HashMap<u16, u32>,
    ephemeral: EphemeralPorts,
    /// Bound UDP sockets by port (a port space of its own, as in the kernel).
    udp: HashMap<u16, Vec<(IpAddr, UdpKey)>>,
    udp_ephemeral: EphemeralPorts,
    /// Sockets and servers open in this VM.
    pub open: usize,
    /// Datagrams dropped in this VM: no socket bound at the destination, or no room.
    /// Shared with the VM's published UDP ports, whose datagrams the readiness thread
    /// delivers (see [`crate::host::publish_udp`]).
    pub udp_drops: Arc<UdpDrops>,
    /// Sessions attached to this VM now (the count `sessions_per_vm` bounds).
    pub sessions: usize,
    /// Bytes its guests' writes left buffered in in-VM stream sockets (what
    /// `buffered_bytes_per_vm` bounds).
    pub buffered: usize,
}

/// A VM's dropped-datagram counts (atomic: the readiness thread counts too).
#[derive(Debug, Default)]
pub struct UdpDrops {
    /// No socket bound at the destination (or none that hears this sender).
    pub no_receiver: AtomicU64,
    /// The receiver had no room (a poll-mode receive buffer, a push-mode event queue).
    pub no_room: AtomicU64,
}

impl Vm {
    pub fn new(name: String, key: u64, limits: Limits) -> Self {
        Vm {
            name,
            key,
            limits,
            unaccepted: 0,
            connecting: Rc::new(Cell::new(0)),
            tcp: HashMap::new(),
            unix: HashMap::new(),
            client_ports: HashMap::new(),
            ephemeral: EphemeralPorts::default(),
            udp: HashMap::new(),
            udp_ephemeral: EphemeralPorts::default(),
            open: 0,
            udp_drops: Arc::default(),
            sessions: 0,
            buffered: 0,
        }
    }

    /// Connections pending in this VM (the count `pending_connections_per_vm` bounds).
    pub fn pending_connections(&self) -> usize {
        self.unaccepted + self.connecting.get()
    }

    /// The listener a connection to `dest:port` reaches. An exact address beats a
    /// wildcard, as a more specific bind does on Linux.
    pub fn find_tcp(&self, dest: IpAddr, port: u16) -> Option<ServerKey> {
        let listeners = self.tcp.get(&port)?;
        let matching = || {
            listeners
                .iter()
                .filter(|(ip, _)| listener_matches(*ip, dest))
        };
        matching()
            .find(|(ip, _)| !ip.is_unspecified())
            .or_else(|| matching().next())
            .map(|(_, key)| *key)
    }

    pub fn find_unix(&self, path: &str) -> Option<ServerKey> {
        self.unix.get(path).copied()
    }

    pub fn tcp_bind_conflicts(&self, ip: IpAddr, port: u16) -> bool {
        self.tcp
            .get(&port)
            .is_some_and(|l| l.iter().any(|(bound, _)| binds_overlap(*bound, ip)))
    }

    fn port_in_use(&self, port: u16) -> bool {
        self.tcp.contains_key(&port) || self.client_ports.contains_key(&port)
    }

    /// An ephemeral port nobody in this VM uses.
    pub fn free_port(&mut self) -> Option<u16> {
        let (tcp, clients) = (&self.tcp, &self.client_ports);
        self.ephemeral
            .allocate(|p| tcp.contains_key(&p) || clients.contains_key(&p))
    }

    pub fn add_tcp(&mut self, ip: IpAddr, port: u16, key: ServerKey) {
        self.tcp.entry(port).or_default().push((ip, key));
    }

    pub fn remove_tcp(&mut self, port: u16, key: ServerKey) {
        if let Some(list) = self.tcp.get_mut(&port) {
            list.retain(|(_, k)| *k != key);
            if list.is_empty() {
                self.tcp.remove(&port);
            }
        }
    }

    pub fn add_unix(&mut self, path: String, key: ServerKey) -> bool {
        if self.unix.contains_key(&path) {
            return false;
        }
        self.unix.insert(path, key);
        true
    }

    pub fn remove_unix(&mut self, path: &str) {
        self.unix.remove(path);
    }

    /// Claims an ephemeral port for a connecting socket.
    pub fn claim_client_port(&mut self) -> Option<u16> {
        let port = self.free_port()?;
        debug_assert!(!self.port_in_use(port));
        *self.client_ports.entry(port).or_default() += 1;
        Some(port)
    }

    pub fn release_client_port(&mut self, port: u16) {
        if let Some(n) = self.client_ports.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.client_ports.remove(&port);
            }
        }
    }

    pub fn listener_count(&self) -> usize {
        self.tcp.values().map(Vec::len).sum::<usize>() + self.unix.len()
    }

    /// UDP sockets bound on `port`, with their addresses.
    pub fn udp_on(&self, port: u16) -> &[(IpAddr, UdpKey)] {
        self.udp.get(&port).map_or(&[], Vec::as_slice)
    }

    /// The socket bound on `port` that a datagram to `dest` reaches, among those `hears`
    /// accepts: an exact address beats a wildcard, as a more specific bind does on Linux.
    pub fn udp_receiver(
        &self,
        port: u16,
        dest: IpAddr,
        hears: impl Fn(UdpKey) -> bool,
    ) -> Option<(IpAddr, UdpKey)> {
        self.udp_on(port)
            .iter()
            .filter(|(ip, key)| listener_matches(*ip, dest) && hears(*key))
            .min_by_key(|(ip, _)| ip.is_unspecified())
            .copied()
    }

    pub fn udp_bind_conflicts(&self, ip: IpAddr, port: u16) -> bool {
        self.udp_on(port)
            .iter()
            .any(|(bound, _)| binds_overlap(*bound, ip))
    }

    pub fn free_udp_port(&mut self) -> Option<u16> {
        let udp = &self.udp;
        self.udp_ephemeral.allocate(|p| udp.contains_key(&p))
    }

    pub fn add_udp(&mut self, ip: IpAddr, port: u16, key: UdpKey) {
        self.udp.entry(port).or_default().push((ip, key));
    }

    pub fn remove_udp(&mut self, port: u16, key: UdpKey) {
        if let Some(list) = self.udp.get_mut(&port) {
            list.retain(|(_, k)| *k != key);
            if list.is_empty() {
                self.udp.remove(&port);
            }
        }
    }
}
