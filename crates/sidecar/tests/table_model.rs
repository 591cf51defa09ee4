//! The socket table as a state machine: random sequences of operations across two VMs
//! (`a` and `b`, one push-mode guest each, in-process), checked step by step against a
//! model small enough to be obviously right.
//!
//! The model's rules (PROTOCOL.md §7–§9, default config: no allow rules):
//! - `net.listen` on `(vm, port)` succeeds unless a server of the *same* VM holds the port
//!   (`0.0.0.0` and `127.0.0.1` overlap): `EADDRINUSE`. Another VM never conflicts.
//! - `net.connect` to `127.0.0.1:port` succeeds only to a listener of the same VM, else
//!   `ECONNREFUSED` (nothing leaves a VM); success is an `accept` then a `connect`.
//! - bytes written on one end arrive intact, as `data`, at the other end.
//! - `net.destroy` closes the socket (`close`), its peer sees `end` then `close`; later
//!   calls naming either id are `EBADF` (destroying again is a no-op, as a `close` race
//!   must be); a closed server's id is `EBADF` too.
//! - UDP: a bind conflicts only within its VM; a datagram to a port bound in the same VM
//!   arrives as `message` from the sender's address; to a port bound only in the other
//!   VM (or nowhere) it is dropped and counted in `vm.udp_dropped_no_receiver`.
//!
//! After every step both guests call `stats` (which the sidecar answers after every event
//! the step caused), so each step's events are compared exactly: same ids, same kinds,
//! same per-id order, same payloads, nothing more; and `stats` must agree with the model
//! (open sockets, listeners, drops, contiguous `seq`).
//!
//! This file drives the sidecar; the operations and the model are in
//! `table_model/model.rs`.

#[path = "table_model/model.rs"]
mod model;
mod support;

use model::{assert_events, op, Ev, Listener, Op, Stream, Udp, VmState, PORTS, VMS};
use proptest::prelude::*;
use serde_json::{json, Value};
use support::{Harness, Transport};

fn code(result: Result<Value, Value>) -> String {
    support::code(result)
}

struct World {
    vms: Vec<VmState>,
    // Dropped last: the guests go first, then the sidecar.
    _harness: Harness,
}

impl World {
    fn new() -> World {
        let harness = Harness::new();
        let vms = VMS
            .iter()
            .map(|vm| VmState::new(harness.guest_in(Transport::InProcess, vm)))
            .collect();
        World {
            vms,
            _harness: harness,
        }
    }

