//! Memory a guest can make the sidecar hold is bounded, and a flooding guest does not
//! stall the others:
//! - a guest that floods calls and never reads its replies is held back at
//!   `session_outbound_bytes` (the sidecar stops reading its calls), and gets every reply,
//!   in order, once it reads;
//! - many in-VM connections to a guest that never reads stop at `buffered_bytes_per_vm`
//!   (writes fail `ENOBUFS` naming it);
//! - a UDP flood in one VM leaves another VM's echoes working, and its drops are counted.
//!
//! Each time a bystander in VM `b` completes in-VM echoes meanwhile.

mod support;

use std::time::Instant;

use serde_json::{json, Value};
use support::bystander::echoes;
use support::*;

const CAP: usize = 64 * 1024;

fn config(edit: impl FnOnce(&mut sidecar::Limits)) -> sidecar::SidecarConfig {
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_vm("b", "sb");
    edit(&mut config.limits);
    config
}

/// The largest `session_outbound_bytes` among the sidecar's sessions.
fn most_held(stats: &Value) -> u64 {
    let held = stats["session_outbound_bytes"].as_object().unwrap();
    held.values().filter_map(Value::as_u64).max().unwrap_or(0)
}

/// Reads replies until `n` have come: their ids must be `first..first + n`, in order.
fn read_replies_in_order(g: &mut RawGuest, first: u64, n: u64) {
    let deadline = Instant::now() + DEADLINE;
    for expected in first..first + n {
        match g.recv(deadline) {
            Some(Incoming::Reply { id, outcome, .. }) => {
                assert_eq!(id, expected, "a reply out of order or missing");
                outcome.expect("stats failed");
            }
            Some(Incoming::Event { event, .. }) => panic!("unexpected event {event}"),
            None => panic!("reply {expected} of {n} never came"),
        }
    }
}

#[test]
fn a_guest_that_never_reads_its_replies_is_held_back_at_its_outbound_cap() {
    const CALLS: u64 = 3000;
    for transport in [Transport::InProcess, Transport::Unix] {
        let h = Harness::with_config(config(|l| l.session_outbound_bytes = CAP));
        let flooder = RawGuest::attach(h.wire(transport), "a", "sa");
        // The guest writes its calls from another thread (a blocking write may wait for
        // the sidecar to read again) and reads nothing until they are all written.
        let (mut flooder, first) = match flooder.into_wire() {
            Wire::Unix(stream) => {
                let mut writer = stream.try_clone().unwrap();
                let flood = std::thread::spawn(move || {
                    use std::io::Write;
                    for id in 100..100 + CALLS {
                        let call =
                            json!({"type": "call", "id": id, "method": "stats", "params": {}});
                        writer.write_all(&encode(&call, b"")).unwrap();
                    }
                });
                (RawGuest::new(Wire::Unix(stream)), Some(flood))
            }
            wire => (RawGuest::new(wire), None),
        };
        if first.is_none() {
            for _ in 0..CALLS {
                flooder.send_call("stats", json!({}), b"", false);
            }
        }
        let stats = settle(&h, "the flooder is never held back", |s| {
            s["outbound_held_back"].as_u64().unwrap() > 0
        });
        // One reply may pass the cap; a stats reply is far under 16 KiB.
        let bound = (CAP + 16 * 1024) as u64;
        assert!(most_held(&stats) <= bound, "{transport:?}: {stats}");
        // Another VM is served meanwhile, and the flooder stays under its bound.
        echoes(&h, Transport::InProcess, "b", 20);
        let stats = h.stats();
        assert!(most_held(&stats) <= bound, "{transport:?}: {stats}");
        // Now the guest reads: every reply, in order, nothing dropped.
        let first_id = if first.is_some() { 100 } else { 1 };
        read_replies_in_order(&mut flooder, first_id, CALLS);
        if let Some(flood) = first {
            flood.join().unwrap();
        }
        let stats = h.stats();
        assert_eq!(stats["outbound_fallback_found_work"], 0, "{stats}");
    }
}

