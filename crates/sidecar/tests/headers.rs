//! Headers: a JSON header over `max_header` is refused unparsed (`EMSGSIZE`, with the
//! call's id) and the session goes on; big invalid headers under the limit get their
//! `EPROTO`; another VM is served meanwhile.

mod support;

use serde_json::json;
use sidecar::{Limits, SidecarConfig};
use support::bystander::echoes;
use support::*;

fn harness() -> Harness {
    let mut config = SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb");
    config.limits = Limits {
        max_header: 8 * 1024,
        ..Limits::default()
    };
    Harness::with_config(config)
}

/// A call whose header is `size` bytes: `stats` with a padding string in its params.
fn padded_call(id: u64, size: usize, valid: bool) -> Vec<u8> {
    let head = format!(r#"{{"type":"call","id":{id},"method":"stats","params":{{"pad":""#);
    let tail = if valid { r#""}}"# } else { r#"",}}"# };
    let mut header = head.into_bytes();
    header.resize(size - tail.len(), b'x');
    header.extend(tail.as_bytes());
    let total = 4 + header.len();
    let mut frame = (total as u32).to_be_bytes().to_vec();
    frame.extend((header.len() as u32).to_be_bytes());
    frame.extend(header);
    frame
}

/// In process, a frame arrives whole (the embedder's memory): a header over the limit is
/// refused unparsed with its id, and the session goes on.
#[test]
fn in_process_a_header_over_the_limit_is_refused_and_the_session_goes_on() {
    let h = harness();
    let mut g = h.guest(Transport::InProcess);
    // Ten headers of 1 MiB (valid JSON and not): each refused with its id.
    for i in 0..10u64 {
        g.send_raw(padded_call(100 + i, 1 << 20, i % 2 == 0));
        let error = g.wait_reply(100 + i).expect_err("over max_header");
        assert_eq!(error["code"], "EMSGSIZE", "{error}");
    }
    // Under the limit: an invalid map is EPROTO, a valid one is served.
    g.send_raw(padded_call(200, 8 * 1024, false));
    assert_eq!(g.wait_reply(200).expect_err("invalid")["code"], "EPROTO");
    g.send_raw(padded_call(201, 8 * 1024, true));
    assert!(g.wait_reply(201).is_ok());
    assert!(g.call("stats", json!({}), b"").is_ok());
    let stats = settle(&h, "counted", |s| s["headers_too_large"] == 10);
    assert!(stats["bad_frames"].as_u64().unwrap() >= 1, "{stats}");
    echoes(&h, Transport::Unix, "b", 10);
}

/// On a stream, the prefix announces the header's length: one over the limit is refused
/// from it (`EMSGSIZE`, then the stream closes), before any of its bytes are read, so ten
/// 16 MiB headers cost the sidecar nothing but ten prefixes; other sessions go on.
#[test]
fn on_a_stream_a_header_over_the_limit_ends_the_session_unread() {
    let h = harness();
    for _ in 0..10 {
        let mut g = h.guest(Transport::Unix);
        let total: u32 = 16 << 20;
        let mut prefix = total.to_be_bytes().to_vec();
        prefix.extend((total - 4).to_be_bytes());
        prefix.extend(b"{\"method\":\"stats\",\"id\":7,\"x\":[");
        g.send_raw(prefix);
        let frames = support::bystander::frames_until_eof(&mut g);
        assert_eq!(
            support::bystander::first_error_code(&frames).as_deref(),
            Some("EMSGSIZE")
        );
    }
    let stats = settle(&h, "counted", |s| s["framing_errors"].as_u64() >= Some(10));
    assert!(stats["framing_errors"].as_u64() >= Some(10), "{stats}");
    echoes(&h, Transport::Unix, "b", 10);
}

/// Before hello too: an oversized hello header is `EMSGSIZE` (then closed).
#[test]
fn an_oversized_hello_header_is_refused() {
    let mut config = SidecarConfig::default().with_vm("a", "sa");
    config.limits = Limits {
        max_header: 1024,
        refused_hello_delay: std::time::Duration::ZERO,
        ..Limits::default()
    };
    let h = Harness::with_config(config);
    let mut g = RawGuest::new(h.wire(Transport::Unix));
    g.send_raw(padded_call(1, 4096, true));
    let frames = support::bystander::frames_until_eof(&mut g);
    assert_eq!(
        support::bystander::first_error_code(&frames).as_deref(),
        Some("EMSGSIZE")
    );
}
