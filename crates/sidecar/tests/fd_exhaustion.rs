//! A host client that holds more connections to a published port than the sidecar has
//! fds (the `sidecar serve` binary, started with `RLIMIT_NOFILE` 256 in the child only):
//! the guest sockets stop at the fd budget (the limit less `fd_reserve`), so another VM
//! still attaches and echoes; once the process is out of fds for good (attaches fill the
//! reserve), both acceptors shed and back off instead of spinning; the log stays small
//! (rate-limited), the published port works again once the attacker leaves, and SIGTERM
//! still stops the process within its grace period. `sidecar run` raises its own fd
//! limit and gives its child the original.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::child::{plain, Served};
use support::{free_port, RawGuest, DEADLINE};

/// The child's fd limit (soft = hard, so the sidecar cannot raise it).
const FD_LIMIT: u64 = 256;
/// More connections than the child has fds.
const ATTACK: usize = 400;
/// The in-VM port VM a's published port leads to, and VM b's echo port.
const PUBLISHED: u16 = 8080;
const ECHO: u16 = 9000;
/// At most this many log lines while an attack lasts: each site logs once a second.
const MAX_LOG_LINES: usize = 40;

/// Starts the binary (fd limit [`FD_LIMIT`]) with `[limits] fd_reserve = reserve`, VM a
/// (publishing a host port to its in-VM port 8080) and VM b; returns once it listens,
/// with the published host address.
fn start(reserve: usize) -> (Served, SocketAddr) {
    let host: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        "[limits]\nfd_reserve = {reserve}\n\
         [[vm]]\nname = \"a\"\nsecret = \"sa\"\n\
         [[vm.publish]]\nhost = \"{host}\"\nport = {PUBLISHED}\n\
         [[vm]]\nname = \"b\"\nsecret = \"sb\"\n"
    );
    (Served::start(&config, Some(FD_LIMIT)), host)
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
fn published_port_works_again(host: SocketAddr, a: &mut RawGuest, attackers: Vec<TcpStream>) {
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
    let mut client = TcpStream::connect(host).unwrap();
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
fn served_with_listener() -> (Served, SocketAddr, RawGuest) {
    let (served, host) = start(64);
    let mut a = served.attach("a", "sa");
    a.call(
        "net.listen",
        json!({"port": PUBLISHED, "backlog": 1000}),
        b"",
    )
    .unwrap();
    (served, host, a)
}

/// The default reserve: VM a's published connections stop at the budget (the rest are
/// closed), so VM b attaches during the attack and echoes; afterwards the published port
/// serves a new client.
#[test]
fn a_published_port_flood_stops_at_the_fd_budget_and_another_vm_attaches_and_echoes() {
    let (mut served, host, mut a) = served_with_listener();
    // A guest sees its VM's socket limit clamped to the fds the process can hold.
    assert_eq!(
        a.stats()["vm"]["sockets_limit"],
        FD_LIMIT - 64,
        "sockets_per_vm clamped to the fd limit less the reserve"
    );
    let before = served.line_count();
    let attackers = flood(host, ATTACK);
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
    published_port_works_again(host, &mut a, attackers);
    echo.echoes(1);
    let log = served.terminate();
    assert!(!log.iter().any(|l| l.contains("did not read")), "{log:#?}");
}

/// The process out of fds for good (the attach reserve filled too): both acceptors shed
/// connections and back off, the log stays small, a session attached before keeps
/// echoing, and SIGTERM stops the process within its bound.
#[test]
fn out_of_fds_the_acceptors_shed_and_back_off_and_sigterm_still_stops_the_sidecar() {
    let (mut served, host, a) = served_with_listener();
    let mut echo = Echo::attach(&served);
    let before = served.line_count();
    let mut attackers = flood(host, ATTACK);
    served.wait_for_log("published connection closed");
    // Connections to the Unix listener (never a hello) take the reserve, until its
    // accept fails for want of fds.
    let mut unattached = Vec::new();
    while !served.logged("accept on the Unix listener failed") && unattached.len() < 300 {
        unattached.push(UnixStream::connect(&served.socket).unwrap());
    }
    served.wait_for_log_or_seen("accept on the Unix listener failed");
    // The published port, out of fds too, sheds new connections.
    attackers.extend(flood(host, 50));
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
