//! Per-VM limits: past `listeners_per_vm` a listen fails `EMFILE` for that VM only; closing
//! one makes room again. A VM's own limits (`VmConfig::limits`, `[vm.limits]`) hold for it
//! while another VM keeps the global ones, and a reload changes them for new calls of
//! live sessions.

mod support;

use serde_json::json;
use sidecar::{LimitOverrides, SidecarConfig};
use support::*;

#[test]
fn listeners_past_the_limit_are_refused_for_that_vm_only() {
    let mut config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb");
    config.limits.listeners_per_vm = 3;
    let h = Harness::with_config(config);
    let mut a = h.guest(Transport::InProcess);
    let mut servers = Vec::new();
    for i in 0..3 {
        let path = format!("/l{i}");
        servers.push(a.call("net.listen", json!({"path": path}), b"").unwrap()["server"].clone());
    }
    let over = a.call("net.listen", json!({"port": 0}), b"");
    let err = over.clone().expect_err("a fourth listener");
    assert_eq!(err["code"], "EMFILE");
    assert!(
        err["message"].as_str().unwrap().contains("limit 3"),
        "{err}"
    );
    // Another VM is not affected.
    let mut b = h.guest_in(Transport::InProcess, "b");
    b.call("net.listen", json!({"port": 0}), b"").unwrap();
    // Closing one makes room.
    a.call("net.server_close", json!({"server": servers[0]}), b"")
        .unwrap();
    a.call("net.listen", json!({"port": 0}), b"").unwrap();
}

/// Listens until refused; the number of listeners that got through, and the refusal.
fn listen_until_refused(g: &mut RawGuest, prefix: &str) -> (usize, serde_json::Value) {
    for n in 0..100 {
        let path = format!("/{prefix}{n}");
        if let Err(e) = g.call("net.listen", json!({"path": path}), b"") {
            return (n, e);
        }
    }
    panic!("no limit within 100 listeners");
}

/// A connected in-VM pair in `g`'s VM (one guest both ends); the client's socket id.
fn connected(g: &mut RawGuest, path: &str) -> u64 {
    g.call("net.listen", json!({"path": path}), b"").unwrap();
    let reply = g.call("net.connect", json!({"path": path}), b"").unwrap();
    reply["socket"].as_u64().unwrap()
}

#[test]
fn a_vms_own_limits_hold_for_it_while_another_vm_keeps_the_global_ones() {
    let own = LimitOverrides {
        listeners_per_vm: Some(2),
        write_high_water: Some(512),
        write_hard_limit: Some(1024),
        ..LimitOverrides::default()
    };
    let mut config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb")
        .with_vm_limits("a", own);
    config.limits.listeners_per_vm = 4;
    let h = Harness::with_config(config);
    // A credit window of 1 byte: what is written stays buffered for the peer.
    let small = json!({"credit": 1});
    let mut a = attach_with(&h, Transport::InProcess, "a", small.clone());
    let mut b = attach_with(&h, Transport::Unix, "b", small);

    // Write limits: a's hard limit is 1024 bytes buffered for a peer, b's the global 4 MiB.
    let (sa, sb) = (connected(&mut a, "/w"), connected(&mut b, "/w"));
    let big = pattern_at(0, 1025);
    let refused = a.call("net.write", json!({"socket": sa}), &big);
    assert_eq!(code(refused), "ENOBUFS");
    let within = a
        .call("net.write", json!({"socket": sa}), &big[..600])
        .unwrap();
    assert_eq!(
        within["need_drain"], true,
        "a's high-water mark is 512: {within}"
    );
    let taken = b.call("net.write", json!({"socket": sb}), &big).unwrap();
    assert_eq!(
        taken["need_drain"], false,
        "b's is the global 64 KiB: {taken}"
    );

    // Listeners: a has 1 of its 2, b 1 of the global 4.
    let (more_a, refused) = listen_until_refused(&mut a, "a");
    assert_eq!(more_a, 1);
    assert_eq!(refused["code"], "EMFILE");
    assert!(
        refused["message"].as_str().unwrap().contains("limit 2"),
        "{refused}"
    );
    let (more_b, refused) = listen_until_refused(&mut b, "b");
    assert_eq!(more_b, 3);
    assert!(
        refused["message"].as_str().unwrap().contains("limit 4"),
        "{refused}"
    );
}

#[test]
fn a_reload_changes_a_vms_limits_for_new_calls_and_keeps_live_sessions() {
    let base = || {
        let mut config = SidecarConfig::default()
            .with_vm("a", "sa")
            .with_vm("b", "sb");
        config.limits.listeners_per_vm = 3;
        config
    };
    let limited = |listeners, pending| LimitOverrides {
        listeners_per_vm: Some(listeners),
        pending_connections_per_vm: Some(pending),
        ..LimitOverrides::default()
    };
    let h = Harness::with_config(base().with_vm_limits("a", limited(1, 1)));
    let mut a = h.guest(Transport::InProcess);
    let mut client = h.guest(Transport::Unix);
    assert_eq!(listen_until_refused(&mut a, "x").0, 1);
    // One pending connection (not taken) fills VM a; the next connect waits.
    client
        .call("net.connect", json!({"path": "/x0"}), b"")
        .unwrap();
    a.event_of("accept");
    let waiting = client.send_call("net.connect", json!({"path": "/x0"}), b"", false);
    settle(&h, "the connect parked", |s| s["parked_calls"] == 1);

    // Reload: a gets room for 3 listeners and 2 pending connections.
    h.sidecar
        .reload(base().with_vm_limits("a", limited(3, 2)))
        .unwrap();
    // The waiting connect goes through (the reload woke it), in the same live sessions.
    client
        .wait_reply(waiting)
        .expect("the parked connect after the reload");
    a.event_of("accept");
    let (more, refused) = listen_until_refused(&mut a, "y");
    assert_eq!(more, 2, "3 listeners now: {refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("limit 3"),
        "{refused}"
    );
    // b kept the global limit throughout.
    let mut b = h.guest_in(Transport::InProcess, "b");
    assert_eq!(listen_until_refused(&mut b, "b").0, 3);

    // Back to the global limits: a is over them now; nothing live is dropped, new
    // listens are refused.
    h.sidecar.reload(base()).unwrap();
    let refused = a.call("net.listen", json!({"path": "/z"}), b"");
    assert_eq!(code(refused), "EMFILE");
    assert_eq!(h.stats()["vms"]["a"]["listeners"], 3);
    // Limits that cannot work together are refused, and the running ones stay.
    let bad = LimitOverrides {
        write_high_water: Some(10),
        write_hard_limit: Some(5),
        ..LimitOverrides::default()
    };
    let err = h
        .sidecar
        .reload(base().with_vm_limits("a", bad))
        .unwrap_err();
    assert!(err.to_string().contains("VM a"), "{err}");
    assert_eq!(h.stats()["fallback_found_work"], 0);
}
