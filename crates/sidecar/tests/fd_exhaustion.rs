//! A host client that holds more connections to a published port than the sidecar has
//! fds (the `sidecar serve` binary, started with `RLIMIT_NOFILE` 256 in the child only):
//! the guest sockets stop at the fd budget (the limit less `fd_reserve`), so another VM
//! still attaches and echoes; once the process is out of fds for good (attaches fill the
//! reserve), both acceptors shed and back off instead of spinning; the log stays small
//! (rate-limited), the published port works again once the attacker leaves, and SIGTERM
//! still stops the process within its grace period. `sidecar run` raises its own fd
//! limit and gives its child the original.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{free_port, RawGuest, Wire, DEADLINE};

/// The child's fd limit (soft = hard, so the sidecar cannot raise it).
const FD_LIMIT: u64 = 256;
/// More connections than the child has fds.
const ATTACK: usize = 400;
/// The in-VM port VM a's published port leads to, and VM b's echo port.
const PUBLISHED: u16 = 8080;
const ECHO: u16 = 9000;
/// At most this many log lines while an attack lasts: each site logs once a second.
const MAX_LOG_LINES: usize = 40;

/// The running `sidecar serve --listen` child and its log.
struct Served {
    /// `None` once it has been stopped.
    child: Option<Child>,
    socket: PathBuf,
    host: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts the binary with `[limits] fd_reserve = reserve`, VM a (publishing a host port
    /// to its in-VM port 8080) and VM b; returns once it listens.
    fn start(reserve: usize) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let host: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.path().join("sidecar.toml");
        std::fs::write(
            &config,
            format!(
                "[limits]\nfd_reserve = {reserve}\n\
                 [[vm]]\nname = \"a\"\nsecret = \"sa\"\n\
                 [[vm.publish]]\nhost = \"{host}\"\nport = {PUBLISHED}\n\
                 [[vm]]\nname = \"b\"\nsecret = \"sb\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sidecar"));
        command
            .args(["serve", "--listen", socket.to_str().unwrap(), "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        // SAFETY: only setrlimit, in the forked child before exec.
        unsafe {
            command.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: FD_LIMIT as libc::rlim_t,
                    rlim_max: FD_LIMIT as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, log) = mpsc::channel();
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let line = plain(&line);
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut served = Served {
            child: Some(child),
            socket,
            host,
            lines,
            log,
            _dir: dir,
        };
        served.wait_for_log("listening");
        served
    }

    /// Waits (bounded) for a log line containing `needle`; panics past the deadline.
    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?}: {:#?}", self.lines()),
            }
        }
    }

    /// Whether a line containing `needle` was logged since the last look (no wait).
    fn logged(&mut self, needle: &str) -> bool {
        self.log.try_iter().any(|line| line.contains(needle))
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn line_count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn attach(&self, vm: &str, secret: &str) -> RawGuest {
        RawGuest::attach(
            Wire::Unix(UnixStream::connect(&self.socket).unwrap()),
            vm,
            secret,
        )
    }

    /// SIGTERM, then the exit, which must come within the grace period and a margin.
    /// The whole log.
    fn terminate(mut self) -> Vec<String> {
        let bound = sidecar::shutdown::FLUSH_GRACE + Duration::from_secs(8);
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(bound) {
            Ok(status) => assert!(status.unwrap().success(), "{:#?}", self.lines()),
            Err(_) => {
                // SAFETY: our own child, still running.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!(
                    "SIGTERM: still running after {bound:?}: {:#?}",
                    self.lines()
                );
            }
        }
        assert!(!Path::new(&self.socket).exists(), "the socket file stayed");
        // The log ends with the process (the reader thread sees end of file).
        let deadline = Instant::now() + DEADLINE;
        while self.log.recv_timeout(deadline - Instant::now()).is_ok() {}
        self.lines()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `line` without its terminal colour sequences (`ESC [ ... m`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Two guests of VM b: a server listening on the echo port, and a client connected to it.
struct Echo {
    server: RawGuest,
    client: RawGuest,
    server_sock: u64,
    client_sock: u64,
}

impl Echo {
    fn attach(served: &Served) -> Echo {
        let mut server = served.attach("b", "sb");
        let mut client = served.attach("b", "sb");
        server
            .call("net.listen", json!({"port": ECHO}), b"")
            .unwrap();
        let (client_sock, _) = client.connect_ok("localhost", ECHO);
        let (accept, _, _) = server.event_of("accept");
        let server_sock = accept["socket"].as_u64().unwrap();
        Echo {
            server,
            client,
            server_sock,
            client_sock,
        }
    }

    /// `rounds` echoes client → server → client.
    fn echoes(&mut self, rounds: usize) {
        for round in 0..rounds {
            let ping = format!("ping {round}");
            self.client.send_call(
                "net.write",
                json!({"socket": self.client_sock}),
                ping.as_bytes(),
                true,
            );
            let got = self.server.read_data(self.server_sock, ping.len());
            assert_eq!(got, ping.as_bytes());
            self.server
                .send_call("net.write", json!({"socket": self.server_sock}), &got, true);
            assert_eq!(self.client.read_data(self.client_sock, got.len()), got);
        }
    }
}

/// Opens `n` connections to `host` (held), ignoring those the kernel does not complete.
fn flood(host: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&host, Duration::from_secs(1)).ok())
        .collect()
}