    fn step(&mut self, op: &Op) {
        let mut want: [Vec<Ev>; 2] = [Vec::new(), Vec::new()];
        // Accepted sockets are learned from their `accept` event after the sync.
        let mut accepted: Option<(usize, u64, usize)> = None;
        match op {
            &Op::Listen { vm, port, any } => {
                let port = PORTS[port];
                let host = if any { "0.0.0.0" } else { "127.0.0.1" };
                let v = &mut self.vms[vm];
                let result = v.call("net.listen", json!({"host": host, "port": port}), b"");
                if v.listening_on(port).is_some() {
                    assert_eq!(code(result), "EADDRINUSE", "{op:?}");
                } else {
                    let reply = result.unwrap_or_else(|e| panic!("{op:?}: {e}"));
                    assert_eq!(reply["local"]["address"], host);
                    assert_eq!(reply["local"]["port"], port);
                    let id = v.minted(&reply["server"]);
                    v.listeners.push(Listener {
                        id,
                        port,
                        open: true,
                    });
                }
            }
            Op::CloseServer { vm, pick } => {
                let v = &mut self.vms[*vm];
                let Some(i) = pick.choose(v.listeners.iter().map(|l| l.open)) else {
                    return self.sync_and_check(op, want, None);
                };
                let id = v.listeners[i].id;
                let result = v.call("net.server_close", json!({"server": id}), b"");
                if v.listeners[i].open {
                    assert_eq!(result, Ok(json!({})), "{op:?}");
                    v.listeners[i].open = false;
                    want[*vm].push(Ev::new("close", id));
                } else {
                    assert_eq!(code(result), "EBADF", "{op:?}");
                }
            }
            Op::Connect { vm, to } => {
                let vm = *vm;
                let v = &mut self.vms[vm];
                let held: Vec<u16> = v
                    .listeners
                    .iter()
                    .filter(|l| l.open)
                    .map(|l| l.port)
                    .collect();
                let port = to.choose(&held);
                let result = v.call(
                    "net.connect",
                    json!({"host": "127.0.0.1", "port": port}),
                    b"",
                );
                match v.listening_on(port).map(|l| l.id) {
                    None => assert_eq!(code(result), "ECONNREFUSED", "{op:?}"),
                    Some(server) => {
                        let reply = result.unwrap_or_else(|e| panic!("{op:?}: {e}"));
                        assert_eq!(reply["remote"]["port"], port, "{reply}");
                        assert_eq!(reply["remote"]["address"], "127.0.0.1", "{reply}");
                        let client = v.minted(&reply["socket"]);
                        want[vm].push(Ev::new("connect", client));
                        accepted = Some((vm, server, v.streams.len()));
                        v.accepts_due += 1;
                        v.streams.push(Stream {
                            id: client,
                            peer: v.streams.len() + 1,
                            open: true,
                            peer_gone: false,
                        });
                    }
                }
            }
            Op::Write { vm, pick, data } => {
                let v = &mut self.vms[*vm];
                let Some(i) = pick.choose(v.streams.iter().map(|s| s.open)) else {
                    return self.sync_and_check(op, want, None);
                };
                let (id, open, peer) = (v.streams[i].id, v.streams[i].open, v.streams[i].peer);
                let result = v.call("net.write", json!({"socket": id}), data);
                if open {
                    let reply = result.unwrap_or_else(|e| panic!("{op:?}: {e}"));
                    // The peer's window is wide open: everything is pushed at once.
                    assert_eq!(reply, json!({"buffered": 0, "need_drain": false}));
                    if !data.is_empty() && !v.streams[i].peer_gone {
                        let peer_id = v.streams[peer].id;
                        want[*vm].push(Ev {
                            payload: data.clone(),
                            ..Ev::new("data", peer_id)
                        });
                    }
                } else {
                    assert_eq!(code(result), "EBADF", "{op:?}");
                }
            }
            Op::Destroy { vm, pick } => {
                let v = &mut self.vms[*vm];
                let Some(i) = pick.choose(v.streams.iter().map(|s| s.open)) else {
                    return self.sync_and_check(op, want, None);
                };
                let (id, open, peer) = (v.streams[i].id, v.streams[i].open, v.streams[i].peer);
                let result = v.call("net.destroy", json!({"socket": id}), b"");
                // A closed id: a no-op, as a destroy racing with `close` must be.
                assert_eq!(result, Ok(json!({})), "{op:?}");
                if open {
                    want[*vm].push(Ev::new("close", id));
                    v.streams[i].open = false;
                    // As a kernel socket's close: the peer reads its end and stays
                    // half-closed until it closes too.
                    if !v.streams[i].peer_gone {
                        assert!(v.streams[peer].open, "a live end's peer is open");
                        let peer_id = v.streams[peer].id;
                        want[*vm].push(Ev::new("end", peer_id));
                        v.streams[peer].peer_gone = true;
                    }
                }
            }
            &Op::UdpBind { vm, port, any } => {
                let port = PORTS[port];
                let host = if any { "0.0.0.0" } else { "127.0.0.1" };
                let v = &mut self.vms[vm];
                let created = v
                    .call("dgram.createSocket", json!({"type": "udp4"}), b"")
                    .unwrap_or_else(|e| panic!("{op:?}: {e}"));
                let id = v.minted(&created["socket"]);
                let result = v.call(
                    "dgram.bind",
                    json!({"socket": id, "host": host, "port": port}),
                    b"",
                );
                if v.udp_on(port).is_some() {
                    assert_eq!(code(result), "EADDRINUSE", "{op:?}");
                    let closed = v.call("dgram.close", json!({"socket": id}), b"");
                    assert_eq!(closed, Ok(json!({})));
                    want[vm].push(Ev::new("close", id));
                } else {
                    let reply = result.unwrap_or_else(|e| panic!("{op:?}: {e}"));
                    assert_eq!(reply["local"]["address"], host);
                    assert_eq!(reply["local"]["port"], port);
                    v.udp.push(Udp {
                        id,
                        port,
                        open: true,
                    });
                }
            }
            Op::UdpSend { vm, from, to, data } => {
                let held: Vec<u16> = (self.vms.iter())
                    .flat_map(|v| v.udp.iter().filter(|u| u.open).map(|u| u.port))
                    .collect();
                let port = to.choose(&held);
                let v = &mut self.vms[*vm];
                let from = from
                    .as_ref()
                    .and_then(|pick| pick.choose(v.udp.iter().map(|u| u.open)));
                let (sender, sender_port, open) = match from {
                    Some(i) => (v.udp[i].id, v.udp[i].port, v.udp[i].open),
                    None => {
                        let (id, port) = match v.sender {
                            Some(sender) => sender,
                            None => {
                                let created = v
                                    .call("dgram.createSocket", json!({"type": "udp4"}), b"")
                                    .unwrap_or_else(|e| panic!("{op:?}: {e}"));
                                let id = v.minted(&created["socket"]);
                                let bound = v
                                    .call("dgram.bind", json!({"socket": id, "port": 0}), b"")
                                    .unwrap_or_else(|e| panic!("{op:?}: {e}"));
                                let port = bound["local"]["port"].as_u64().unwrap() as u16;
                                assert!(!PORTS.contains(&port), "ephemeral {port}");
                                v.sender = Some((id, port));
                                (id, port)
                            }
                        };
                        (id, port, true)
                    }
                };
                let result = v.call(
                    "dgram.send",
                    json!({"socket": sender, "host": "127.0.0.1", "port": port}),
                    data,
                );
                if !open {
                    assert_eq!(code(result), "EBADF", "{op:?}");
                } else {
                    assert_eq!(result, Ok(json!({"bytes": data.len()})), "{op:?}");
                    match v.udp_on(port).map(|u| u.id) {
                        Some(receiver) => want[*vm].push(Ev {
                            payload: data.clone(),
                            from_port: Some(sender_port.into()),
                            ..Ev::new("message", receiver)
                        }),
                        // Not in this VM (maybe in the other): dropped and counted here.
                        None => v.dropped += 1,
                    }
                }
            }
            Op::UdpClose { vm, pick } => {
                let v = &mut self.vms[*vm];
                let Some(i) = pick.choose(v.udp.iter().map(|u| u.open)) else {
                    return self.sync_and_check(op, want, None);
                };
                let id = v.udp[i].id;
                let result = v.call("dgram.close", json!({"socket": id}), b"");
                // As for `net.destroy`, closing a closed id again is a no-op.
                assert_eq!(result, Ok(json!({})), "{op:?}");
                if v.udp[i].open {
                    v.udp[i].open = false;
                    want[*vm].push(Ev::new("close", id));
                }
            }
        }
        self.sync_and_check(op, want, accepted)
    }

