//! Issue 19: a hostile Node program run by `sidecar run` must not reach a host server on
//! 127.0.0.1 that no `--allow` rule permits, by any route. `guests/node/test/apps/
//! escape_routes.js ROUTE PORT` tries one route (see its header for the list); for each,
//! this test starts a host server on 127.0.0.1:0 (std sockets: TCP, or UDP for the DNS
//! routes) and
//!
//! - runs the app under plain `node` and asserts the server received the connection (or
//!   the datagram): the route really is a route;
//! - runs it as a guest, `sidecar run --vm t -- node escape_routes.js ROUTE PORT`
//!   (sandboxed, as by default), and asserts the server received nothing;
//! - for the routes the Node runtime closes itself (`guests/node/lib/closed_routes.js`),
//!   runs it again with `--no-sandbox` and asserts the same: the runtime does not hand
//!   the program a native socket even without the sandbox. The routes only the sandbox
//!   closes are child processes (node, python3, curl) and native code (`process.dlopen`).
//!
//! Nothing here sleeps to synchronise: each run ends (the app exits by itself within a
//! few seconds; a deadline kills it otherwise), and only then is the server checked,
//! with a non-blocking accept / recv. A loopback connect or send completes in the
//! kernel before the client's call returns, so what was sent has arrived by then.
//!
//! `inspector` is the reverse direction: the guest listens (`inspector.open(PORT)`) and
//! the test asserts the host cannot connect; `proc-scan` asserts a guest does not see a
//! host process's command line in `/proc`.
//!
//! Node must be on PATH, as for `node_guest.rs` (`PUSHNET_SKIP_NODE=1` skips); a route
//! needing python3, curl or cc says it is skipped, and why, when the tool is missing.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::free_port;

/// A run ends by itself well before this (the app's own watchdog is 4 s).
const RUN_LIMIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn app() -> PathBuf {
    repo().join("guests/node/test/apps/escape_routes.js")
}

/// False (saying so) when `PUSHNET_SKIP_NODE=1`; panics when Node is missing.
fn node_wanted() -> bool {
    if std::env::var("PUSHNET_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("PUSHNET_SKIP_NODE=1: the Node escape routes are skipped");
        return false;
    }
    let ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "cannot run `node`: the escape-route tests need Node.js 18 or later on PATH \
         (CI installs it). Set PUSHNET_SKIP_NODE=1 to skip them."
    );
    true
}

/// How the app runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lane {
    /// Plain `node`: every route must reach the server.
    Plain,
    /// `sidecar run --vm t --` (sandboxed): none may.
    Guest,
    /// `sidecar run --no-sandbox --vm t --`: the runtime alone.
    Unsandboxed,
}

impl Lane {
    fn command(self, args: &[String]) -> Command {
        let mut cmd = match self {
            Lane::Plain => Command::new("node"),
            Lane::Guest | Lane::Unsandboxed => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidecar"));
                cmd.arg("run");
                if self == Lane::Unsandboxed {
                    cmd.arg("--no-sandbox");
                }
                cmd.args(["--vm", "t", "--", "node"]);
                cmd
            }
        };
        cmd.arg(app())
            .args(args)
            .current_dir(repo())
            .env_remove("PUSHNET_ALLOW_INSPECTOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// A started app: its stdout as lines, its stdin (closing it ends `inspector`).
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn start(lane: Lane, args: &[String], env: &[(&str, &str)]) -> Running {
    let mut cmd = lane.command(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {lane:?} {args:?}: {e}"));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Running {
        child,
        stdin,
        lines,
        stderr,
    }
}

impl Running {
    /// The next stdout line, or None once stdout ended; kills the app past the limit.
    fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(RUN_LIMIT) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("the app printed nothing for {RUN_LIMIT:?} and was killed");
            }
        }
    }

    /// Waits for the app to end (stdout closed, then the exit status); returns every
    /// line it printed and its stderr. It must exit 0.
    fn finish(mut self, what: &str) -> (Vec<String>, String) {
        drop(self.stdin.take());
        let mut lines = Vec::new();
        while let Some(line) = self.next_line() {
            lines.push(line);
        }
        let status = self.child.wait().expect("waiting for the app");
        let stderr = self.stderr.join().unwrap_or_default();
        assert!(
            status.success(),
            "{what}: exited {status}\n--- stdout\n{}\n--- stderr\n{stderr}",
            lines.join("\n")
        );
        (lines, stderr)
    }
}

