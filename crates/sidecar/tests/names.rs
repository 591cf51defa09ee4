//! Names a guest gives: a Unix path longer than `sun_path` allows and a `cwd` longer
//! than PATH_MAX are `ENAMETOOLONG`, at listen, at connect and in hello.

mod support;

use serde_json::json;
use support::bystander::echoes;
use support::*;

#[test]
fn a_unix_path_longer_than_sun_path_is_enametoolong() {
    let h = Harness::new();
    let mut g = h.guest(Transport::InProcess);
    let longest = format!("/{}", "p".repeat(106));
    let too_long = format!("/{}", "p".repeat(107));
    assert!(g.call("net.listen", json!({"path": longest}), b"").is_ok());
    assert_eq!(
        code(g.call("net.listen", json!({"path": too_long}), b"")),
        "ENAMETOOLONG"
    );
    // As long as a header may be (a longer one is refused unparsed, EMSGSIZE).
    let huge = format!("/{}", "p".repeat(60_000));
    assert_eq!(
        code(g.call("net.listen", json!({"path": huge}), b"")),
        "ENAMETOOLONG"
    );
    assert_eq!(
        code(g.call("net.connect", json!({"path": huge}), b"")),
        "ENAMETOOLONG"
    );
    let mega = format!("/{}", "p".repeat(1 << 20));
    assert_eq!(
        code(g.call("net.listen", json!({"path": mega}), b"")),
        "EMSGSIZE"
    );
    // The session goes on.
    assert!(g.call("net.connect", json!({"path": longest}), b"").is_ok());
    echoes(&h, Transport::InProcess, "b", 5);
}

#[test]
fn a_cwd_longer_than_path_max_is_enametoolong() {
    let h = Harness::new();
    let params = |cwd: String| json!({"version": 1, "vm": "a", "secret": "sa", "capabilities": ALL_CAPS, "cwd": cwd});
    // Within hello_max_frame (a larger hello is refused from its prefix, EMSGSIZE).
    let (_, outcome) = hello_with(
        &h,
        Transport::Unix,
        params(format!("/{}", "d".repeat(8000))),
    );
    assert_eq!(code(outcome), "ENAMETOOLONG");
    let (_, outcome) = hello_with(
        &h,
        Transport::Unix,
        params(format!("/{}", "d".repeat(4095))),
    );
    assert!(outcome.is_ok(), "{outcome:?}");
    echoes(&h, Transport::Unix, "b", 5);
}