    /// Syncs both guests and compares their events with `want`. For a connect, the
    /// `accept` is taken first: its socket id (new, and the client's peer) is learned, and
    /// the connection acknowledged as a guest that takes it does.
    fn sync_and_check(
        &mut self,
        op: &Op,
        want: [Vec<Ev>; 2],
        accepted: Option<(usize, u64, usize)>,
    ) {
        for (vm, want) in want.into_iter().enumerate() {
            let v = &mut self.vms[vm];
            let mut got = v.sync();
            if let Some((accept_vm, server, client_index)) = accepted {
                if accept_vm == vm {
                    let at = got
                        .iter()
                        .position(|e| e.kind == "accept")
                        .unwrap_or_else(|| panic!("no accept after {op:?}: {got:?}"));
                    let accept = got.remove(at);
                    assert_eq!(accept.id, server, "accepted by the listener");
                    let event_socket = v.minted(&accept.accepted.into());
                    v.accepts_due -= 1;
                    v.streams.push(Stream {
                        id: event_socket,
                        peer: client_index,
                        open: true,
                        peer_gone: false,
                    });
                    v.guest.send_call(
                        "net.credit",
                        json!({"socket": event_socket, "bytes": 0}),
                        b"",
                        true,
                    );
                }
            }
            // Give back the credit the data took, as a consuming guest does.
            for e in got.iter().filter(|e| e.kind == "data") {
                v.guest.send_call(
                    "net.credit",
                    json!({"socket": e.id, "bytes": e.payload.len()}),
                    b"",
                    true,
                );
            }
            assert_events(VMS[vm], op, got, want);
        }
    }
}

/// `PROPTEST_CASES` if set, else `default`.
fn cases_or(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn run(ops: &[Op]) {
    let mut world = World::new();
    for op in ops {
        world.step(op);
    }
}

proptest! {
    // 32 cases of 8–30 steps: well under a second. `PROPTEST_CASES=5000` for a soak.
    #![proptest_config(ProptestConfig::with_cases(cases_or(32)))]

    #[test]
    fn socket_table_follows_the_model(ops in proptest::collection::vec(op(), 8..=30)) {
        run(&ops);
    }
}