/// The app's `route ROUTE: OUTCOME` line.
fn outcome<'a>(route: &str, lines: &'a [String], stderr: &str) -> &'a str {
    let prefix = format!("route {route}: ");
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| {
            panic!("no `{prefix}...` line\n--- stdout\n{lines:?}\n--- stderr\n{stderr}")
        })
}

/// The host server a route tries to reach.
enum Server {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Server {
    fn start(udp: bool) -> Server {
        if udp {
            Server::Udp(UdpSocket::bind("127.0.0.1:0").expect("binding the UDP server"))
        } else {
            Server::Tcp(TcpListener::bind("127.0.0.1:0").expect("binding the TCP server"))
        }
    }

    fn port(&self) -> u16 {
        match self {
            Server::Tcp(l) => l.local_addr().unwrap().port(),
            Server::Udp(s) => s.local_addr().unwrap().port(),
        }
    }

    /// Whether anything arrived (checked once the client has exited: no waiting).
    fn received(&self) -> bool {
        let result = match self {
            Server::Tcp(l) => {
                l.set_nonblocking(true).unwrap();
                l.accept().map(|_| ())
            }
            Server::Udp(s) => {
                s.set_nonblocking(true).unwrap();
                s.recv(&mut [0u8; 2048]).map(|_| ())
            }
        };
        match result {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("checking the server: {e}"),
        }
    }
}

/// Runs `route` against a fresh server in `lane`: (whether the server received
/// anything, the app's outcome line), or None if the app skipped the route.
fn attempt(lane: Lane, route: &str, udp: bool, extra: &[String]) -> Option<(bool, String)> {
    let server = Server::start(udp);
    let mut args = vec![route.to_owned(), server.port().to_string()];
    args.extend(extra.iter().cloned());
    let (lines, stderr) = start(lane, &args, &[]).finish(&format!("{route} ({lane:?})"));
    let line = outcome(route, &lines, &stderr).to_owned();
    eprintln!("{lane:?}: route {route}: {line}");
    if let Some(why) = line.strip_prefix("skipped ") {
        assert_eq!(lane, Lane::Plain, "{route} skipped only as a guest: {why}");
        eprintln!("route {route} is skipped: {why}");
        return None;
    }
    Some((server.received(), line))
}

/// Whether the runtime itself closes the route (so it stays closed with --no-sandbox).
#[derive(Clone, Copy, PartialEq)]
enum ClosedBy {
    Runtime,
    SandboxOnly,
}

fn check_route(route: &str, udp: bool, closed_by: ClosedBy, extra: &[String]) {
    if !node_wanted() {
        return;
    }
    let Some((received, line)) = attempt(Lane::Plain, route, udp, extra) else {
        return;
    };
    assert!(
        received,
        "under plain node, route {route} did not reach the server ({line}): the test \
         does not exercise a route"
    );
    let mut lanes = vec![Lane::Guest];
    if closed_by == ClosedBy::Runtime {
        lanes.push(Lane::Unsandboxed);
    }
    for lane in lanes {
        let (received, line) = attempt(lane, route, udp, extra).unwrap();
        assert!(
            !received,
            "{lane:?}: route {route} reached a host server no rule allows ({line})"
        );
        assert!(
            !line.starts_with("reached"),
            "{lane:?}: route {route} says it reached the server ({line})"
        );
    }
}

#[test]
fn patched_net_connect() {
    check_route("net-connect", false, ClosedBy::Runtime, &[]);
}

#[test]
fn fetch() {
    check_route("fetch", false, ClosedBy::Runtime, &[]);
}

#[test]
fn tls_socket_without_a_socket() {
    check_route("tls-socket", false, ClosedBy::Runtime, &[]);
}

#[test]
fn node_tls_socket_from_tls_wrap() {
    check_route("tls-wrap", false, ClosedBy::Runtime, &[]);
}

#[test]
fn node_socket_through_the_prototype() {
    check_route("proto-socket", false, ClosedBy::Runtime, &[]);
}

#[test]
fn node_socket_through_the_class_chain() {
    check_route("proto-class", false, ClosedBy::Runtime, &[]);
}

#[test]
fn process_binding_tcp_wrap() {
    check_route("tcp-wrap", false, ClosedBy::Runtime, &[]);
}

#[test]
fn worker_thread() {
    check_route("worker", false, ClosedBy::Runtime, &[]);
}

#[test]
fn worker_thread_without_node_options() {
    check_route("worker-env", false, ClosedBy::Runtime, &[]);
}

#[test]
fn child_node() {
    check_route("child-node", false, ClosedBy::SandboxOnly, &[]);
}

#[test]
fn child_python() {
    check_route("child-python", false, ClosedBy::SandboxOnly, &[]);
}

#[test]
fn child_curl() {
    check_route("child-curl", false, ClosedBy::SandboxOnly, &[]);
}

#[test]
fn dns_resolver() {
    check_route("dns-resolver", true, ClosedBy::Runtime, &[]);
}

#[test]
fn dns_promises_resolver() {
    check_route("dns-promises", true, ClosedBy::Runtime, &[]);
}

#[test]
fn dns_module_resolver() {
    check_route("dns-resolve", true, ClosedBy::Runtime, &[]);
}

#[test]
fn process_dlopen() {
    if !node_wanted() {
        return;
    }
    let src = repo().join("guests/node/test/apps/escape_dlopen.c");
    let lib = Path::new(env!("CARGO_TARGET_TMPDIR")).join("escape_dlopen.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status();
    match built {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("cc {} failed: {status}", src.display()),
        Err(e) => {
            eprintln!("route dlopen is skipped: cannot run cc ({e})");
            return;
        }
    }
    check_route(
        "dlopen",
        false,
        ClosedBy::SandboxOnly,
        &[lib.display().to_string()],
    );
}

/// Starts `inspector` listening in `lane`; whether the host could connect to it, and
/// the app's outcome line.
fn inspector_attempt(lane: Lane, env: &[(&str, &str)]) -> (bool, String) {
    let port = free_port();
    let mut running = start(lane, &["inspector".to_owned(), port.to_string()], env);
    let first = running.next_line().unwrap_or_default();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let connected = first.ends_with(": listening")
        && TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok();
    let (lines, stderr) = running.finish(&format!("inspector ({lane:?})"));
    let all: Vec<String> = std::iter::once(first).chain(lines).collect();
    let line = outcome("inspector", &all[..1], &stderr).to_owned();
    eprintln!("{lane:?} {env:?}: route inspector: {line}; host connected: {connected}");
    (connected, line)
}

#[test]
fn inspector_open() {
    if !node_wanted() {
        return;
    }
    let (connected, line) = inspector_attempt(Lane::Plain, &[]);
    assert!(
        connected,
        "under plain node the host could not connect to inspector.open()'s port ({line})"
    );
    // Refused by the runtime, sandboxed or not.
    for lane in [Lane::Guest, Lane::Unsandboxed] {
        let (connected, line) = inspector_attempt(lane, &[]);
        assert!(
            !connected,
            "{lane:?}: the host reached the guest's inspector"
        );
        assert!(
            line.starts_with("refused ERR_PUSHNET_UNSUPPORTED"),
            "{lane:?}: {line}"
        );
    }
    // Allowed by the operator: the sandbox still keeps the port from the host.
    let (connected, line) = inspector_attempt(Lane::Guest, &[("PUSHNET_ALLOW_INSPECTOR", "1")]);
    assert!(
        !connected,
        "the host reached a sandboxed guest's inspector ({line})"
    );
}

/// A host process whose command line carries `marker` (until its stdin closes).
fn marked_process(marker: &str) -> Child {
    Command::new("sh")
        .args(["-c", "read _", "sh", marker])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting sh")
}

#[test]
fn proc_shows_no_host_command_line() {
    if !node_wanted() {
        return;
    }
    let marker = format!("pushnet-escape-marker-{}", std::process::id());
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    let mut host = marked_process(&marker);
    let scan = |lane: Lane| {
        let args = ["proc-scan".to_owned(), "0".to_owned(), hex.clone()];
        let (lines, stderr) = start(lane, &args, &[]).finish(&format!("proc-scan ({lane:?})"));
        let line = outcome("proc-scan", &lines, &stderr).to_owned();
        eprintln!("{lane:?}: route proc-scan: {line}");
        line
    };
    let plain = scan(Lane::Plain);
    let guest = scan(Lane::Guest);
    if let Some(mut stdin) = host.stdin.take() {
        let _ = stdin.write_all(b"\n");
    }
    let _ = host.wait();
    assert!(
        plain.starts_with("reached"),
        "under plain node the scan did not find the host process: {plain}"
    );
    assert!(
        guest.starts_with("refused"),
        "a guest read a host process's command line: {guest}"
    );
}