/// VM a's guest, after the attacker left: destroys every connection it was handed, then
/// a new client of the published port reaches it and gets its answer.
fn published_port_works_again(served: &Served, a: &mut RawGuest, attackers: Vec<TcpStream>) {
    drop(attackers);
    // The guest lets go of every connection it was handed (their accepts all came before
    // the stats reply).
    let mut handed = a.stats()["vm"]["sockets"].as_u64().unwrap() - 1; // less the server
    while handed > 0 {
        let (event, _) = a.event();
        if event["event"] == "accept" {
            a.send_call("net.destroy", json!({"socket": event["socket"]}), b"", true);
            handed -= 1;
        }
    }
    assert_eq!(a.stats()["vm"]["sockets"], 1, "every destroy is served");
    let mut client = TcpStream::connect(served.host).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let port = client.local_addr().unwrap().port();
    let sock = loop {
        let (event, _) = a.event();
        match event["event"].as_str().unwrap() {
            "accept" if event["remote"]["port"] == port => break event["socket"].clone(),
            // A late attacker connection (accepted after it closed): let it go too.
            "accept" => {
                a.send_call("net.destroy", json!({"socket": event["socket"]}), b"", true);
            }
            _ => {}
        }
    };
    a.call("net.write", json!({"socket": sock}), b"back again")
        .unwrap();
    let mut got = [0u8; 10];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"back again");
    client.write_all(b"!").unwrap();
}

/// A sidecar with the default reserve, and VM a's guest listening behind the published
/// port (a deep backlog, so the sidecar takes connections until its fds run out).
fn served_with_listener() -> (Served, RawGuest) {
    let served = Served::start(64);
    let mut a = served.attach("a", "sa");
    a.call(
        "net.listen",
        json!({"port": PUBLISHED, "backlog": 1000}),
        b"",
    )
    .unwrap();
    (served, a)
}

/// The default reserve: VM a's published connections stop at the budget (the rest are
/// closed), so VM b attaches during the attack and echoes; afterwards the published port
/// serves a new client.
#[test]
fn a_published_port_flood_stops_at_the_fd_budget_and_another_vm_attaches_and_echoes() {
    let (mut served, mut a) = served_with_listener();
    // A guest sees its VM's socket limit clamped to the fds the process can hold.
    assert_eq!(
        a.stats()["vm"]["sockets_limit"],
        FD_LIMIT - 64,
        "sockets_per_vm clamped to the fd limit less the reserve"
    );
    let before = served.line_count();
    let attackers = flood(served.host, ATTACK);
    assert!(
        attackers.len() > FD_LIMIT as usize,
        "the flood did not connect"
    );
    served.wait_for_log("published connection closed");
    // (b) Another VM attaches (an fd of the reserve) and echoes in its VM meanwhile.
    let mut echo = Echo::attach(&served);
    echo.echoes(5);
    let held = a.stats()["vm"]["sockets"].as_u64().unwrap();
    assert!(
        held < FD_LIMIT - 64,
        "VM a holds {held} sockets, past the budget"
    );
    // (a) The log stayed small: rate-limited, not a line per connection.
    let during = served.line_count() - before;
    assert!(
        during < MAX_LOG_LINES,
        "{during} log lines: {:#?}",
        served.lines()
    );
    // (c) The attacker leaves: the published port works again.
    published_port_works_again(&served, &mut a, attackers);
    echo.echoes(1);
    let log = served.terminate();
    assert!(!log.iter().any(|l| l.contains("did not read")), "{log:#?}");
}

