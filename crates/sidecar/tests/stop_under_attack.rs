//! A sidecar under attack still stops when told to: for each attack the `hostile_p99`
//! bench row runs (the fd exhaustion one is in `fd_exhaustion.rs`), a `sidecar serve`
//! child is attacked until the attack is seen in full swing (a sign the sidecar gives,
//! never a sleep), then SIGTERMed: it must exit with status 0 within its flush grace
//! period and a margin, its Unix socket file removed ([`Served::terminate`]).
//!
//! The DNS stall needs a resolver that never answers, which only an embedder can inject,
//! so it stops an in-process [`sidecar::Sidecar`] (`shutdown` and drop) instead, while
//! its resolver calls are stuck.

mod support;

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidecar::SidecarConfig;
use support::bystander::{first_error_code, frames_until_eof};
use support::child::{Served, STOP_BOUND};
use support::{encode, Incoming, RawGuest, Wire, ALL_CAPS, DEADLINE};

/// `session_outbound_bytes` in the non-reading attack.
const CAP: usize = 64 * 1024;

/// VM a (the attacker's, secret `sa`) and VM b (`sb`), after `limits` (`[limits]` lines).
fn config(limits: &str) -> String {
    format!(
        "[limits]\n{limits}\n\
         [[vm]]\nname = \"a\"\nsecret = \"sa\"\n\
         [[vm]]\nname = \"b\"\nsecret = \"sb\"\n"
    )
}

/// A guest of VM a that asks in its hello for a credit window far past the outbound cap,
/// so that only the cap can hold back what is sent to it.
fn attach_wide_window(served: &Served) -> RawGuest {
    let mut guest = RawGuest::new(Wire::Unix(served.connect()));
    let params = json!({"version": 1, "vm": "a", "secret": "sa",
                        "capabilities": ALL_CAPS, "credit": 64u64 << 20});
    guest.hello = guest.call("hello", params, b"").expect("hello refused");
    guest
}

/// A hello on a new connection that gives up quietly (`None`) where the sidecar does
/// not answer it: a sidecar that is stopping closes connections instead.
fn try_attach(socket: &Path) -> Option<RawGuest> {
    let stream = UnixStream::connect(socket).ok()?;
    let mut guest = RawGuest::new(Wire::Unix(stream));
    let hello = json!({"type": "call", "id": 1, "method": "hello",
        "params": {"version": 1, "vm": "a", "secret": "sa", "capabilities": ALL_CAPS}});
    guest.send_raw(encode(&hello, b"")).then_some(())?;
    match guest.recv(Instant::now() + DEADLINE)? {
        Incoming::Reply { outcome: Ok(_), .. } => Some(guest),
        _ => None,
    }
}

/// `sink` listens on `port`; `writer` opens `n` connections to it, each taken by the
/// sink (its accept read, acknowledged). The writer's socket ids.
fn connections_to(sink: &mut RawGuest, writer: &mut RawGuest, port: u16, n: usize) -> Vec<u64> {
    sink.call("net.listen", json!({"port": port}), b"").unwrap();
    (0..n)
        .map(|_| {
            let (sock, _) = writer.connect_ok("localhost", port);
            let (accept, _, _) = sink.event_of("accept");
            let take = json!({"socket": accept["socket"], "bytes": 0});
            sink.send_call("net.credit", take, b"", true);
            sock
        })
        .collect()
}

/// Writes `chunk` bytes at a time, round robin over `socks`, until a write's reply says
/// its bytes stay in the sidecar (`buffered > 0`): with the reader's window wide open,
/// only its session's outbound cap holds them back. Bytes written; panics past `limit`.
fn write_until_held(writer: &mut RawGuest, socks: &[u64], chunk: usize, limit: usize) -> usize {
    let mut written = 0;
    loop {
        for sock in socks {
            let reply = writer
                .call("net.write", json!({"socket": sock}), &vec![7u8; chunk])
                .expect("net.write");
            written += chunk;
            if reply["buffered"].as_u64().unwrap() > 0 {
                return written;
            }
            assert!(written < limit, "{written} bytes pushed: never held back");
        }
    }
}

