//! In a test binary of its own (so no other test opens fds meanwhile): guests that come
//! and go over the Unix socket leave no file descriptor behind in the sidecar's process.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Harness, Transport};

fn open_fds() -> usize {
    let dir = if std::path::Path::new("/proc/self/fd").exists() {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn sessions_that_end_release_every_fd() {
    let h = Harness::new();
    // Warm up once: the first connection may allocate lasting runtime state.
    drop(h.guest(Transport::Unix));
    let settle = |h: &Harness| {
        let until = Instant::now() + Duration::from_secs(10);
        while h.stats()["sessions"] != 0 {
            assert!(Instant::now() < until, "sessions did not end");
        }
    };
    settle(&h);
    let baseline = open_fds();
    for round in 0..3 {
        let mut guests: Vec<_> = (0..20).map(|_| h.guest(Transport::Unix)).collect();
        for (i, g) in guests.iter_mut().enumerate() {
            let path = format!("/r{round}/g{i}.sock");
            g.call("net.listen", json!({"path": path}), b"").unwrap();
            g.call("net.connect", json!({"path": path}), b"").unwrap();
        }
        assert!(
            open_fds() >= baseline + 40,
            "each guest holds two fds (ours and the sidecar's)"
        );
        drop(guests);
        settle(&h);
        let stats = h.stats();
        assert_eq!(stats["streams"], 0, "{stats}");
        // A connection's fd closes when its tasks finish, just after its session ends.
        let until = Instant::now() + Duration::from_secs(10);
        while open_fds() != baseline && Instant::now() < until {
            let _ = h.stats();
        }
        assert_eq!(open_fds(), baseline, "round {round} leaked fds");
    }
}
