//! The event queue is bounded: a push-mode guest that stops reading never makes the
//! sidecar queue for it grow without bound. Stream data is held back by credit; datagrams
//! (which have no credit) are dropped and counted once the session's transport holds
//! `event_queue_bytes` the guest has not read — never silently, and never a datagram cut.

mod support;

use serde_json::json;
use support::*;

#[test]
fn datagrams_to_a_guest_that_stops_reading_are_dropped_and_counted_past_the_bound() {
    for transport in [Transport::InProcess, Transport::Unix] {
        let mut config = sidecar::SidecarConfig::default()
            .with_vm("a", "sa")
            .with_vm("b", "sb");
        config.limits.event_queue_bytes = 64 * 1024;
        let h = Harness::with_config(config);
        let mut receiver = h.guest(transport);
        let r = receiver
            .call("dgram.createSocket", json!({"type": "udp4"}), b"")
            .unwrap()["socket"]
            .clone();
        let bound = receiver
            .call("dgram.bind", json!({"socket": r, "host": "127.0.0.1"}), b"")
            .unwrap();
        let port = bound["local"]["port"].clone();
        let mut sender = h.guest(transport);
        let s = sender
            .call("dgram.createSocket", json!({"type": "udp4"}), b"")
            .unwrap()["socket"]
            .clone();
        // The receiver reads nothing meanwhile: 400 datagrams of 1 KiB, far past 64 KiB.
        let sent = 400;
        for i in 0..sent {
            let payload = vec![(i % 251) as u8; 1024];
            let params = json!({"socket": s, "host": "127.0.0.1", "port": port});
            sender.send_call("dgram.send", params, &payload, true);
        }
        // A reply from the sender's session orders all its sends before this point.
        sender.call("stats", json!({}), b"").unwrap();
        let stats = h.stats();
        let dropped = stats["vms"]["a"]["udp_dropped_no_room"].as_u64().unwrap();
        assert!(dropped > 0, "{transport:?}: nothing was dropped: {stats}");
        // Now read: every datagram that was queued arrives whole, and the two add up.
        let mut received = 0;
        let limit = receiver.stats()["session"]["queued_bytes"]
            .as_u64()
            .unwrap();
        assert!(
            limit <= 64 * 1024 + 2048,
            "{transport:?}: {limit} bytes queued, over the bound"
        );
        while received + dropped < sent {
            let (message, payload, _) = receiver.event_of("message");
            assert_eq!(message["socket"], r);
            assert_eq!(payload.len(), 1024, "a datagram was cut");
            assert!(payload.iter().all(|b| *b == payload[0]));
            received += 1;
        }
        assert_eq!(received + dropped, sent, "{transport:?}");
    }
}
