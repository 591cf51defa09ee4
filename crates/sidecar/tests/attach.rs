//! Streams the operator attached to a VM before a guest got them (`sidecar run` hands its
//! child such a session, so the child never holds the VM's secret): the guest's hello
//! carries no VM name and no secret; the `bind` hello attaches a stream over the Unix
//! listener; an event channel attaches with its one-time token alone.

mod support;

use std::os::unix::net::UnixStream;

use serde_json::{json, Value};
use support::{code, Harness, RawGuest, Wire, ALL_CAPS};

/// A socketpair whose sidecar end is served attached to `vm`: the guest's end.
fn attached_stream(h: &Harness, vm: &str) -> RawGuest {
    let (ours, theirs) = UnixStream::pair().unwrap();
    h.sidecar.serve_fds_attached(ours.into(), None, vm).unwrap();
    RawGuest::new(Wire::Unix(theirs))
}

fn attached_hello() -> Value {
    json!({"version": 1, "capabilities": ALL_CAPS})
}

/// The guest on `g` and a guest of VM `vm` attached with its secret reach each other's
/// listeners: they are in the same VM.
fn assert_same_vm(h: &Harness, g: &mut RawGuest, vm: &str) {
    let listen = g
        .call("net.listen", json!({"host": "127.0.0.1", "port": 0}), b"")
        .unwrap();
    let port = listen["local"]["port"].as_u64().unwrap();
    let mut peer = h.guest_in(support::Transport::InProcess, vm);
    peer.connect_ok("127.0.0.1", port as u16);
    let (accept, _, _) = g.event_of("accept");
    assert!(accept["socket"].as_u64().is_some());
}

#[test]
fn an_attached_stream_says_hello_without_a_secret() {
    let h = Harness::new();
    let mut g = attached_stream(&h, "b");
    let hello = g
        .call("hello", attached_hello(), b"")
        .expect("attached hello");
    assert!(hello["session"].as_u64().is_some());
    g.hello = hello;
    assert_same_vm(&h, &mut g, "b");
}

#[test]
fn an_in_process_stream_can_be_attached_too() {
    let h = Harness::new();
    let end = h.sidecar.connect_in_process_attached("a").unwrap();
    let mut g = RawGuest::new(Wire::Pipe(end));
    g.hello = g.call("hello", attached_hello(), b"").unwrap();
    assert_same_vm(&h, &mut g, "a");
}

#[test]
fn an_attached_stream_refuses_credentials_and_other_vms() {
    let h = Harness::new();
    for params in [
        json!({"version": 1, "vm": "b", "secret": "sb"}),
        json!({"version": 1, "vm": "a", "secret": "sa"}),
        json!({"version": 1, "vm": "a"}),
    ] {
        let mut g = attached_stream(&h, "b");
        assert_eq!(
            code(g.call("hello", params.clone(), b"")),
            "EINVAL",
            "{params}"
        );
    }
    // A VM the configuration does not define attaches nobody.
    let mut g = attached_stream(&h, "nonexistent");
    assert_eq!(code(g.call("hello", attached_hello(), b"")), "EACCES");
}

#[test]
fn a_stream_that_is_not_attached_needs_the_secret() {
    let h = Harness::new();
    let (_, refused) = support::hello_with(&h, support::Transport::Unix, attached_hello());
    assert_eq!(code(refused), "EACCES");
    let (_, refused) = support::hello_with(
        &h,
        support::Transport::Unix,
        json!({"version": 1, "vm": "a", "event_channel_token": "guessed"}),
    );
    assert_eq!(code(refused), "EACCES");
}

#[test]
fn bind_attaches_a_listener_connection_for_a_guest() {
    let h = Harness::new();
    let mut g = RawGuest::new(h.wire(support::Transport::Unix));
    let bound = g
        .call(
            "hello",
            json!({"version": 1, "vm": "b", "secret": "sb", "bind": true}),
            b"",
        )
        .expect("bind");
    assert_eq!(bound, json!({"version": 1, "vm": "b"}));
    g.hello = g
        .call("hello", attached_hello(), b"")
        .expect("the guest's hello");
    assert_same_vm(&h, &mut g, "b");

    let mut wrong = RawGuest::new(h.wire(support::Transport::Unix));
    let refused = wrong.call(
        "hello",
        json!({"version": 1, "vm": "b", "secret": "sa", "bind": true}),
        b"",
    );
    assert_eq!(code(refused), "EACCES");

    // A stream is bound once; a refused hello closes it.
    let mut twice = RawGuest::new(h.wire(support::Transport::Unix));
    twice
        .call(
            "hello",
            json!({"version": 1, "vm": "a", "secret": "sa", "bind": true}),
            b"",
        )
        .unwrap();
    let again = twice.call(
        "hello",
        json!({"version": 1, "vm": "a", "secret": "sa", "bind": true}),
        b"",
    );
    assert_eq!(code(again), "EINVAL");
}

#[test]
fn an_event_channel_attaches_with_its_token_alone() {
    let h = Harness::new();
    let mut g = attached_stream(&h, "a");
    let mut caps = ALL_CAPS.to_vec();
    caps.push("event_channel");
    g.hello = g
        .call("hello", json!({"version": 1, "capabilities": caps}), b"")
        .unwrap();
    let token = g.hello["event_channel_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let mut channel = RawGuest::new(h.wire(support::Transport::Unix));
    let attached = channel.call(
        "hello",
        json!({"version": 1, "event_channel_token": token}),
        b"",
    );
    assert!(attached.is_ok(), "{attached:?}");
    // One-time: the same token attaches nothing else.
    let mut again = RawGuest::new(h.wire(support::Transport::Unix));
    let refused = again.call(
        "hello",
        json!({"version": 1, "event_channel_token": token}),
        b"",
    );
    assert_eq!(code(refused), "EACCES");
}
