//! Per-VM listener limit: past `listeners_per_vm` a listen fails `EMFILE` for that VM only;
//! closing one makes room again, and another VM is not affected.

mod support;

use serde_json::json;
use support::*;

#[test]
fn listeners_past_the_limit_are_refused_for_that_vm_only() {
    let mut config = sidecar::SidecarConfig::default()
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
