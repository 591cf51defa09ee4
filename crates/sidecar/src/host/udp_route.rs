//! Where a published UDP port's datagrams go, readable from the readiness thread.
//!
//! DESIGN's hop budget allows one sidecar thread wake from kernel readiness to the push
//! frame. A published port's datagram must reach the VM socket bound on the published
//! port, which only the socket table (on the RPC loop) knows; bouncing every datagram
//! through the RPC loop would cost a second wake. So the RPC loop keeps this route up to
//! date (on every bind, connect and close of a UDP socket in the VM, and on every
//! configuration applied) and the readiness thread's handler delivers by itself.
//!
//! The route's lock is held while a datagram is checked and pushed, so once the RPC loop
//! has changed the receiver (a `close`, say) no `message` for the old one is in flight:
//! the `close` it pushes next comes after every `message`, as for a host UDP socket.
//!
//! The route also remembers the senders it has heard (at most [`MAX_FLOWS`], the oldest
//! forgotten first): a guest's datagram to one of them is a reply, sent from the
//! published address without an allow rule.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

use parking_lot::Mutex;
use readiness::Next;
use sidecar_protocol::{Address, EventBody, SocketId};

use super::read_datagrams;
use crate::addr::{as_seen_by_listener, canonical};
use crate::core::UdpDrops;
use crate::metrics::{bump, Metrics};
use crate::outbound::Outbound;

/// Senders remembered per publication for replies.
pub const MAX_FLOWS: usize = 4096;

/// The VM socket a publication delivers to now.
#[derive(Clone)]
pub struct RouteReceiver {
    pub out: Arc<Outbound>,
    pub socket: SocketId,
    /// The address it is bound on (a wildcard-bound udp6 socket sees IPv4 senders as
    /// v4-mapped).
    pub bound_ip: IpAddr,
    /// A connected socket hears only its peer.
    pub connected: Option<SocketAddr>,
    /// Room for datagrams not taken yet: (poll mode per socket, push mode per session).
    pub room: (usize, usize),
}

/// What the RPC loop sets: the receiver (if any) and the target VM's drop counters
/// (`None` while the VM is not defined).
pub struct RouteTarget {
    pub receiver: Option<RouteReceiver>,
    pub drops: Option<Arc<UdpDrops>>,
}

#[derive(Default)]
struct Flows {
    order: VecDeque<SocketAddr>,
    known: HashSet<SocketAddr>,
}

impl Flows {
    fn remember(&mut self, from: SocketAddr) {
        if !self.known.insert(from) {
            return;
        }
        if self.order.len() == MAX_FLOWS {
            if let Some(oldest) = self.order.pop_front() {
                self.known.remove(&oldest);
            }
        }
        self.order.push_back(from);
    }
}

struct RouteState {
    target: RouteTarget,
    flows: Flows,
}

/// One publication's route, shared by the RPC loop (which sets it) and the readiness
/// thread's handler (which follows it).
pub struct UdpRoute {
    state: Mutex<RouteState>,
    /// Counts what no VM's counter can (the target VM undefined): `udp_host_dropped`.
    metrics: Arc<Metrics>,
}

impl UdpRoute {
    pub fn new(metrics: Arc<Metrics>) -> Arc<UdpRoute> {
        Arc::new(UdpRoute {
            metrics,
            state: Mutex::new(RouteState {
                target: RouteTarget {
                    receiver: None,
                    drops: None,
                },
                flows: Flows::default(),
            }),
        })
    }

    /// Points the route at `target`. Returns once a datagram being pushed to the old
    /// receiver (if any) is out.
    pub fn set(&self, target: RouteTarget) {
        self.state.lock().target = target;
    }

    /// Whether `peer` (canonical) has sent to this publication lately.
    pub fn knows(&self, peer: SocketAddr) -> bool {
        self.state.lock().flows.known.contains(&peer)
    }

    /// The readiness handler: reads what is waiting (up to a budget) and delivers it.
    /// Errors (ICMP reports for earlier replies) are passed over.
    pub fn on_ready(&self, socket: &UdpSocket) -> Next {
        read_datagrams(
            socket,
            |payload, from| {
                self.received(payload, from);
                true
            },
            |_| {},
        )
    }

    /// One datagram from `from`: to the receiver, or dropped and counted.
    fn received(&self, payload: &[u8], from: SocketAddr) {
        let from = SocketAddr::new(canonical(from.ip()), from.port());
        let mut state = self.state.lock();
        let RouteState { target, flows } = &mut *state;
        let heard = target
            .receiver
            .as_ref()
            .filter(|r| r.connected.is_none_or(|peer| peer == from));
        let Some(receiver) = heard else {
            match &target.drops {
                Some(drops) => bump(&drops.no_receiver),
                None => bump(&self.metrics.udp_host_dropped),
            }
            return;
        };
        flows.remember(from);
        let (poll_room, push_room) = receiver.room;
        if !receiver
            .out
            .has_datagram_room(receiver.socket.0, payload.len(), poll_room, push_room)
        {
            match &target.drops {
                Some(drops) => bump(&drops.no_room),
                None => bump(&self.metrics.udp_host_dropped),
            }
            return;
        }
        let message = EventBody::Message {
            socket: receiver.socket,
            remote: Address::Inet(as_seen_by_listener(receiver.bound_ip, from)),
        };
        receiver.out.deliver(message, payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_forget_the_oldest_sender_past_the_limit() {
        let mut flows = Flows::default();
        let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
        for i in 0..=MAX_FLOWS {
            flows.remember(addr(i));
        }
        flows.remember(addr(5)); // known: no change in order
        assert!(!flows.known.contains(&addr(0)), "the oldest is forgotten");
        assert!(flows.known.contains(&addr(1)) && flows.known.contains(&addr(MAX_FLOWS)));
        assert_eq!(flows.known.len(), MAX_FLOWS);
        assert_eq!(flows.order.len(), MAX_FLOWS);
    }
}