/// A guest floods calls and never reads their replies; in-VM connections write to a
/// guest that never reads. Both are held back at `session_outbound_bytes` when SIGTERM
/// comes; the sidecar waits for them no longer than its grace period.
#[test]
fn sigterm_stops_the_sidecar_while_non_readers_are_held_back_at_their_cap() {
    let served = Served::start(&config(&format!("session_outbound_bytes = {CAP}")), None);
    let mut writer = served.attach("a", "sa");
    // The flooder takes one in-VM connection (its probe), then floods: enough stats
    // calls that their replies pass the cap and the kernel's buffers, few enough that
    // one write of them all never waits (a Unix socket's buffer holds them: 8 KiB on
    // macOS). It reads nothing from here on.
    let mut flooder = attach_wide_window(&served);
    let probe = connections_to(&mut flooder, &mut writer, 7000, 1);
    let calls = if cfg!(target_os = "linux") { 600 } else { 100 };
    let flood: Vec<u8> = (0..calls)
        .flat_map(|id| {
            let call = json!({"type": "call", "id": 1000 + id, "method": "stats", "params": {}});
            encode(&call, b"")
        })
        .collect();
    assert!(flooder.send_raw(flood));
    // In full swing: a probe write of a few bytes stays in the sidecar, so the flooder's
    // session is at its cap (and its calls are no longer read). The probe's own bytes
    // are far under the cap: the replies filled it.
    let probed = write_until_held(&mut writer, &probe, 64, CAP / 4);
    assert!(probed < CAP / 4, "{probed}");
    // In-VM connections to a sink that never reads, written until they are held too.
    let mut sink = attach_wide_window(&served);
    let socks = connections_to(&mut sink, &mut writer, 7001, 4);
    write_until_held(&mut writer, &socks, 16 * 1024, 2 << 20);
    let buffered = writer.stats()["vm"]["buffered_bytes"].as_u64().unwrap();
    assert!(buffered > 0, "nothing held back");

    let log = served.terminate();
    // The non-readers held the flush up to the grace period, and no longer.
    assert!(
        log.iter().any(|l| l.contains("did not read")),
        "the non-readers were flushed? {log:#?}"
    );
    drop((flooder, sink, writer));
}

/// Connections that never say hello fill the cap on unattached connections (the oldest
/// is evicted), and a stream of connections announcing a 16 MiB frame before hello is
/// refused, one after another, when SIGTERM comes.
#[test]
fn sigterm_stops_the_sidecar_under_a_pre_hello_flood() {
    const WAITING: usize = 16;
    let limits = format!("unattached_connections = {WAITING}\nhello_timeout_ms = 600000");
    let served = Served::start(&config(&limits), None);
    // Twice the cap of silent connections: the first ones are evicted (EAGAIN).
    let mut silent: Vec<RawGuest> = (0..2 * WAITING)
        .map(|_| RawGuest::new(Wire::Unix(served.connect())))
        .collect();
    let evicted = frames_until_eof(&mut silent[0]);
    assert_eq!(first_error_code(&evicted).as_deref(), Some("EAGAIN"));
    // Announcers, one after another, until the sidecar is gone (or the test is done).
    let (refused, refusals) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (socket, stopped) = (served.socket.clone(), Arc::clone(&stop));
    let announcers = thread::spawn(move || {
        let mut total = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            let Ok(mut stream) = UnixStream::connect(&socket) else {
                break;
            };
            let mut bytes = (16u32 << 20).to_be_bytes().to_vec();
            bytes.extend(2u32.to_be_bytes());
            bytes.extend(vec![b'x'; 64 * 1024]);
            // The sidecar may close before it all went out: that is the point.
            let _ = stream.write_all(&bytes);
            let mut guest = RawGuest::new(Wire::Unix(stream));
            let mut frames = Vec::new();
            while let Some(frame) = guest.recv(Instant::now() + DEADLINE) {
                frames.push(frame);
            }
            if first_error_code(&frames).as_deref() == Some("EMSGSIZE") {
                total += 1;
                let _ = refused.send(());
            }
        }
        total
    });
    // In full swing: the refusals keep coming.
    for _ in 0..20 {
        refusals
            .recv_timeout(DEADLINE)
            .expect("no EMSGSIZE refusal of an announced 16 MiB frame");
    }

    served.terminate();
    stop.store(true, Ordering::Relaxed);
    assert!(announcers.join().unwrap() >= 20);
    drop(silent);
}