#[test]
fn in_vm_connections_to_a_guest_that_never_reads_stop_at_the_vm_buffer_cap() {
    const VM_CAP: usize = 512 * 1024;
    const CHUNK: usize = 16 * 1024;
    for transport in [Transport::InProcess, Transport::Unix] {
        let h = Harness::with_config(config(|l| l.buffered_bytes_per_vm = VM_CAP));
        // The reader grants little credit and never reads.
        let mut reader = attach_with(&h, transport, "a", json!({"credit": 1024}));
        let port = reader.call("net.listen", json!({"port": 0}), b"").unwrap()["local"]["port"]
            .as_u64()
            .unwrap();
        let mut writer = h.guest(transport);
        let mut socks = Vec::new();
        for _ in 0..8 {
            let sock = writer
                .call("net.connect", json!({"port": port}), b"")
                .unwrap()["socket"]
                .as_u64()
                .unwrap();
            socks.push(sock);
        }
        // Round robin over the connections until the VM's cap refuses a write.
        let mut written = 0;
        let refusal = 'flood: loop {
            for sock in &socks {
                match writer.call("net.write", json!({"socket": sock}), &[7u8; CHUNK]) {
                    Ok(_) => written += CHUNK,
                    Err(e) => break 'flood e,
                }
                // The reader was given 1 KiB per socket; the rest stays buffered.
                let delivered = 1024 * socks.len();
                assert!(
                    written <= VM_CAP + delivered + CHUNK,
                    "{transport:?}: no refusal"
                );
            }
        };
        assert_eq!(refusal["code"], "ENOBUFS", "{refusal}");
        let message = refusal["message"].as_str().unwrap();
        assert!(message.contains("buffered_bytes_per_vm"), "{message}");
        // Each socket is far under write_hard_limit: it is the VM's cap that refused.
        assert!(written / socks.len() < sidecar::Limits::default().write_hard_limit);
        let stats = h.stats();
        let vm = &stats["vms"]["a"];
        let buffered = vm["buffered_bytes"].as_u64().unwrap();
        assert!(buffered <= VM_CAP as u64, "{transport:?}: {vm}");
        assert!(
            buffered + CHUNK as u64 > VM_CAP as u64,
            "{transport:?}: {vm}"
        );
        assert_eq!(vm["buffered_bytes_limit"], VM_CAP as u64);
        assert!(stats["vm_buffer_refused"].as_u64().unwrap() >= 1);
        echoes(&h, Transport::InProcess, "b", 10);
        // The reader goes: what was buffered for it is released.
        drop(reader);
        settle(&h, "buffers never released", |s| {
            s["vms"]["a"]["buffered_bytes"] == 0
        });
    }
}

#[test]
fn a_udp_flood_in_one_vm_leaves_another_vm_echoing_and_its_drops_are_counted() {
    const SENT: usize = 5000;
    let h = Harness::with_config(config(|l| l.event_queue_bytes = 64 * 1024));
    let mut receiver = h.guest(Transport::InProcess);
    let r = udp_socket(&mut receiver, "udp4");
    let bound = receiver
        .call("dgram.bind", json!({"socket": r, "host": "127.0.0.1"}), b"")
        .unwrap();
    let port = bound["local"]["port"].clone();
    let mut sender = h.guest(Transport::InProcess);
    let s = udp_socket(&mut sender, "udp4");
    let flood = std::thread::spawn(move || {
        for i in 0..SENT {
            let params = json!({"socket": s, "host": "127.0.0.1", "port": port});
            sender.send_call("dgram.send", params, &pattern_at(i, 512), true);
        }
        // A reply orders every send before it.
        sender.call("stats", json!({}), b"").unwrap();
        sender
    });
    echoes(&h, Transport::InProcess, "b", 50);
    let _sender = flood.join().unwrap();
    let stats = h.stats();
    let dropped = stats["vms"]["a"]["udp_dropped_no_room"].as_u64().unwrap();
    assert!(dropped > 0, "nothing was dropped: {stats}");
    // The receiver gets the rest: the two add up to what was sent.
    let mut received = 0;
    while received + dropped < SENT as u64 {
        let (message, payload, _) = receiver.event_of("message");
        assert_eq!(message["socket"], r);
        assert_eq!(payload.len(), 512, "a datagram was cut");
        received += 1;
    }
    assert_eq!(received + dropped, SENT as u64);
}

#[test]
fn stream_data_for_a_guest_at_its_outbound_cap_waits_in_the_writers_buffer() {
    const TOTAL: usize = 2 * 1024 * 1024;
    const CHUNK: usize = 32 * 1024;
    for transport in [Transport::InProcess, Transport::Unix] {
        let h = Harness::with_config(config(|l| l.session_outbound_bytes = CAP));
        // A window far past the cap: only the cap holds the data back.
        let mut reader = attach_with(&h, transport, "a", json!({"credit": 64 << 20}));
        let port = reader.call("net.listen", json!({"port": 0}), b"").unwrap()["local"]["port"]
            .as_u64()
            .unwrap();
        let mut writer = h.guest(transport);
        let sock = writer
            .call("net.connect", json!({"port": port}), b"")
            .unwrap()["socket"]
            .as_u64()
            .unwrap();
        let (accept, _, _) = reader.event_of("accept");
        let reader_sock = accept["socket"].as_u64().unwrap();
        // The reader's guest reads nothing while the writer writes 2 MiB.
        for offset in (0..TOTAL).step_by(CHUNK) {
            let params = json!({"socket": sock});
            writer
                .call("net.write", params, &pattern_at(offset, CHUNK))
                .unwrap();
        }
        let stats = settle(&h, "the reader's data is never held back", |s| {
            s["outbound_held_back"].as_u64().unwrap() > 0
        });
        let bound = (CAP + CHUNK + 1024) as u64;
        assert!(most_held(&stats) <= bound, "{transport:?}: {stats}");
        // What was not pushed waits in the sidecar, counted against the writer's VM
        // (a Unix socket's kernel buffers took some of it).
        let buffered = stats["vms"]["a"]["buffered_bytes"].as_u64().unwrap();
        assert!(buffered >= (TOTAL / 2) as u64, "{transport:?}: {stats}");
        echoes(&h, Transport::InProcess, "b", 10);
        // The guest reads: every byte, in order.
        let got = reader.read_data(reader_sock, TOTAL);
        assert!(
            got == pattern_at(0, TOTAL),
            "{transport:?}: the data differs"
        );
        let stats = h.stats();
        assert_eq!(stats["vms"]["a"]["buffered_bytes"], 0, "{stats}");
        assert_eq!(stats["outbound_fallback_found_work"], 0, "{stats}");
    }
}

