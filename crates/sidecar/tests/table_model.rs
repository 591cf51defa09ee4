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

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use support::{Harness, RawGuest, Transport};

const PORTS: [u16; 3] = [7001, 7002, 7003];
const VMS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Op {
    Listen {
        vm: usize,
        port: usize,
        any: bool,
    },
    CloseServer {
        vm: usize,
        pick: Pick,
    },
    Connect {
        vm: usize,
        to: Port,
    },
    /// Writes on one end of a connection (open or already closed).
    Write {
        vm: usize,
        pick: Pick,
        data: Vec<u8>,
    },
    Destroy {
        vm: usize,
        pick: Pick,
    },
    UdpBind {
        vm: usize,
        port: usize,
        any: bool,
    },
    /// From the VM's own ephemeral sender (`from: None`) or one of its bound sockets, to
    /// a port of 127.0.0.1.
    UdpSend {
        vm: usize,
        from: Option<Pick>,
        to: Port,
        data: Vec<u8>,
    },
    UdpClose {
        vm: usize,
        pick: Pick,
    },
}

/// Which of the model's sockets (or servers) an op names: mostly a live one, sometimes
/// any, closed ones included (whose ids must then be `EBADF` or a no-op).
#[derive(Debug, Clone)]
struct Pick {
    live: bool,
    at: Index,
}

impl Pick {
    fn choose(&self, open: impl Iterator<Item = bool>) -> Option<usize> {
        let open: Vec<bool> = open.collect();
        let live: Vec<usize> = (0..open.len()).filter(|&i| open[i]).collect();
        match (self.live, live.is_empty(), open.is_empty()) {
            (_, _, true) => None,
            (true, false, _) => Some(live[self.at.index(live.len())]),
            _ => Some(self.at.index(open.len())),
        }
    }
}

/// A destination port: mostly one somebody holds (for UDP: in either VM, so datagrams
/// also go to ports bound only in the other VM), else any of [`PORTS`].
#[derive(Debug, Clone)]
struct Port {
    held: bool,
    port: usize,
    at: Index,
}