/// The process out of fds for good (the attach reserve filled too): both acceptors shed
/// connections and back off, the log stays small, a session attached before keeps
/// echoing, and SIGTERM stops the process within its bound.
#[test]
fn out_of_fds_the_acceptors_shed_and_back_off_and_sigterm_still_stops_the_sidecar() {
    let (mut served, a) = served_with_listener();
    let mut echo = Echo::attach(&served);
    let before = served.line_count();
    let mut attackers = flood(served.host, ATTACK);
    served.wait_for_log("published connection closed");
    // Connections to the Unix listener (never a hello) take the reserve, until its
    // accept fails for want of fds.
    let mut unattached = Vec::new();
    while !served.logged("accept on the Unix listener failed") && unattached.len() < 300 {
        unattached.push(UnixStream::connect(&served.socket).unwrap());
    }
    served.wait_for_log_or_seen("accept on the Unix listener failed");
    // The published port, out of fds too, sheds new connections.
    attackers.extend(flood(served.host, 50));
    served.wait_for_log_or_seen("accept on a published port failed");
    // A session attached before is served all along.
    echo.echoes(5);
    let during = served.line_count() - before;
    assert!(
        during < MAX_LOG_LINES,
        "{during} log lines: {:#?}",
        served.lines()
    );
    assert!(
        served.lines().iter().any(|l| l.contains("shedding")),
        "{:#?}",
        served.lines()
    );

    // (d) SIGTERM under the attack. Only VM a's guest, which never reads, may hold the
    // flush up (to the grace period): the connections that never said hello do not.
    let log = served.terminate();
    for line in log.iter().filter(|l| l.contains("did not read")) {
        assert!(line.contains("sessions=1 "), "{line}");
    }
    drop((attackers, unattached, a, echo));
}

impl Served {
    /// As [`Served::wait_for_log`], counting a line already seen by [`Served::logged`].
    fn wait_for_log_or_seen(&mut self, needle: &str) {
        if self.lines().iter().any(|l| l.contains(needle)) {
            return;
        }
        self.wait_for_log(needle);
    }
}

/// In process: the operator sees the fd use; a host socket past the budget fails
/// `ENFILE` for the guest that asked (counted), while in-VM sockets, which hold no fd, go
/// on; a reload that gives the budget room back lets host connects through again.
#[test]
fn a_host_connect_past_the_fd_budget_fails_enfile_and_in_vm_sockets_go_on() {
    let mut config = sidecar::SidecarConfig::default()
        .with_vm("a", "sa")
        .with_allow("127.0.0.1".parse().unwrap());
    let h = support::Harness::with_config(config.clone());
    let fds = h.stats()["fds"].clone();
    let (open, limit) = (
        fds["open"].as_u64().unwrap(),
        fds["limit"].as_u64().unwrap(),
    );
    assert!(open > 0 && open < limit, "{fds}");
    assert_eq!(fds["reserve"], 64);
    // A session over the Unix socket holds one fd, counted.
    let mut g = h.guest(support::Transport::Unix);
    let open = h.stats()["fds"]["open"].as_u64().unwrap();
    assert_eq!(open, fds["open"].as_u64().unwrap() + 1);
    // Leave the guests no fd: everything not open yet is reserved.
    config.limits.fd_reserve = (limit - open) as usize;
    h.sidecar.reload(config.clone()).unwrap();
    let native = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = native.local_addr().unwrap().port();
    let refused = g
        .call(
            "net.connect",
            json!({"host": "127.0.0.1", "port": port}),
            b"",
        )
        .unwrap_err();
    assert_eq!(refused["code"], "ENFILE", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("reserved"),
        "{refused}"
    );
    assert_eq!(h.stats()["fd_budget_refused"], 1);
    // In-VM sockets hold no fd.
    let listened = g.call("net.listen", json!({"port": 7000}), b"").unwrap();
    let (_, _) = g.connect_ok("localhost", 7000);
    // Room again: the host connect goes through.
    config.limits.fd_reserve = 64;
    h.sidecar.reload(config).unwrap();
    g.connect_ok("127.0.0.1", port);
    drop((listened, native));
}

/// `sidecar run` raises its own soft fd limit to the hard one, and its child (the guest)
/// gets the soft limit `run` was started with back.
#[test]
fn run_raises_its_fd_limit_and_its_child_gets_the_original_back() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sidecar"));
    command
        .args(["run", "--vm", "a", "--", "sh", "-c", "ulimit -Sn"])
        .env("RUST_LOG", "info");
    // SAFETY: only getrlimit/setrlimit, in the forked child before exec.
    unsafe {
        command.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = 300.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let log = plain(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "300", "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("fd limit"))
        .unwrap_or_default();
    assert!(line.contains("was=300"), "{log}");
    assert!(!line.contains("fd_limit=300 "), "not raised: {line}");
}
