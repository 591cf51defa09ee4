//! `sidecar run`'s network sandbox, seen from the child: no network but its session, only
//! its own processes, nothing left running after it, the same as an unprivileged user,
//! and `--no-sandbox` running it in the host's namespaces with a warning.
//!
//! These need a kernel that allows new namespaces. Where it refuses them, `run` refuses
//! to start, and these tests fail with its message (they are not skipped): a machine
//! that cannot sandbox cannot run untrusted guests.

#![cfg(target_os = "linux")]

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sidecar"))
}

/// `sidecar run --vm t [flags] -- sh -c SCRIPT`, its output; fails on a non-zero exit.
fn run_sh(flags: &[&str], script: &str, configure: impl FnOnce(&mut Command)) -> Output {
    let mut command = sidecar();
    command
        .args(["run", "--vm", "t"])
        .args(flags)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null());
    configure(&mut command);
    let out = command.output().expect("starting sidecar run");
    assert!(
        out.status.success(),
        "sidecar run failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn own_namespace(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_child_has_no_network_but_its_session() {
    let out = run_sh(
        &[],
        "readlink /proc/self/ns/net; cat /proc/net/dev; [ -S /dev/fd/3 ] && echo session",
        |_| {},
    );
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_ne!(lines.next(), Some(own_namespace("net").as_str()), "{text}");
    // /proc/net/dev: two header lines, then one line per interface: `lo` alone.
    let interfaces: Vec<&str> = lines
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains('|'))
        .collect();
    assert_eq!(interfaces, ["lo"], "{text}");
    assert!(
        text.contains("session"),
        "the session fd is missing: {text}"
    );
}

#[test]
fn the_child_sees_only_its_own_processes() {
    // A host process whose command line carries a marker, as a secret in argv would.
    let marker = format!("marker-{}", std::process::id());
    let mut host = Command::new("sh")
        .args(["-c", "read line", &marker])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // The script builds the marker from a variable, so that no command line of the
    // sandbox holds it (the script's own text names only the variable).
    let script = "m=marker-$MARKER_PID; n=0; echo pid $$; \
        for f in /proc/[0-9]*/cmdline; do \
            c=$(tr '\\0' ' ' < $f); case \"$c\" in *\"$m\"*) n=$((n+1));; esac; \
        done; echo $n";
    let out = run_sh(&[], script, |command| {
        command.env("MARKER_PID", std::process::id().to_string());
    });
    // Before the host process ends: it was running all along.
    let host_cmdline = std::fs::read(format!("/proc/{}/cmdline", host.id())).unwrap();
    drop(host.stdin.take());
    let _ = host.wait();
    assert!(String::from_utf8_lossy(&host_cmdline).contains(&marker));
    let text = stdout(&out);
    let mut lines = text.lines();
    // PID 1 is the sandbox's reaper; the command is PID 2.
    assert_eq!(lines.next(), Some("pid 2"), "{text}");
    assert_eq!(
        lines.next(),
        Some("0"),
        "a host command line was readable: {text}"
    );
}

#[test]
fn nothing_the_child_started_outlives_it() {
    // A background process that would print after its parent exits, and holds the
    // output pipe open meanwhile: it is killed with the sandbox, so the pipe ends at
    // once and it never prints.
    let out = run_sh(&[], "(sleep 20; echo survived) & echo started", |_| {});
    assert_eq!(stdout(&out), "started\n");
}

#[test]
fn an_unprivileged_user_gets_a_user_namespace() {
    // SAFETY: getuid(2) has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        // The suite already runs unprivileged: every other test here covers this path.
        return;
    }
    let out = run_sh(
        &[],
        "id -u; cat /proc/self/uid_map; echo pid $$",
        |command| {
            // (std drops root's supplementary groups when it sets the uid.)
            command.uid(65534).gid(65534);
        },
    );
    let text = stdout(&out);
    let fields: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(fields[0], ["65534"], "{text}");
    // The caller's own uid mapped to itself, nothing else: no root inside.
    assert_eq!(fields[1], ["65534", "65534", "1"], "{text}");
    assert_eq!(fields[2], ["pid", "2"], "{text}");
}

#[test]
fn no_sandbox_runs_in_the_host_namespaces_and_says_so() {
    let out = run_sh(
        &["--no-sandbox"],
        "readlink /proc/self/ns/net; readlink /proc/self/ns/pid",
        |_| {},
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [own_namespace("net"), own_namespace("pid")],
        "{text}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("without the network sandbox"),
        "no warning: {log}"
    );
}

#[test]
fn the_sandboxs_init_holds_nothing_of_run() {
    // `run`'s environment holds a marker; the reaper (PID 1, the one process of the
    // sandbox that is not the guest's) was a fork of `run` and re-executed itself clean
    // (its environment is empty, or unreadable to a guest with fewer capabilities).
    let out = run_sh(
        &[],
        "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/environ 2>/dev/null | wc -c",
        |command| {
            command.env("RUN_ONLY_MARKER", "do-not-leak");
        },
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines, ["pushnet-sandbox __sandbox-reaper 2", "0"], "{text}");
}

#[test]
fn the_guest_cannot_uncover_the_hosts_proc() {
    // Even as root: no CAP_SYS_ADMIN (bit 21) in its bounding set, so no umount (and no
    // setns); /proc stays the sandbox's own.
    let out = run_sh(
        &[],
        "grep CapBnd /proc/self/status; umount /proc 2>/dev/null; echo umount $?; \
         ls /proc | grep -c '^[0-9]'",
        |_| {},
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let bounding = lines[0].split_whitespace().nth(1).expect("CapBnd's value");
    let bounding = u64::from_str_radix(bounding, 16).expect("hex");
    assert_eq!(bounding & (1 << 21), 0, "CAP_SYS_ADMIN is left: {text}");
    assert_ne!(
        lines[1], "umount 0",
        "the guest unmounted its /proc: {text}"
    );
    let processes: u32 = lines[2].parse().expect("a count");
    assert!(processes < 10, "the host's processes are visible: {text}");
}
