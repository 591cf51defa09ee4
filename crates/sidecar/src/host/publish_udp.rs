//! Published UDP ports: datagrams to a host address reach the UDP socket a VM has bound
//! on the published port, with the real sender as `remote`; the guest's replies to those
//! senders leave from the published address (so they look like replies to the client),
//! without the operator having to allow every client in the policy — like the reply
//! direction of `docker -p 53:53/udp`.
//!
//! Receiving runs inline on the readiness thread, following a [`UdpRoute`] that the RPC
//! loop keeps pointed at the VM's receiving socket: one sidecar thread wake per burst of
//! datagrams, as for any host socket (DESIGN's hop budget). Sending a reply runs on the
//! RPC loop, as every guest call does.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;

use readiness::{Action, Interest, Registration};
use sidecar_protocol::{ErrorCode, WireError};

use super::udp_route::{RouteReceiver, RouteTarget, UdpRoute};
use crate::addr::canonical;
use crate::core::{Core, UdpKey};
use crate::metrics::bump;

/// A UDP publication: where it leads, its socket (registered with the inline handler),
/// and the route the handler follows.
pub struct UdpPublication {
    pub vm: String,
    pub port: u16,
    socket: Registration<UdpSocket>,
    route: Arc<UdpRoute>,
}

/// Registers one published UDP address with the readiness thread and hands it to the
/// core. The task then only waits to be aborted: the handler does the receiving, and the
/// socket closes when the core forgets the publication (a reload that drops it, or
/// shutdown).
pub async fn serve(core_rc: Rc<RefCell<Core>>, host: SocketAddr, socket: UdpSocket) {
    let route = UdpRoute::new(Arc::clone(&core_rc.borrow().metrics));
    // Routed before the handler can first run: datagrams may already be waiting.
    if let Some(target) = core_rc.borrow().published_udp_targets.get(&host) {
        route.set(core_rc.borrow().route_target(&target.vm, target.port));
    }
    let handler = Arc::clone(&route);
    let registration = core_rc.borrow().host.reactor.register(
        socket,
        Interest::READABLE,
        Action::handler(move |socket: &UdpSocket, _| handler.on_ready(socket)),
    );
    match registration {
        Ok(socket) => core_rc
            .borrow_mut()
            .attach_udp_publication(host, socket, route),
        Err(e) => tracing::error!(%e, %host, "cannot watch a published UDP port"),
    }
    std::future::pending::<()>().await;
}

impl Core {
    fn attach_udp_publication(
        &mut self,
        host: SocketAddr,
        socket: Registration<UdpSocket>,
        route: Arc<UdpRoute>,
    ) {
        let Some(target) = self.published_udp_targets.get(&host).cloned() else {
            return; // Unpublished by a reload before this task first ran.
        };
        self.udp_publications.insert(
            host,
            UdpPublication {
                vm: target.vm.clone(),
                port: target.port,
                socket,
                route,
            },
        );
        self.refresh_udp_routes(Some(&target.vm));
    }

    /// Points the routes of the publications into `vm` (every VM if `None`) at the
    /// socket that receives their datagrams now. Called after every change that can
    /// change it: a bind, connect or close of a UDP socket in the VM, a configuration
    /// applied. A route set here delivers nothing more to the socket it pointed at
    /// before, so a `close` pushed after this call follows every `message`.
    pub(crate) fn refresh_udp_routes(&self, vm: Option<&str>) {
        for publication in self.udp_publications.values() {
            if vm.is_some_and(|vm| vm != publication.vm) {
                continue;
            }
            publication
                .route
                .set(self.route_target(&publication.vm, publication.port));
        }
    }

    /// The VM socket bound on `port` that a datagram to the VM's loopback reaches: an
    /// exact address beats a wildcard, IPv4 loopback before IPv6.
    fn route_target(&self, vm_name: &str, port: u16) -> RouteTarget {
        let Some(vm) = self.vms.get(vm_name) else {
            return RouteTarget {
                receiver: None,
                drops: None,
            };
        };
        // A connected socket's peer filter applies per datagram (see `UdpRoute`).
        let receiver = [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
            .into_iter()
            .find_map(|dest: IpAddr| vm.udp_receiver(port, dest, |_| true))
            .and_then(|(bound_ip, key)| self.route_receiver(bound_ip, key));
        RouteTarget {
            receiver,
            drops: Some(Arc::clone(&vm.udp_drops)),
        }
    }

    fn route_receiver(&self, bound_ip: IpAddr, key: UdpKey) -> Option<RouteReceiver> {
        let sock = self.udp.get(&key)?;
        let session = self.sessions.get(&sock.session)?;
        let limits = self.vm_limits(&sock.vm);
        Some(RouteReceiver {
            out: Arc::clone(&session.out),
            socket: sock.id,
            bound_ip,
            connected: sock
                .connected
                .map(|peer| SocketAddr::new(canonical(peer.ip()), peer.port())),
            room: (limits.udp_receive_buffer, limits.event_queue_bytes),
        })
    }

    /// A guest's datagram from `key` to `dest` that answers a sender of one of its VM's
    /// UDP publications: sent from the published address. `None` if it is not a reply.
    pub(crate) fn published_reply(
        &self,
        key: UdpKey,
        dest: SocketAddr,
        payload: &[u8],
    ) -> Option<Result<(), WireError>> {
        let sock = &self.udp[&key];
        let port = sock.bound?.port();
        let dest = SocketAddr::new(canonical(dest.ip()), dest.port());
        let publication = self
            .udp_publications
            .values()
            .find(|p| p.vm == sock.vm && p.port == port && p.route.knows(dest))?;
        let sent = match publication.socket.get_ref().send_to(payload, dest) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                bump(&self.metrics.udp_host_dropped);
                Ok(())
            }
            Err(e) => Err(WireError::new(
                ErrorCode::from_io_error(&e),
                format!("send {dest}: {e}"),
            )),
        };
        Some(sent)
    }
}