impl Port {
    fn choose(&self, held: &[u16]) -> u16 {
        match (self.held, held.is_empty()) {
            (true, false) => held[self.at.index(held.len())],
            _ => PORTS[self.port],
        }
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    (prop::bool::weighted(0.8), any::<Index>()).prop_map(|(live, at)| Pick { live, at })
}

fn port_to() -> impl Strategy<Value = Port> {
    (prop::bool::weighted(0.7), 0..PORTS.len(), any::<Index>()).prop_map(|(held, port, at)| Port {
        held,
        port,
        at,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let vm = 0..2usize;
    let port = 0..PORTS.len();
    let data = proptest::collection::vec(any::<u8>(), 0..48);
    prop_oneof![
        3 => (vm.clone(), port.clone(), any::<bool>())
            .prop_map(|(vm, port, any)| Op::Listen { vm, port, any }),
        1 => (vm.clone(), pick()).prop_map(|(vm, pick)| Op::CloseServer { vm, pick }),
        4 => (vm.clone(), port_to()).prop_map(|(vm, to)| Op::Connect { vm, to }),
        5 => (vm.clone(), pick(), data.clone())
            .prop_map(|(vm, pick, data)| Op::Write { vm, pick, data }),
        2 => (vm.clone(), pick()).prop_map(|(vm, pick)| Op::Destroy { vm, pick }),
        2 => (vm.clone(), port, any::<bool>())
            .prop_map(|(vm, port, any)| Op::UdpBind { vm, port, any }),
        3 => (vm.clone(), proptest::option::of(pick()), port_to(), data)
            .prop_map(|(vm, from, to, data)| Op::UdpSend { vm, from, to, data }),
        1 => (vm, pick()).prop_map(|(vm, pick)| Op::UdpClose { vm, pick }),
    ]
}

/// One event, reduced to what the model predicts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    kind: String,
    /// The socket or server the event is about.
    id: u64,
    payload: Vec<u8>,
    /// `message` only: the sender's port (its address must be 127.0.0.1).
    from_port: Option<u64>,
    /// `accept` only: the new socket (`id` is the server).
    accepted: Option<u64>,
}

impl Ev {
    fn new(kind: &str, id: u64) -> Ev {
        Ev {
            kind: kind.into(),
            id,
            payload: Vec::new(),
            from_port: None,
            accepted: None,
        }
    }

    fn of(event: &Value, payload: Vec<u8>) -> Ev {
        let kind = event["event"].as_str().expect("event kind").to_owned();
        let (id, accepted) = match kind.as_str() {
            "accept" => (event["server"].as_u64(), event["socket"].as_u64()),
            _ => (event["socket"].as_u64().or(event["server"].as_u64()), None),
        };
        let id = id.unwrap_or_else(|| panic!("an event about nothing: {event}"));
        if kind == "close" {
            assert_eq!(event["had_error"], false, "{event}");
        }
        let from_port = (kind == "message").then(|| {
            assert_eq!(event["remote"]["address"], "127.0.0.1", "{event}");
            event["remote"]["port"].as_u64().expect("sender port")
        });
        Ev {
            kind,
            id,
            payload,
            from_port,
            accepted,
        }
    }
}

struct Listener {
    id: u64,
    port: u16,
    open: bool,
}

struct Stream {
    id: u64,
    /// Index of the other end in the same VM's `streams`.
    peer: usize,
    open: bool,
}

struct Udp {
    id: u64,
    port: u16,
    open: bool,
}

/// One VM: its guest and what the model says it holds.
struct VmState {
    guest: RawGuest,
    last_seq: u64,
    /// Every id the sidecar minted for this session (they must never repeat).
    ids: BTreeSet<u64>,
    listeners: Vec<Listener>,
    streams: Vec<Stream>,
    udp: Vec<Udp>,
    /// The ephemeral UDP sender: (socket id, bound port), made on first use.
    sender: Option<(u64, u16)>,
    dropped: u64,
    /// Connections accepted whose `accept` event has not been taken yet.
    accepts_due: usize,
}

impl VmState {
    fn new(guest: RawGuest) -> VmState {
        VmState {
            guest,
            last_seq: 0,
            ids: BTreeSet::new(),
            listeners: Vec::new(),
            streams: Vec::new(),
            udp: Vec::new(),
            sender: None,
            dropped: 0,
            accepts_due: 0,
        }
    }

    /// A new id from a reply or event: never seen before in this session.
    fn minted(&mut self, id: &Value) -> u64 {
        let id = id.as_u64().unwrap_or_else(|| panic!("not an id: {id}"));
        assert!(id > 0, "ids start at 1");
        assert!(self.ids.insert(id), "id {id} was reused: {:?}", self.ids);
        id
    }

    fn call(&mut self, method: &str, params: Value, payload: &[u8]) -> Result<Value, Value> {
        self.guest.call(method, params, payload)
    }

    fn listening_on(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.open && l.port == port)
    }

    fn udp_on(&self, port: u16) -> Option<&Udp> {
        self.udp.iter().find(|u| u.open && u.port == port)
    }

    fn open_sockets(&self) -> usize {
        self.listeners.iter().filter(|l| l.open).count()
            + self.streams.iter().filter(|s| s.open).count()
            + self.udp.iter().filter(|u| u.open).count()
            + usize::from(self.sender.is_some())
            + self.accepts_due
    }

    /// Every event the steps so far caused (the `stats` reply comes after them), checked
    /// for contiguous `seq`; then `stats` against the model.
    fn sync(&mut self) -> Vec<Ev> {
        let stats = self.guest.stats();
        let mut events = Vec::new();
        while self.guest.queued_events() > 0 {
            let (event, payload) = self.guest.event();
            let seq = event["seq"].as_u64().expect("seq");
            assert_eq!(seq, self.last_seq + 1, "seq gap at {event}");
            self.last_seq = seq;
            events.push(Ev::of(&event, payload));
        }
        // Nothing else is on its way: the reply to `stats` was the last frame.
        let after = self.guest.recv(Instant::now());
        assert!(after.is_none(), "a frame after the stats reply: {after:?}");
        let session = &stats["session"];
        assert_eq!(session["last_seq"], self.last_seq, "{stats}");
        assert_eq!(session["parked_calls"], 0, "{stats}");
        let open = self.open_sockets();
        assert_eq!(session["open_handles"], open, "open handles: {stats}");
        let vm = &stats["vm"];
        assert_eq!(vm["sockets"], open, "sockets: {stats}");
        let listeners = self.listeners.iter().filter(|l| l.open).count();
        assert_eq!(vm["listeners"], listeners, "listeners: {stats}");
        assert_eq!(
            vm["udp_dropped_no_receiver"], self.dropped,
            "drops: {stats}"
        );
        assert_eq!(vm["udp_dropped_no_room"], 0, "{stats}");
        assert_eq!(stats["health"]["fallback_found_work"], 0, "{stats}");
        events
    }
}

/// The same events, compared per id (the protocol orders events per socket / server,
/// not across them).
fn assert_events(vm: &str, op: &Op, mut got: Vec<Ev>, mut want: Vec<Ev>) {
    let by_id = |events: &mut Vec<Ev>| {
        let mut map: BTreeMap<u64, Vec<Ev>> = BTreeMap::new();
        for e in events.drain(..) {
            map.entry(e.id).or_default().push(e);
        }
        map
    };
    let (got, want) = (by_id(&mut got), by_id(&mut want));
    assert_eq!(got, want, "events in VM {vm} after {op:?}");
}

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
                    if !data.is_empty() {
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
                    assert!(v.streams[peer].open, "ends close together");
                    want[*vm].push(Ev::new("close", id));
                    let peer_id = v.streams[peer].id;
                    want[*vm].push(Ev::new("end", peer_id));
                    want[*vm].push(Ev::new("close", peer_id));
                    v.streams[i].open = false;
                    v.streams[peer].open = false;
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