/// Attached sessions, one after another, each sending a frame whose header is far over
/// `max_header` (refused `EMSGSIZE` from its prefix, the session closed) when SIGTERM
/// comes.
#[test]
fn sigterm_stops_the_sidecar_under_a_big_header_flood() {
    let served = Served::start(&config("max_header = 65536"), None);
    let (refused, refusals) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (socket, stopped) = (served.socket.clone(), Arc::clone(&stop));
    let attacker = thread::spawn(move || {
        let mut total = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            let Some(mut session) = try_attach(&socket) else {
                break;
            };
            // A JSON map that never closes, announced at 16 MiB.
            let total_len: u32 = 16 << 20;
            let mut frame = total_len.to_be_bytes().to_vec();
            frame.extend((total_len - 4).to_be_bytes());
            frame.extend(br#"{"method":"stats","id":7,"x":["#);
            frame.resize(256 * 1024, b'1');
            // The sidecar may close before it all went out: that is the point.
            session.send_raw(frame);
            let mut frames = Vec::new();
            while let Some(frame) = session.recv(Instant::now() + DEADLINE) {
                frames.push(frame);
            }
            if first_error_code(&frames).as_deref() == Some("EMSGSIZE") {
                total += 1;
                let _ = refused.send(());
            }
        }
        total
    });
    // In full swing: the refusals keep coming.
    for _ in 0..20 {
        refusals
            .recv_timeout(DEADLINE)
            .expect("no EMSGSIZE refusal of a big header");
    }

    served.terminate();
    stop.store(true, Ordering::Relaxed);
    assert!(attacker.join().unwrap() >= 20);
}

/// `vm.udp_dropped_no_room` as a guest of the VM sees it.
fn udp_dropped(guest: &mut RawGuest) -> u64 {
    guest.stats()["vm"]["udp_dropped_no_room"].as_u64().unwrap()
}

/// A guest floods datagrams in its VM to a receiver that never reads: the receiver's
/// event queue is full and the drops keep being counted when SIGTERM comes.
#[test]
fn sigterm_stops_the_sidecar_under_a_udp_flood_to_a_non_reader() {
    let served = Served::start(&config("event_queue_bytes = 65536"), None);
    let mut receiver = served.attach("a", "sa");
    let r = support::udp_socket(&mut receiver, "udp4");
    let bound = receiver
        .call("dgram.bind", json!({"socket": r, "host": "127.0.0.1"}), b"")
        .unwrap();
    let port = bound["local"]["port"].clone();
    let mut sender = served.attach("a", "sa");
    let s = support::udp_socket(&mut sender, "udp4");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    // Sends until the sidecar closes the session (or the test is done).
    let flood = thread::spawn(move || {
        let header = json!({"type": "call", "id": 1, "method": "dgram.send", "noreply": true,
                            "params": {"socket": s, "host": "127.0.0.1", "port": port}});
        let datagram = encode(&header, &[0x33; 64]);
        let burst: Vec<u8> = datagram.repeat(64);
        while !stopped.load(Ordering::Relaxed) && sender.send_raw(burst.clone()) {}
    });
    // In full swing: datagrams are dropped for want of room, and still are.
    let mut watcher = served.attach("a", "sa");
    let deadline = Instant::now() + DEADLINE;
    let mut first = 0;
    while first == 0 {
        assert!(Instant::now() < deadline, "no datagram dropped");
        first = udp_dropped(&mut watcher);
    }
    while udp_dropped(&mut watcher) == first {
        assert!(Instant::now() < deadline, "the drops stopped at {first}");
    }

    served.terminate();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    drop((receiver, watcher));
}

