//! The `sidecar` binary as an operator runs it: `serve --stdio` (one session over its
//! stdin/stdout, logs on stderr only) and `serve --listen` (a 0600 socket, removed on
//! SIGTERM), plus argument errors.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use serde_json::json;
use support::{RawGuest, Wire};

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sidecar"))
}

#[test]
fn serve_stdio_runs_one_session_and_exits_when_it_ends() {
    let mut child = sidecar()
        .args(["serve", "--stdio", "--vm", "a=sa"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wire = Wire::Child(child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut g = RawGuest::attach(wire, "a", "sa");
    let listened = g.call("net.listen", json!({"port": 0}), b"").unwrap();
    let connected = g
        .call(
            "net.connect",
            json!({"port": listened["local"]["port"]}),
            b"",
        )
        .unwrap();
    g.send_call(
        "net.write",
        json!({"socket": connected["socket"]}),
        b"over stdio",
        true,
    );
    let (accept, _, _) = g.event_of("accept");
    let (data, payload, _) = g.event_of("data");
    assert_eq!(data["socket"], accept["socket"]);
    assert_eq!(payload, b"over stdio");
    // Closing our end of its stdin ends the session and the process, cleanly.
    drop(g);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn serve_listen_creates_a_private_socket_and_removes_it_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let mut child = sidecar()
        .args(["serve", "--listen", path.to_str().unwrap(), "--vm", "a=sa"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the "listening" log line (stderr), not for a timer.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "sidecar exited before listening"
        );
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut g = RawGuest::attach(Wire::Unix(UnixStream::connect(&path).unwrap()), "a", "sa");
    g.call("net.listen", json!({"path": "/x"}), b"").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(!path.exists(), "the socket file outlived the sidecar");
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = sidecar()
        .args(["serve", "--stdio", "--vm", "nosecret"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=SECRET"));
    let out = sidecar().args(["serve", "--vm", "a=b"]).output().unwrap();
    assert!(!out.status.success(), "neither --stdio nor --listen");
    let help = sidecar().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve"));
}

/// `sidecar run` hands its child the session on fds 3 and 4 (sockets) and says so in
/// the environment, which holds no secret (the session is attached already); `--poll`
/// has no event channel. (The Node guest suites, in
/// tests/node_guest.rs, cover what a guest does with them.)
#[test]
fn run_gives_the_child_its_streams_and_exits_with_its_code() {
    let check = r#"[ "$PUSHNET_FD" = 3 ] && [ "$PUSHNET_EVENT_FD" = 4 ] && [ -S /dev/fd/3 ] \
        && [ -S /dev/fd/4 ] && [ "$PUSHNET_MODE" = push ] && [ "$PUSHNET_VM" = a ] \
        && [ -z "${PUSHNET_SECRET+set}" ] && exit 5"#;
    let status = sidecar()
        .args(["run", "--vm", "a", "--", "sh", "-c", check])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(5), "the child's checks failed");
    let check_poll = r#"[ "$PUSHNET_MODE" = poll ] && [ -z "${PUSHNET_EVENT_FD+set}" ] \
        && [ -S /dev/fd/3 ] && ! [ -e /dev/fd/4 ] && [ -z "${PUSHNET_SECRET+set}" ] && exit 6"#;
    let status = sidecar()
        .args(["run", "--vm", "a", "--poll", "--", "sh", "-c", check_poll])
        .env("PUSHNET_SECRET", "an operator's own variable")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(6), "the child's checks failed (poll)");
    let status = sidecar()
        .args(["run", "--vm", "a", "--", "sh", "-c", "kill -TERM $$"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn run_refuses_what_it_cannot_do() {
    let out = sidecar()
        .args([
            "run",
            "--vm",
            "a",
            "--connect",
            "/nonexistent.sock",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs the secret of VM a"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sidecar().args(["run", "--vm", "a"]).output().unwrap();
    assert!(!out.status.success(), "no command");
    let out = sidecar()
        .args(["run", "--vm", "a", "--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/program"));
}
