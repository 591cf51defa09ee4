//! Readiness microbenchmarks.
//!
//! - `edge_to_waiter`: a byte written to a socket → the readiness thread's event → a
//!   thread blocked in `wait_readable_until` wakes (then drains to `WouldBlock`). One
//!   iteration = write syscall + readiness-thread wake + waiter wake + reads.
//! - `ready_fd_wait/*`: asking "is this fd readable?" of an fd that is: through a
//!   registration's cached readiness (no syscall), through the borrowed-fd free function
//!   (one poll(2)), and the old way written out here: a raw `poll(2)` per wait.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use readiness::{Action, Interest, Reactor, Registration};

fn far() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn drain(reg: &Registration<UnixStream>) {
    let mut buf = [0u8; 64];
    loop {
        match reg.try_read_with(|mut s| s.read(&mut buf)) {
            Ok(0) => panic!("peer closed"),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("{e}"),
        }
    }
}

fn edge_to_waiter(c: &mut Criterion) {
    let reactor = Reactor::new().unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let reg = reactor
        .register(sock, Interest::READABLE, Action::Wait)
        .unwrap();
    c.bench_function(
        &format!("readiness/edge_to_waiter ({:?})", reactor.mode()),
        |b| {
            b.iter(|| {
                peer.write_all(b"x").unwrap();
                assert!(reg.wait_readable_until(far()).unwrap());
                drain(&reg);
            })
        },
    );
}

/// The old way: one poll(2) syscall per readiness question.
fn raw_poll_readable(fd: i32) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for a live fd.
    let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
    n == 1
}

fn ready_fd_wait(c: &mut Criterion) {
    let reactor = Reactor::new().unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let reg = reactor
        .register(sock, Interest::READABLE, Action::Wait)
        .unwrap();
    // Make it readable and leave the byte unread: the fd stays ready throughout.
    peer.write_all(b"x").unwrap();
    assert!(reg.wait_readable_until(far()).unwrap());
    let mut group = c.benchmark_group("readiness/ready_fd_wait");
    group.bench_function("registration_cached", |b| {
        b.iter(|| assert!(black_box(&reg).wait_readable_until(far()).unwrap()))
    });
    let fd = reg.get_ref().as_fd();
    group.bench_function("free_function_poll", |b| {
        b.iter(|| assert!(readiness::wait_fd_readable_until(black_box(fd), far()).unwrap()))
    });
    let raw = fd.as_raw_fd();
    group.bench_function("baseline_raw_poll_per_wait", |b| {
        b.iter(|| assert!(raw_poll_readable(black_box(raw))))
    });
    group.finish();
}

criterion_group!(benches, edge_to_waiter, ready_fd_wait);
criterion_main!(benches);
