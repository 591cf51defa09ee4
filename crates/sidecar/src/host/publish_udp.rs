//! Published UDP ports: datagrams to a host address reach the UDP socket a VM has bound
//! on the published port, with the real sender as `remote`; the guest's replies to those
//! senders leave from the published address (so they look like replies to the client),
//! without the operator having to allow every client in the policy — like the reply
//! direction of `docker -p 53:53/udp`.
//!
//! Receiving runs on the RPC loop, woken by the host socket's readiness (it must find the
//! VM's socket in the socket table). The senders a publication has heard from are kept
//! (at most [`MAX_FLOWS`], the oldest forgotten first) so a reply can be routed back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

use readiness::{Action, Interest, Registration};
use sidecar_protocol::{ErrorCode, WireError, MAX_UDP_PAYLOAD};

use crate::addr::{canonical, listener_matches};
use crate::core::{Core, UdpKey};
use crate::metrics::bump;

/// Senders remembered per publication for replies.
pub const MAX_FLOWS: usize = 4096;

/// A UDP publication the RPC loop serves: where it leads, its socket, its senders.
pub struct UdpPublication {
    pub vm: String,
    pub port: u16,
    pub socket: Rc<Registration<UdpSocket>>,
    flows: VecDeque<SocketAddr>,
}

impl UdpPublication {
    fn remember(&mut self, from: SocketAddr) {
        if self.flows.contains(&from) {
            return;
        }
        if self.flows.len() == MAX_FLOWS {
            self.flows.pop_front();
        }
        self.flows.push_back(from);
    }
}

/// Serves one published UDP address until its task is aborted.
pub async fn serve(core_rc: Rc<RefCell<Core>>, host: SocketAddr, socket: UdpSocket) {
    let registration =
        core_rc
            .borrow()
            .host
            .reactor
            .register(socket, Interest::READABLE, Action::Wait);
    let socket = match registration {
        Ok(reg) => Rc::new(reg),
        Err(e) => {
            tracing::error!(%e, %host, "cannot watch a published UDP port");
            return;
        }
    };
    core_rc
        .borrow_mut()
        .attach_udp_publication(host, Rc::clone(&socket));
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
    loop {
        match socket.try_read_with(|s| s.recv_from(&mut buf)) {
            Ok((n, from)) => core_rc
                .borrow_mut()
                .published_datagram(host, &buf[..n], from),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let far = Instant::now() + Duration::from_secs(86_400);
                if socket.readable_until(far).await.is_err() {
                    return;
                }
            }
            // ICMP reports for earlier replies and the like: keep serving.
            Err(_) => {}
        }
    }
}

impl Core {
    fn attach_udp_publication(&mut self, host: SocketAddr, socket: Rc<Registration<UdpSocket>>) {
        if let Some(target) = self.published_udp_targets.get(&host).cloned() {
            self.udp_publications.insert(
                host,
                UdpPublication {
                    vm: target.vm,
                    port: target.port,
                    socket,
                    flows: VecDeque::new(),
                },
            );
        }
    }

    /// A datagram to published `host`: to the VM's socket bound on the published port
    /// (dropped and counted if none, or no room).
    fn published_datagram(&mut self, host: SocketAddr, payload: &[u8], from: SocketAddr) {
        let from = SocketAddr::new(canonical(from.ip()), from.port());
        let Some(target) = self.published_udp_targets.get(&host).cloned() else {
            return;
        };
        let receiver = self.vms.get(&target.vm).and_then(|vm| {
            let on_port = vm.udp_on(target.port);
            let matches = |dest: IpAddr| {
                on_port
                    .iter()
                    .filter(move |(ip, _)| listener_matches(*ip, dest))
                    .min_by_key(|(ip, _)| ip.is_unspecified())
                    .copied()
            };
            matches(Ipv4Addr::LOCALHOST.into()).or_else(|| matches(Ipv6Addr::LOCALHOST.into()))
        });
        let Some(receiver) = receiver else {
            if let Some(vm) = self.vms.get_mut(&target.vm) {
                vm.udp_dropped_no_receiver += 1;
            }
            return;
        };
        if let Some(publication) = self.udp_publications.get_mut(&host) {
            publication.remember(from);
        }
        self.deliver_datagram(receiver, from, payload);
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
            .find(|p| p.vm == sock.vm && p.port == port && p.flows.contains(&dest))?;
        let sent = match publication.socket.get_ref().send_to(payload, dest) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
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