/// With an event channel, the calls of a guest whose event channel is backed up are
/// still served: a guest frozen in a sync call reads only its primary stream, so holding
/// its calls on events it cannot read until the call returns would hang it.
#[test]
fn a_backed_up_event_channel_holds_stream_data_but_not_the_guests_calls() {
    const TOTAL: usize = 2 * 1024 * 1024;
    const CHUNK: usize = 32 * 1024;
    let h = Harness::with_config(config(|l| l.session_outbound_bytes = CAP));
    let mut caps = ALL_CAPS.to_vec();
    caps.push("event_channel");
    let extra = json!({"credit": 64 << 20, "capabilities": caps});
    let mut reader = attach_with(&h, Transport::InProcess, "a", extra);
    let token = reader.hello["event_channel_token"].clone();
    let mut channel = RawGuest::new(h.wire(Transport::InProcess));
    channel
        .call(
            "hello",
            json!({"version": 1, "event_channel_token": token}),
            b"",
        )
        .expect("the event channel attaches");
    let port = reader.call("net.listen", json!({"port": 0}), b"").unwrap()["local"]["port"]
        .as_u64()
        .unwrap();
    let mut writer = h.guest(Transport::InProcess);
    let sock = writer
        .call("net.connect", json!({"port": port}), b"")
        .unwrap()["socket"]
        .as_u64()
        .unwrap();
    for offset in (0..TOTAL).step_by(CHUNK) {
        let params = json!({"socket": sock});
        writer
            .call("net.write", params, &pattern_at(offset, CHUNK))
            .unwrap();
    }
    settle(&h, "the reader's data is never held back", |s| {
        s["outbound_held_back"].as_u64().unwrap() > 0
    });
    // The event channel is at the cap, and the guest's calls are still answered.
    let stats = reader.stats();
    let held = stats["session"]["outbound_bytes"].as_u64().unwrap();
    assert!(held >= (CAP / 2) as u64, "{stats}");
    assert!(held <= (CAP + CHUNK + 1024) as u64, "{stats}");
    // The channel reads: every byte, in order, after the accept.
    let mut got = Vec::new();
    while got.len() < TOTAL {
        let (event, payload) = channel.event();
        match event["event"].as_str() {
            Some("data") => got.extend(payload),
            Some("accept") => {}
            other => panic!("unexpected {other:?}: {event}"),
        }
    }
    assert!(got == pattern_at(0, TOTAL), "the data differs");
}

/// A guest held back at its cap that goes away ends its session (the wait for room sees
/// its transport gone; nothing waits for reads that will never come).
#[test]
fn a_held_back_guest_that_goes_away_ends_its_session() {
    for transport in [Transport::InProcess, Transport::Unix] {
        let h = Harness::with_config(config(|l| l.session_outbound_bytes = CAP));
        let mut flooder = h.guest(transport);
        // Few enough calls that a blocking write never waits (a Unix socket's buffer
        // holds them: 8 KiB on macOS), enough replies to pass the cap and the kernel's
        // buffers for them.
        // One write: a write per call would cost the socket's buffer far more than the
        // calls' bytes (each is a buffer of its own in the kernel), and once the sidecar
        // holds the session back, a blocking write would wait for good.
        let calls = if cfg!(target_os = "linux") { 600 } else { 100 };
        let all: Vec<u8> = (0..calls)
            .flat_map(|id| {
                let header =
                    json!({"type": "call", "id": 1000 + id, "method": "stats", "params": {}});
                support::encode(&header, b"")
            })
            .collect();
        flooder.send_raw(all);
        settle(&h, "the flooder is never held back", |s| {
            s["outbound_held_back"].as_u64().unwrap() > 0
        });
        drop(flooder);
        settle(&h, "the session never ended", |s| s["sessions"] == 0);
    }
}
