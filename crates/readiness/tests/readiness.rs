//! Behaviour of the reactor on whichever backend this build uses (epoll/kqueue in edge
//! mode; poll(2) in oneshot mode with `RUSTFLAGS="--cfg polling_test_poll_backend"`).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use readiness::{Action, Interest, Mode, Reactor, Registration};

const GENEROUS: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(50);

fn generous() -> Instant {
    Instant::now() + GENEROUS
}

fn short() -> Instant {
    Instant::now() + SHORT
}

fn read_some(reg: &Registration<UnixStream>, buf: &mut [u8]) -> io::Result<usize> {
    reg.try_read_with(|mut s| s.read(buf))
}

/// Reads until `WouldBlock`; returns the byte count.
fn drain(reg: &Registration<UnixStream>) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match read_some(reg, &mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[test]
fn mode_matches_the_backend_under_test() {
    let reactor = Reactor::new().unwrap();
    let expected = if cfg!(polling_test_poll_backend) {
        Mode::Oneshot
    } else {
        Mode::Edge
    };
    assert_eq!(reactor.mode(), expected);
}

#[test]
fn reading_until_wouldblock_then_waiting_is_notified_at_the_next_transition() {
    let reactor = Reactor::new().unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    // Registered while the readiness thread is already blocked in its wait.
    let reg = reactor
        .register(sock, Interest::READABLE, Action::Wait)
        .unwrap();
    for round in 0..50u8 {
        peer.write_all(&[round, round]).unwrap();
        assert!(
            reg.wait_readable_until(generous()).unwrap(),
            "round {round}"
        );
        // Not drained: the cache still says readable, and a wait whose deadline has
        // already passed returns true, so it did not need the kernel.
        let mut one = [0u8; 1];
        assert_eq!(read_some(&reg, &mut one).unwrap(), 1);
        assert!(reg.is_readable());
        assert!(reg.wait_readable_until(Instant::now()).unwrap());
        // Drained: now a wait with nothing new ends at its deadline.
        assert_eq!(drain(&reg), 1);
        assert!(!reg.is_readable());
        assert!(!reg
            .wait_readable_until(Instant::now() + Duration::from_millis(5))
            .unwrap());
    }
}

#[test]
fn writable_again_after_the_peer_drains_a_full_buffer() {
    let reactor = Reactor::new().unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let reg = reactor
        .register(sock, Interest::WRITABLE, Action::Wait)
        .unwrap();
    assert!(reg.wait_writable_until(generous()).unwrap());
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    loop {
        match reg.try_write_with(|mut s| s.write(&chunk)) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(written > 0);
    assert!(!reg.is_writable());
    assert!(!reg.wait_writable_until(short()).unwrap(), "buffer is full");
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; written];
        peer.read_exact(&mut buf).unwrap();
        peer
    });
    assert!(reg.wait_writable_until(generous()).unwrap());
    let _peer = reader.join().unwrap();
}

#[test]
fn a_wait_on_nothing_ends_at_its_deadline_not_before() {
    let reactor = Reactor::new().unwrap();
    let (sock, _peer) = UnixStream::pair().unwrap();
    let reg = reactor
        .register(sock, Interest::READABLE, Action::Wait)
        .unwrap();
    let until = Instant::now() + Duration::from_millis(40);
    assert!(!reg.wait_readable_until(until).unwrap());
    assert!(Instant::now() >= until);
}

#[test]
fn a_reused_fd_number_gets_no_stale_event() {
    let reactor = Reactor::new().unwrap();
    let old_events = Arc::new(AtomicUsize::new(0));
    let counter = {
        let c = Arc::clone(&old_events);
        Action::Notify(Box::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        }))
    };

    let (old, mut old_peer) = UnixStream::pair().unwrap();
    let old_fd = old.as_raw_fd();
    let reg = reactor.register(old, Interest::READABLE, counter).unwrap();
    old_peer.write_all(b"x").unwrap();
    assert!(reg.wait_readable_until(generous()).unwrap());
    // More data, so events for the old fd may still be queued when it closes.
    old_peer.write_all(b"yz").unwrap();
    drop(reg);
    let old_count = old_events.load(Ordering::SeqCst);

    // Reopen until the kernel hands out the same fd number again. Other tests of this
    // binary open fds concurrently and may hold that number for a while: release ours
    // now and then and keep looking, up to a deadline.
    let mut spare = Vec::new();
    let give_up = Instant::now() + GENEROUS;
    let (new, mut new_peer) = loop {
        let (a, b) = UnixStream::pair().unwrap();
        if a.as_raw_fd() == old_fd {
            break (a, b);
        }
        if b.as_raw_fd() == old_fd {
            break (b, a);
        }
        assert!(Instant::now() < give_up, "fd {old_fd} was never reused");
        spare.push((a, b));
        if spare.len() >= 64 {
            spare.clear();
            std::thread::yield_now();
        }
    };
    let (tx, new_events) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let action = Action::Notify(Box::new(move |_| tx.lock().unwrap().send(()).unwrap()));
    let reg = reactor.register(new, Interest::READABLE, action).unwrap();
    assert!(
        !reg.wait_readable_until(short()).unwrap(),
        "stale readiness"
    );
    assert!(new_events.try_recv().is_err(), "stale event delivered");
    assert_eq!(old_events.load(Ordering::SeqCst), old_count);

    new_peer.write_all(b"fresh").unwrap();
    assert!(new_events.recv_timeout(GENEROUS).is_ok());
    assert!(reg.is_readable());
    assert_eq!(old_events.load(Ordering::SeqCst), old_count);
}