/// A resolver whose every call blocks until released; counts the calls blocked now.
#[derive(Default)]
struct Stall {
    blocked: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Stall {
    fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
        let mut state = self.blocked.lock().unwrap();
        state.0 += 1;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
        state.0 -= 1;
        Err(std::io::Error::other("released"))
    }

    /// Waits (bounded) until `n` calls are blocked.
    fn wait_blocked(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        let mut state = self.blocked.lock().unwrap();
        while state.0 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} resolver calls blocked, not {n}",
                state.0
            );
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    fn blocked(&self) -> usize {
        self.blocked.lock().unwrap().0
    }
}

/// Releases the stalled calls when dropped, so no worker outlives a failed test blocked.
struct Release(Arc<Stall>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.blocked.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.0.changed.notify_all();
    }
}

/// Hundreds of lookups of guest-chosen names against a resolver that never answers: the
/// pool's workers the VM may use are stuck in it, more lookups wait in the queue, the
/// rest are refused. `shutdown` (and a drop) return within the bound anyway, while the
/// resolver calls are still stuck, the socket file removed and the attacker's stream
/// closed.
#[test]
fn a_sidecar_stops_while_its_resolver_never_answers() {
    for by_drop in [false, true] {
        let stall = Arc::new(Stall::default());
        let _release = Release(Arc::clone(&stall));
        let resolver = Arc::clone(&stall);
        let mut config = SidecarConfig::default()
            .with_vm("a", "sa")
            .with_vm("b", "sb")
            .with_allow("203.0.113.0/24:443".parse().unwrap())
            .with_resolver(move |host: &str| resolver.lookup(host));
        // Longer than the test: the lookups are still stalled when the sidecar stops.
        config.limits.dns_timeout = Duration::from_secs(600);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let sidecar = sidecar::Sidecar::start(config).unwrap();
        sidecar.listen_unix(&socket).unwrap();
        let mut attacker =
            RawGuest::attach(Wire::Unix(UnixStream::connect(&socket).unwrap()), "a", "sa");
        for i in 0..300 {
            let host = format!("stall-{i}.exfil-probe.example");
            attacker.send_call("dns.lookup", json!({"host": host}), b"", false);
        }
        // In full swing: every worker the VM may hold is stuck (all but one of the
        // pool's), and lookups wait behind them.
        let threads = sidecar::Limits::default().dns_threads;
        stall.wait_blocked(threads - 1);
        let deadline = Instant::now() + DEADLINE;
        let pool = loop {
            let pool: Value = sidecar.stats().unwrap()["dns_pool"].clone();
            if pool["queued"].as_u64() > Some(0) {
                break pool;
            }
            assert!(Instant::now() < deadline, "no lookup queued: {pool}");
        };
        assert_eq!(pool["busy"], threads - 1, "{pool}");

        let (done, stopped) = mpsc::channel();
        thread::spawn(move || {
            if by_drop {
                drop(sidecar);
            } else {
                sidecar.shutdown();
            }
            let _ = done.send(());
        });
        stopped
            .recv_timeout(STOP_BOUND)
            .unwrap_or_else(|_| panic!("still stopping after {STOP_BOUND:?} (drop: {by_drop})"));
        // It did not wait for the resolver.
        assert_eq!(stall.blocked(), threads - 1);
        assert!(!socket.exists(), "the socket file stayed");
        frames_until_eof(&mut attacker);
    }
}
