//! The table model's half that knows nothing of the sidecar: the operations a case is
//! made of (and their generators), and what the model holds per VM with the checks of a
//! step's outcome against it. The driver (`table_model.rs`) runs the operations against a
//! live sidecar and asks this model what should have happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

use crate::support::RawGuest;

pub const PORTS: [u16; 3] = [7001, 7002, 7003];
pub const VMS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
pub enum Op {
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
pub struct Pick {
    pub live: bool,
    pub at: Index,
}

impl Pick {
    pub fn choose(&self, open: impl Iterator<Item = bool>) -> Option<usize> {
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
pub struct Port {
    pub held: bool,
    pub port: usize,
    pub at: Index,
}

impl Port {
    pub fn choose(&self, held: &[u16]) -> u16 {
        match (self.held, held.is_empty()) {
            (true, false) => held[self.at.index(held.len())],
            _ => PORTS[self.port],
        }
    }
}

pub fn pick() -> impl Strategy<Value = Pick> {
    (prop::bool::weighted(0.8), any::<Index>()).prop_map(|(live, at)| Pick { live, at })
}

pub fn port_to() -> impl Strategy<Value = Port> {
    (prop::bool::weighted(0.7), 0..PORTS.len(), any::<Index>()).prop_map(|(held, port, at)| Port {
        held,
        port,
        at,
    })
}

pub fn op() -> impl Strategy<Value = Op> {
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
pub struct Ev {
    pub kind: String,
    /// The socket or server the event is about.
    pub id: u64,
    pub payload: Vec<u8>,
    /// `message` only: the sender's port (its address must be 127.0.0.1).
    pub from_port: Option<u64>,
    /// `accept` only: the new socket (`id` is the server).
    pub accepted: Option<u64>,
}

impl Ev {
    pub fn new(kind: &str, id: u64) -> Ev {
        Ev {
            kind: kind.into(),
            id,
            payload: Vec::new(),
            from_port: None,
            accepted: None,
        }
    }

    pub fn of(event: &Value, payload: Vec<u8>) -> Ev {
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

pub struct Listener {
    pub id: u64,
    pub port: u16,
    pub open: bool,
}

pub struct Stream {
    pub id: u64,
    /// Index of the other end in the same VM's `streams`.
    pub peer: usize,
    pub open: bool,
    /// The peer closed: this end is half-closed (its writes are taken, for nobody).
    pub peer_gone: bool,
}

pub struct Udp {
    pub id: u64,
    pub port: u16,
    pub open: bool,
}

/// One VM: its guest and what the model says it holds.
pub struct VmState {
    pub guest: RawGuest,
    pub last_seq: u64,
    /// Every id the sidecar minted for this session (they must never repeat).
    pub ids: BTreeSet<u64>,
    pub listeners: Vec<Listener>,
    pub streams: Vec<Stream>,
    pub udp: Vec<Udp>,
    /// The ephemeral UDP sender: (socket id, bound port), made on first use.
    pub sender: Option<(u64, u16)>,
    pub dropped: u64,
    /// Connections accepted whose `accept` event has not been taken yet.
    pub accepts_due: usize,
}

impl VmState {
    pub fn new(guest: RawGuest) -> VmState {
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
    pub fn minted(&mut self, id: &Value) -> u64 {
        let id = id.as_u64().unwrap_or_else(|| panic!("not an id: {id}"));
        assert!(id > 0, "ids start at 1");
        assert!(self.ids.insert(id), "id {id} was reused: {:?}", self.ids);
        id
    }

    pub fn call(&mut self, method: &str, params: Value, payload: &[u8]) -> Result<Value, Value> {
        self.guest.call(method, params, payload)
    }

    pub fn listening_on(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.open && l.port == port)
    }

    pub fn udp_on(&self, port: u16) -> Option<&Udp> {
        self.udp.iter().find(|u| u.open && u.port == port)
    }

    pub fn open_sockets(&self) -> usize {
        self.listeners.iter().filter(|l| l.open).count()
            + self.streams.iter().filter(|s| s.open).count()
            + self.udp.iter().filter(|u| u.open).count()
            + usize::from(self.sender.is_some())
            + self.accepts_due
    }

    /// Every event the steps so far caused (the `stats` reply comes after them), checked
    /// for contiguous `seq`; then `stats` against the model.
    pub fn sync(&mut self) -> Vec<Ev> {
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
pub fn assert_events(vm: &str, op: &Op, mut got: Vec<Ev>, mut want: Vec<Ev>) {
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
