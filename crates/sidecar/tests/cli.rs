//! The `sidecar` binary as an operator runs it: `serve --stdio` (one session over its
//! stdin/stdout, logs on stderr only) and `serve --listen` (a 0600 socket, removed on
//! SIGTERM), plus argument errors. No secret goes on a command line: `--vm NAME=SECRET`
//! is refused, `NAME=@FILE` and `NAME=env:VAR` give one.

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

/// Reads the child's log until a line containing `needle`; the line.
fn wait_for_log(stderr: &mut impl BufRead, needle: &str) -> String {
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

/// A file holding `secret` (mode 0600), for `--vm NAME=@FILE`.
fn secret_file(dir: &std::path::Path, name: &str, secret: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `sidecar serve --stdio ARGS` (with `env` set) as a child, and the wire to its session.
fn serve_stdio(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, Wire) {
    let mut child = sidecar()
        .args(["serve", "--stdio"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wire = Wire::Child(child.stdin.take().unwrap(), child.stdout.take().unwrap());
    (child, wire)
}

#[test]
fn serve_stdio_runs_one_session_and_exits_when_it_ends() {
    let (mut child, wire) = serve_stdio(
        &["--vm", "a=env:PUSHNET_TEST_SECRET_A"],
        &[("PUSHNET_TEST_SECRET_A", "sa")],
    );
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
    let secret = secret_file(dir.path(), "a.secret", "sa");
    let vm = format!("a=@{}", secret.display());
    let mut child = sidecar()
        .args(["serve", "--listen", path.to_str().unwrap(), "--vm", &vm])
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NAME=@FILE") && stderr.contains("NAME=env:VAR"),
        "{stderr}"
    );
    let out = sidecar()
        .args(["serve", "--vm", "a=env:PUSHNET_TEST_SECRET_A"])
        .env("PUSHNET_TEST_SECRET_A", "sa")
        .output()
        .unwrap();
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

/// `--vm NAME=SECRET` puts the secret where every local user (and every guest) can read
/// it, /proc/<pid>/cmdline: `serve` and `run` refuse it, saying why and what to give,
/// without repeating it.
#[test]
fn a_literal_secret_on_the_command_line_is_refused() {
    let secret = "hunter2-literal";
    let attempts: [&[&str]; 3] = [
        &["serve", "--stdio", "--vm", "a=hunter2-literal"],
        &[
            "serve",
            "--listen",
            "/nonexistent/s.sock",
            "--vm",
            "ok=env:PUSHNET_TEST_OK",
            "--vm",
            "a=hunter2-literal",
        ],
        &["run", "--vm", "a=hunter2-literal", "--", "true"],
    ];
    for args in attempts {
        let out = sidecar()
            .args(args)
            .env("PUSHNET_TEST_OK", "fine")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        for needed in ["/proc/<pid>/cmdline", "NAME=@FILE", "NAME=env:VAR"] {
            assert!(
                stderr.contains(needed),
                "{args:?}: no {needed:?} in\n{stderr}"
            );
        }
        assert!(
            !stderr.contains(secret),
            "{args:?}: the refusal repeats the secret\n{stderr}"
        );
    }
}

/// `--vm NAME=env:VAR`: the secret is VAR of the sidecar's environment (a guest attaches
/// with it), and VAR is gone from what the sidecar's children inherit.
#[test]
fn an_env_var_secret_attaches_and_no_child_inherits_it() {
    // (Two VMs may share a variable: it is read once.)
    let (mut child, wire) = serve_stdio(
        &[
            "--vm",
            "a=env:PUSHNET_TEST_SECRET_A",
            "--vm",
            "b=env:PUSHNET_TEST_SECRET_A",
        ],
        &[("PUSHNET_TEST_SECRET_A", "from-the-env")],
    );
    let mut g = RawGuest::attach(wire, "a", "from-the-env");
    g.call("net.listen", json!({"port": 0}), b"").unwrap();
    drop(g);
    assert!(child.wait().unwrap().success());

    // `run` (embedded sidecar): the child's environment has no PUSHNET_TEST_SECRET_A.
    let check =
        r#"[ -z "${PUSHNET_TEST_SECRET_A+set}" ] && ! env | grep -q from-the-env && exit 7"#;
    let status = sidecar()
        .args([
            "run",
            "--vm",
            "a=env:PUSHNET_TEST_SECRET_A",
            "--",
            "sh",
            "-c",
            check,
        ])
        .env("PUSHNET_TEST_SECRET_A", "from-the-env")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7), "the child inherited the variable");
}

/// `run --connect` with `--vm NAME=env:VAR` attaches with that secret (and a wrong one
/// is refused), against a `serve --listen` that took its secret from a file; a `serve`
/// given `env:VAR` secrets keeps them across a SIGHUP reload, though VAR left its
/// environment at start.
#[test]
fn env_and_file_secrets_attach_run_connect_and_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let config = dir.path().join("sidecar.toml");
    std::fs::write(&config, "[limits]\nsockets_per_vm = 100\n").unwrap();
    let a_file = secret_file(dir.path(), "a.secret", "from-a-file");
    let mut child = sidecar()
        .args(["serve", "--listen", path.to_str().unwrap(), "--config"])
        .arg(&config)
        .arg("--vm")
        .arg(format!("a=@{}", a_file.display()))
        .args(["--vm", "b=env:PUSHNET_TEST_SECRET_B"])
        .env("PUSHNET_TEST_SECRET_B", "from-the-env")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    wait_for_log(&mut stderr, "listening");
    let run_as = |vm: &str, secret: &str| {
        sidecar()
            .args(["run", "--vm", &format!("{vm}=env:PUSHNET_TEST_RUN_SECRET")])
            .args(["--connect", path.to_str().unwrap(), "--"])
            .args([
                "sh",
                "-c",
                r#"[ -S /dev/fd/3 ] && [ -z "${PUSHNET_TEST_RUN_SECRET+set}" ] && exit 9"#,
            ])
            .env("PUSHNET_TEST_RUN_SECRET", secret)
            .output()
            .unwrap()
    };
    assert_eq!(run_as("a", "from-a-file").status.code(), Some(9));
    assert_eq!(run_as("b", "from-the-env").status.code(), Some(9));
    let wrong = run_as("b", "wrong");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("EACCES"));

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_for_log(&mut stderr, "config reloaded");
    let attach = |vm, secret| {
        let mut g = RawGuest::attach(Wire::Unix(UnixStream::connect(&path).unwrap()), vm, secret);
        g.call("net.listen", json!({"port": 0}), b"").unwrap();
    };
    attach("a", "from-a-file");
    attach("b", "from-the-env");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_missing_secret_source_is_refused_naming_it() {
    let cases: [(&str, Option<&str>, &[&str]); 4] = [
        (
            "a=env:PUSHNET_TEST_UNSET",
            None,
            &["PUSHNET_TEST_UNSET", "not set"],
        ),
        (
            "a=env:PUSHNET_TEST_UNSET",
            Some(""),
            &["PUSHNET_TEST_UNSET", "empty"],
        ),
        ("a=env:", None, &["name of an environment variable"]),
        ("a=@/nonexistent/a.secret", None, &["/nonexistent/a.secret"]),
    ];
    for (vm, value, needed) in cases {
        let mut command = sidecar();
        command.args(["serve", "--stdio", "--vm", vm]);
        match value {
            Some(value) => command.env("PUSHNET_TEST_UNSET", value),
            None => command.env_remove("PUSHNET_TEST_UNSET"),
        };
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--vm {vm} was accepted");
        for needed in needed {
            assert!(
                stderr.contains(needed),
                "--vm {vm}: no {needed:?} in\n{stderr}"
            );
        }
    }
}

/// A config file that holds a literal secret and that other users can read is loaded,
/// with a warning naming it and the fix; at mode 0600 there is none.
#[test]
fn a_readable_config_with_a_literal_secret_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(&config, "[[vm]]\nname = \"a\"\nsecret = \"sa\"\n").unwrap();
    let log_of_a_session = |mode: u32| {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
        let (child, wire) = serve_stdio(&["--config", config.to_str().unwrap()], &[]);
        drop(RawGuest::attach(wire, "a", "sa"));
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let log = log_of_a_session(0o644);
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains(config.to_str().unwrap()), "{log}");
    assert!(
        log.contains("chmod 600") && log.contains("secret_file"),
        "{log}"
    );
    assert!(!log.contains("\"sa\""), "{log}");
    let log = log_of_a_session(0o600);
    assert!(!log.contains("WARN"), "{log}");
}
