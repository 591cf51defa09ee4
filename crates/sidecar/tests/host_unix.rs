//! Host Unix sockets under policy: a guest reaches a host socket file only where a
//! `unix:` rule allows it (an exact path, or a directory prefix), checked on the
//! normalised path and again with symlinks resolved; an in-VM listener at the same path
//! wins; without a rule a host path does not exist for a guest (`ENOENT`).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread;

use serde_json::json;
use support::*;

/// A host Unix echo server at `path` for one connection: returns the bytes it echoed.
fn host_echo(path: &Path) -> thread::JoinHandle<usize> {
    let listener = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 65536];
        let mut total = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => {
                    stream.write_all(&buf[..n]).unwrap();
                    total += n;
                }
                Err(e) => panic!("host echo: {e}"),
            }
        }
    })
}

/// A host listener nobody should reach: it reports whether anything connected.
fn untouched(listener: &UnixListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

#[test]
fn an_allowed_host_socket_connects_and_echoes_in_every_transport_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let h = allowing(&[&format!("unix:{}/", path_str(dir.path()))]);
    for (n, setup) in TRANSPORTS.into_iter().enumerate() {
        let path = dir.path().join(format!("echo{n}.sock"));
        let server = host_echo(&path);
        let mut g = h.guest(setup);
        let connected = g
            .call("net.connect", json!({"path": path_str(&path)}), b"")
            .expect("connect to an allowed host socket");
        let sock = connected["socket"].as_u64().unwrap();
        assert_eq!(connected["remote"]["path"], path_str(&path), "{setup:?}");
        assert_eq!(connected["local"]["path"], "", "{setup:?}");
        let (connect, _, _) = g.event_of("connect");
        assert_eq!(connect["socket"], sock);
        let message: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        g.call("net.write", json!({"socket": sock}), &message)
            .unwrap();
        let echoed = g.read_data(sock, message.len());
        assert!(echoed == message, "{setup:?}: echo differs");
        // Options a Node program sets on any socket are accepted (and mean nothing here).
        g.call("net.socket_set_no_delay", json!({"socket": sock}), b"")
            .unwrap();
        g.call("net.shutdown", json!({"socket": sock}), b"")
            .unwrap();
        let (end, _, _) = g.event_of("end");
        assert_eq!(end["socket"], sock);
        let (close, _, _) = g.event_of("close");
        assert_eq!(close["had_error"], false, "{setup:?}");
        assert_eq!(server.join().unwrap(), message.len(), "{setup:?}");
    }
    assert_eq!(h.stats()["vms"]["a"]["sockets"], 0);
}

#[test]
fn without_a_rule_a_host_socket_does_not_exist_for_a_guest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // No rule at all, and a rule for another directory: the same answer.
    let elsewhere = tempfile::tempdir().unwrap();
    for h in [
        Harness::new(),
        allowing(&[&format!("unix:{}/", path_str(elsewhere.path()))]),
    ] {
        let mut g = h.guest(Transport::InProcess);
        let tried = g.call("net.connect", json!({"path": path_str(&path)}), b"");
        let error = tried.clone().unwrap_err();
        assert_eq!(code(tried), "ENOENT");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("unix: allow rule"),
            "{error}"
        );
        assert_eq!(g.stats()["session"]["open_handles"], 0);
    }
    assert!(untouched(&listener), "the host socket was reached");
}

