//! The two foundation crates together, as the sidecar uses them: a socket's readiness
//! notifies a fabric key, and a consumer that reads until `WouldBlock` waits on that key
//! (blocking on a plain thread, or async on a current-thread runtime like the RPC loop).
//! Every byte must arrive, on the edge backend and on the oneshot poll(2) backend, with no
//! fallback finding work a notification did not announce.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use notify_fabric::{Fabric, WaitOptions};
use readiness::{Action, Interest, Reactor, Registration};

const GENEROUS: Duration = Duration::from_secs(10);
const ROUNDS: usize = 2_000;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Key {
    Readable(usize),
}

/// One read attempt: `Some(bytes)` (possibly empty at EOF is not expected here), or `None`
/// on `WouldBlock`, which also arms the registration for the next transition.
fn try_read(reg: &Registration<UnixStream>) -> Option<Vec<u8>> {
    let mut buf = [0u8; 512];
    match reg.try_read_with(|mut s| s.read(&mut buf)) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("read failed: {e}"),
    }
}

/// Writes `ROUNDS` numbered messages from another thread, each after the previous one was
/// (probably) consumed or not: the writer does not wait, so edges land at every point of
/// the consumer's read/check/wait cycle.
fn spawn_writer(mut peer: UnixStream) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for i in 0..ROUNDS {
            peer.write_all(&(i as u32).to_be_bytes()).unwrap();
            if i % 7 == 0 {
                thread::yield_now();
            }
        }
    })
}

fn check_stream(received: &[u8]) {
    assert_eq!(received.len(), ROUNDS * 4);
    for (i, chunk) in received.chunks(4).enumerate() {
        assert_eq!(u32::from_be_bytes(chunk.try_into().unwrap()), i as u32);
    }
}

#[test]
fn readiness_notifies_a_fabric_key_and_a_blocking_consumer_gets_every_byte() {
    let reactor = Reactor::new().unwrap();
    let fabric: Fabric<Key> = Fabric::new();
    let (sock, peer) = UnixStream::pair().unwrap();
    let key = Key::Readable(1);
    let reg = reactor
        .register(sock, Interest::READABLE, Action::notify_key(&fabric, key))
        .unwrap();
    let writer = spawn_writer(peer);
    let mut received = Vec::new();
    while received.len() < ROUNDS * 4 {
        let options = WaitOptions::timeout(GENEROUS).with_fallback(GENEROUS);
        let chunk = fabric.wait_until_blocking(&key, options, || try_read(&reg));
        received.extend(chunk.expect("consumer gave up waiting"));
    }
    writer.join().unwrap();
    check_stream(&received);
    assert_eq!(fabric.stats().fallback_found_work, 0);
}

#[test]
fn readiness_notifies_a_fabric_key_and_an_async_consumer_gets_every_byte() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let reactor = Reactor::new().unwrap();
    let fabric: Fabric<Key> = Fabric::new();
    let (sock, peer) = UnixStream::pair().unwrap();
    let key = Key::Readable(2);
    let reg = reactor
        .register(sock, Interest::READABLE, Action::notify_key(&fabric, key))
        .unwrap();
    let writer = spawn_writer(peer);
    let received = runtime.block_on(async {
        let mut received = Vec::new();
        while received.len() < ROUNDS * 4 {
            let options = WaitOptions::timeout(GENEROUS);
            let chunk = fabric.wait_until(&key, options, || try_read(&reg)).await;
            received.extend(chunk.expect("consumer gave up waiting"));
        }
        received
    });
    writer.join().unwrap();
    check_stream(&received);
    assert_eq!(fabric.stats().fallback_found_work, 0);
    assert_eq!(fabric.stats().live_keys, 0);
}
