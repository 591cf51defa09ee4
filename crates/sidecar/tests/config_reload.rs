//! `sidecar serve --config FILE`: a bad file is refused at start with its line; SIGHUP
//! reloads the file (a new VM can be attached to, with its own `[vm.limits]`; live
//! sessions keep working), and a reload that fails keeps the running configuration.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

use serde_json::json;
use support::{code, RawGuest, Wire};

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sidecar"))
}

/// Reads the child's log until a line containing `needle`; the line.
fn wait_for_log(stderr: &mut BufReader<ChildStderr>, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the sidecar exited before logging {needle:?}"
        );
        if line.contains(needle) {
            return line;
        }
    }
}

fn hangup(child: &Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
}

fn attach(socket: &Path, vm: &str, secret: &str) -> RawGuest {
    RawGuest::attach(Wire::Unix(UnixStream::connect(socket).unwrap()), vm, secret)
}

fn refused_attach(socket: &Path, vm: &str, secret: &str) -> String {
    let mut g = RawGuest::new(Wire::Unix(UnixStream::connect(socket).unwrap()));
    let params = json!({"version": 1, "vm": vm, "secret": secret, "capabilities": ["push"]});
    code(g.call("hello", params, b""))
}

#[test]
fn a_bad_config_file_is_refused_at_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(
        &config,
        "[[vm]]\nname = \"a\"\nsecret = \"sa\"\nallow = [\"10.0.0.0/40\"]\n",
    )
    .unwrap();
    let out = sidecar()
        .args(["serve", "--stdio", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sidecar.toml:4"), "{stderr}");
    assert!(stderr.contains("longer than the address"), "{stderr}");
}

#[test]
fn sighup_reloads_the_config_and_keeps_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    let socket = dir.path().join("s.sock");
    std::fs::write(&config, "[[vm]]\nname = \"a\"\nsecret = \"sa\"\n").unwrap();
    let mut child = sidecar()
        .args(["serve", "--listen", socket.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    wait_for_log(&mut stderr, "listening");

    let mut a = attach(&socket, "a", "sa");
    let listened = a.call("net.listen", json!({"port": 0}), b"").unwrap();
    assert_eq!(refused_attach(&socket, "b", "sb"), "EACCES");

    // Add VM b, with its own listener limit; reload.
    std::fs::write(
        &config,
        "[[vm]]\nname = \"a\"\nsecret = \"sa\"\n[[vm]]\nname = \"b\"\nsecret = \"sb\"\n\
         [vm.limits]\nlisteners_per_vm = 1\n",
    )
    .unwrap();
    hangup(&child);
    wait_for_log(&mut stderr, "config reloaded");
    let mut b = attach(&socket, "b", "sb");
    b.call("net.listen", json!({"path": "/b"}), b"").unwrap();
    let over = b.call("net.listen", json!({"path": "/b2"}), b"");
    assert_eq!(code(over), "EMFILE", "b's own limit from [vm.limits]");
    a.call("net.listen", json!({"path": "/a2"}), b"")
        .expect("a keeps the global limit");
    // The live session of a still works, its listener still there.
    let connected = a
        .call(
            "net.connect",
            json!({"port": listened["local"]["port"]}),
            b"",
        )
        .expect("a's session survived the reload");
    assert!(connected["socket"].as_u64().is_some());

    // A broken file: refused, and the running configuration stays (b still attaches).
    std::fs::write(
        &config,
        "[[vm]]\nname = \"a\"\nsecret = \"sa\"\nbogus_key = 1\n",
    )
    .unwrap();
    hangup(&child);
    let line = wait_for_log(&mut stderr, "reload refused");
    assert!(line.contains("sidecar.toml:4"), "{line}");
    attach(&socket, "b", "sb")
        .call("stats", json!({}), b"")
        .unwrap();

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