#[test]
fn an_exact_rule_allows_that_path_only_and_a_prefix_everything_below() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let exact = dir.path().join("a.sock");
    let other = dir.path().join("b.sock");
    let nested = dir.path().join("sub/c.sock");
    let h = allowing(&[&format!("unix:{}", path_str(&exact))]);
    let server = host_echo(&exact);
    let other_listener = UnixListener::bind(&other).unwrap();
    let mut g = h.guest(Transport::InProcess);
    let (sock, _) = {
        let connected = g
            .call("net.connect", json!({"path": path_str(&exact)}), b"")
            .expect("the exact path is allowed");
        (connected["socket"].as_u64().unwrap(), connected)
    };
    g.event_of("connect");
    for denied in [
        &other,
        &dir.path().join("a.sock2"),
        &dir.path().to_path_buf(),
    ] {
        let tried = g.call("net.connect", json!({"path": path_str(denied)}), b"");
        assert_eq!(code(tried), "ENOENT", "{denied:?}");
    }
    assert!(untouched(&other_listener), "b.sock was reached");
    g.call("net.destroy", json!({"socket": sock}), b"").unwrap();
    assert_eq!(server.join().unwrap(), 0);

    // A prefix: any depth below the directory, not a sibling whose name extends it.
    let h = allowing(&[&format!("unix:{}/sub/", path_str(dir.path()))]);
    let server = host_echo(&nested);
    let sibling = format!("{}/subx.sock", path_str(dir.path()));
    let _sibling_listener = UnixListener::bind(&sibling).unwrap();
    let mut g = h.guest(Transport::InProcess);
    let connected = g
        .call("net.connect", json!({"path": path_str(&nested)}), b"")
        .expect("below the prefix");
    g.event_of("connect");
    for denied in [sibling.as_str(), &path_str(&exact)] {
        let tried = g.call("net.connect", json!({"path": denied}), b"");
        assert_eq!(code(tried), "ENOENT", "{denied}");
    }
    // Covered, but nothing there on the host: the kernel's answer.
    let missing = format!("{}/sub/none.sock", path_str(dir.path()));
    let tried = g.call("net.connect", json!({"path": missing}), b"");
    assert_eq!(code(tried), "ENOENT");
    let sock = connected["socket"].as_u64().unwrap();
    g.call("net.destroy", json!({"socket": sock}), b"").unwrap();
    assert_eq!(server.join().unwrap(), 0);
}

#[test]
fn dot_dot_and_symlinks_cannot_leave_an_allowed_directory() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let secret = dir.path().join("secret.sock");
    let secret_listener = UnixListener::bind(&secret).unwrap();
    let h = allowing(&[&format!("unix:{}/", path_str(&allowed))]);
    // `..` climbs out as a name: the path is the secret's, which no rule covers.
    let climbed = format!("{}/../secret.sock", path_str(&allowed));
    let mut g = h.guest(Transport::InProcess);
    let tried = g.call("net.connect", json!({"path": climbed}), b"");
    assert_eq!(code(tried), "ENOENT");
    // The same from a relative path against hello's cwd.
    let mut rel = attach_with(
        &h,
        Transport::InProcess,
        "a",
        json!({"cwd": path_str(&allowed)}),
    );
    let tried = rel.call("net.connect", json!({"path": "../secret.sock"}), b"");
    assert_eq!(code(tried), "ENOENT");
    // A symlink in the allowed directory that leads out of it is refused.
    let link = allowed.join("link.sock");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let tried = g.call("net.connect", json!({"path": path_str(&link)}), b"");
    let error = tried.clone().unwrap_err();
    assert_eq!(code(tried), "EACCES", "{error}");
    assert!(untouched(&secret_listener), "the secret socket was reached");
    // One that stays inside is followed.
    let real = allowed.join("real.sock");
    let server = host_echo(&real);
    let inner = allowed.join("inner.sock");
    std::os::unix::fs::symlink(&real, &inner).unwrap();
    let connected = rel
        .call("net.connect", json!({"path": "inner.sock"}), b"")
        .expect("a link inside the allowed directory");
    rel.event_of("connect");
    let sock = connected["socket"].as_u64().unwrap();
    rel.call("net.write", json!({"socket": sock}), b"ping")
        .unwrap();
    assert_eq!(rel.read_data(sock, 4), b"ping");
    rel.call("net.destroy", json!({"socket": sock}), b"")
        .unwrap();
    assert_eq!(server.join().unwrap(), 4);
}

#[test]
fn an_in_vm_listener_at_the_same_path_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_str(&dir.path().join("app.sock"));
    let host_listener = UnixListener::bind(&path).unwrap();
    let h = allowing(&[&format!("unix:{}/", path_str(dir.path()))]);
    let mut server = h.guest(Transport::InProcess);
    let listened = server
        .call("net.listen", json!({"path": path}), b"")
        .unwrap();
    let mut client = h.guest(Transport::InProcess);
    let connected = client
        .call("net.connect", json!({"path": path}), b"")
        .expect("the VM's own listener");
    let (accept, _, _) = server.event_of("accept");
    assert_eq!(accept["server"], listened["server"]);
    assert!(untouched(&host_listener), "the host socket was reached");
    // Another VM has no such listener: it reaches the host socket.
    let mut other = h.guest_in(Transport::InProcess, "b");
    other
        .call("net.connect", json!({"path": path}), b"")
        .expect("VM b reaches the host socket");
    host_listener.set_nonblocking(false).unwrap();
    host_listener.accept().expect("VM b's connection");
    let _ = connected;
}