#[test]
fn dropping_the_reactor_wakes_waiters_with_an_error() {
    let reactor = Reactor::new().unwrap();
    let (sock, _peer) = UnixStream::pair().unwrap();
    let reg = Arc::new(
        reactor
            .register(sock, Interest::READABLE, Action::Wait)
            .unwrap(),
    );
    let started = Arc::new(Barrier::new(2));
    let waiter = {
        let (reg, started) = (Arc::clone(&reg), Arc::clone(&started));
        thread::spawn(move || {
            started.wait();
            reg.wait_readable_until(generous())
        })
    };
    started.wait();
    drop(reactor);
    let result = waiter.join().unwrap();
    assert!(
        result.is_err(),
        "waiter returned {result:?} instead of an error"
    );
    // Later waits fail at once rather than hang, and dropping the registration is fine.
    assert!(reg.wait_readable_until(generous()).is_err());
}

#[test]
fn handlers_run_inline_on_the_readiness_thread() {
    let reactor = Reactor::new().unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let action = Action::handler(move |mut s: &UnixStream, _ready| {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Interest::NONE,
                Ok(n) => tx
                    .send((thread::current().id(), buf[..n].to_vec()))
                    .unwrap(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Interest::READABLE,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let _reg = reactor.register(sock, Interest::READABLE, action).unwrap();
    peer.write_all(b"hello").unwrap();
    let (thread_id, bytes) = rx.recv_timeout(GENEROUS).unwrap();
    assert_eq!(thread_id, reactor.thread_id());
    assert_ne!(thread_id, thread::current().id());
    assert_eq!(bytes, b"hello");
    peer.write_all(b"again").unwrap();
    assert_eq!(rx.recv_timeout(GENEROUS).unwrap().1, b"again");
    assert!(reactor.stats().handler_runs >= 1);
}

#[test]
fn set_interest_resumes_a_handler_that_stopped_reading() {
    // The handler reads only while it has credit, like a push writer with a window.
    let reactor = Reactor::new().unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let credit = Arc::new(AtomicUsize::new(4));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let action = {
        let credit = Arc::clone(&credit);
        Action::handler(move |mut s: &UnixStream, _ready| loop {
            let allowed = credit.load(Ordering::SeqCst);
            if allowed == 0 {
                return Interest::NONE;
            }
            let mut buf = vec![0u8; allowed];
            match s.read(&mut buf) {
                Ok(0) => return Interest::NONE,
                Ok(n) => {
                    credit.fetch_sub(n, Ordering::SeqCst);
                    tx.send(buf[..n].to_vec()).unwrap();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Interest::READABLE,
                Err(e) => panic!("{e}"),
            }
        })
    };
    let reg = reactor.register(sock, Interest::READABLE, action).unwrap();
    peer.write_all(b"0123456789").unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(rx.recv_timeout(GENEROUS).unwrap());
    }
    assert_eq!(got, b"0123");
    // Out of credit: nothing more is read however long we look.
    assert!(rx.recv_timeout(SHORT).is_err());
    credit.store(100, Ordering::SeqCst);
    reg.set_interest(Interest::READABLE).unwrap();
    while got.len() < 10 {
        got.extend(rx.recv_timeout(GENEROUS).unwrap());
    }
    assert_eq!(got, b"0123456789");
}

#[test]
fn an_idle_reactor_does_not_wake() {
    let reactor = Reactor::new().unwrap();
    let (sock, _peer) = UnixStream::pair().unwrap();
    let reg = reactor
        .register(sock, Interest::READABLE, Action::Wait)
        .unwrap();
    // Let the registration settle (edge mode may report nothing; oneshot nothing either).
    assert!(!reg.wait_readable_until(short()).unwrap());
    let before = reactor.stats().wakes;
    assert!(!reg
        .wait_readable_until(Instant::now() + Duration::from_millis(200))
        .unwrap());
    assert_eq!(
        reactor.stats().wakes,
        before,
        "the readiness thread woke while idle"
    );
}

#[test]
fn free_functions_wait_on_a_borrowed_fd() {
    let (sock, mut peer) = UnixStream::pair().unwrap();
    assert!(readiness::wait_fd_writable_until(sock.as_fd(), generous()).unwrap());
    let until = Instant::now() + Duration::from_millis(30);
    assert!(!readiness::wait_fd_readable_until(sock.as_fd(), until).unwrap());
    assert!(Instant::now() >= until);
    peer.write_all(b"!").unwrap();
    assert!(readiness::wait_fd_readable_until(sock.as_fd(), generous()).unwrap());
}

#[test]
fn async_waits_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let reactor = Reactor::new().unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let (loose, mut loose_peer) = UnixStream::pair().unwrap();
    let reg = reactor
        .register(sock, Interest::READABLE, Action::Wait)
        .unwrap();
    runtime.block_on(async {
        let until = Instant::now() + Duration::from_millis(20);
        assert!(!reg.readable_until(until).await.unwrap());
        assert!(Instant::now() >= until);

        let writer = thread::spawn(move || {
            peer.write_all(b"ping").unwrap();
            peer
        });
        assert!(reg.readable_until(generous()).await.unwrap());
        let _peer = writer.join().unwrap();

        // The borrowed-fd form, through a temporary registration.
        assert!(!reactor
            .wait_fd_readable(loose.as_fd(), Instant::now() + Duration::from_millis(20))
            .await
            .unwrap());
        loose_peer.write_all(b"x").unwrap();
        assert!(reactor
            .wait_fd_readable(loose.as_fd(), generous())
            .await
            .unwrap());
        assert!(reactor
            .wait_fd_writable(loose.as_fd(), generous())
            .await
            .unwrap());
    });
    // The temporary registrations are gone; the borrowed fd is still open and usable.
    assert_eq!(reactor.stats().sources, 1);
    let mut buf = [0u8; 1];
    (&loose).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"x");
}
