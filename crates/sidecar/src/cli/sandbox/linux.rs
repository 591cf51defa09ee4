//! The Linux sandbox: the command starts in fresh namespaces (network, PID with its own
//! `/proc`, mount, and user when `run` is not root), set up in the forked child before
//! exec, with raw system calls only (the parent is multi-threaded, so nothing between
//! fork and exec may allocate or take a lock).
//!
//! Why three processes. The first process of a new PID namespace is its init: the kernel
//! delivers it only the signals it has a handler for, so a program running as PID 1
//! would ignore SIGTERM and even its own `kill -9`. So the fork that `Command` makes
//! (the *keeper*, in the host's PID namespace; the pid `run` knows) unshares, then forks
//! the namespace's init (the *reaper*, PID 1: it mounts `/proc`, reaps orphans and
//! forwards signals), which forks the *guest* (PID 2) that returns to `Command` and
//! execs the command. The guest's exit status travels back up: the reaper exits with it
//! (128 + N for signal N, as a shell reports it), and so does the keeper. When the guest
//! ends, the reaper exits and the kernel kills whatever the guest left behind in the
//! namespace: nothing of a sandboxed program outlives it.
//!
//! The reaper is the one process of the namespace besides the guest's own, and a fork
//! of `run`: a copy of its memory (the config, a VM's secret for `--connect`) that a
//! same-user guest could read through `/proc/1/mem` or `/proc/1/environ`. So once it
//! has forked the guest it execs a clean image of this binary (`__sandbox-reaper`,
//! [`reaper_main`]) with an empty environment: nothing of `run` is left inside.
//!
//! The guest keeps no capability: with a user namespace the command runs as the
//! caller's own uid mapped to itself, and `execve` of a non-zero uid drops every
//! capability, so it cannot unmount the private `/proc` to uncover the host's. Run as
//! root, there is no user namespace and the child stays root, but with its bounding set
//! cut to a container's defaults ([`KEPT_CAPABILITIES`]: no `CAP_SYS_ADMIN`, so no
//! umount or setns; no ptrace, modules, device nodes). Root still reads and writes the
//! host's files, so untrusted code should not run as root; `docs/security.md` says so.
//!
//! Setup failures are written to a report pipe as `stage\0errno` before the process
//! fails, so `run` can say which step the kernel refused.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Where a step of the setup failed, as written to the report pipe.
pub const STAGES: &[&str] = &[
    "unshare",
    "setgroups",
    "uid_map",
    "gid_map",
    "fork",
    "mount-private",
    "mount-proc",
    "exec-reaper",
];

const STAGE_UNSHARE: usize = 0;
const STAGE_SETGROUPS: usize = 1;
const STAGE_UID_MAP: usize = 2;
const STAGE_GID_MAP: usize = 3;
const STAGE_FORK: usize = 4;
const STAGE_MOUNT_PRIVATE: usize = 5;
const STAGE_MOUNT_PROC: usize = 6;
const STAGE_EXEC_REAPER: usize = 7;

/// The process the forwarding handler passes signals to (0: none yet).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

/// Signals the keeper and the reaper pass down to the guest.
const FORWARDED: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGHUP];
/// Signals a terminal sends to the whole foreground process group, the guest included:
/// the keeper and the reaper catch them and do nothing (a caught signal, unlike an
/// ignored one, is back to its default in the guest after exec).
const SWALLOWED: [libc::c_int; 2] = [libc::SIGINT, libc::SIGQUIT];

/// Runs in `Command`'s forked child, as its last `pre_exec` step. Returns only in the
/// guest (which then execs); the keeper and the reaper end with `_exit`. `report` is the
/// write end of the report pipe (close-on-exec).
///
/// # Safety
/// Only in a forked child before exec: it forks, and ends processes with `_exit`.
pub unsafe fn enter(report: RawFd) -> io::Result<()> {
    // SAFETY (whole function): only async-signal-safe system calls on fds and buffers we
    // own; no allocation, no lock.
    let uid = unsafe { libc::getuid() };
    let gid = unsafe { libc::getgid() };
    let mut flags = libc::CLONE_NEWNET | libc::CLONE_NEWPID | libc::CLONE_NEWNS;
    let with_user = uid != 0;
    if with_user {
        flags |= libc::CLONE_NEWUSER;
    }
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(failed(report, STAGE_UNSHARE));
    }
    if with_user {
        // Map our own ids to themselves: the only mapping an unprivileged process may
        // write, and one that leaves the command without capabilities after exec.
        write_file(c"/proc/self/setgroups", b"deny")
            .map_err(|_| failed(report, STAGE_SETGROUPS))?;
        write_id_map(c"/proc/self/uid_map", uid).map_err(|_| failed(report, STAGE_UID_MAP))?;
        write_id_map(c"/proc/self/gid_map", gid).map_err(|_| failed(report, STAGE_GID_MAP))?;
    }
    match unsafe { libc::fork() } {
        -1 => Err(failed(report, STAGE_FORK)),
        0 => unsafe { reaper(report) },
        reaper_pid => unsafe { keeper(reaper_pid) },
    }
}

/// The keeper: waits for the reaper and exits as it did; passes signals on to it.
unsafe fn keeper(reaper: libc::pid_t) -> ! {
    FORWARD_TO.store(reaper, Ordering::SeqCst);
    unsafe {
        forward_signals();
        close_range(3, RawFd::MAX);
        libc::_exit(wait_exit_code(reaper))
    }
}

/// The reaper, PID 1 of the namespace: mounts `/proc`, forks the guest (which returns),
/// then reaps every process until the guest ends, and exits with the guest's status.
unsafe fn reaper(report: RawFd) -> io::Result<()> {
    unsafe {
        // Handlers first: as PID 1, a signal it has no handler for is dropped. When the
        // keeper dies, the reaper does, and with it the namespace.
        forward_signals();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Mount events stay in this namespace; then a /proc of this PID namespace.
        let none = std::ptr::null();
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            fail_exit(report, STAGE_MOUNT_PRIVATE);
        }
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            proc_flags,
            std::ptr::null(),
        ) != 0
        {
            fail_exit(report, STAGE_MOUNT_PROC);
        }
        let guest = libc::fork();
        if guest == -1 {
            fail_exit(report, STAGE_FORK);
        }
        if guest == 0 {
            // The guest: if the reaper vanishes, so does it. Its handlers (the
            // forwarding one) reset to the default at exec.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            FORWARD_TO.store(0, Ordering::SeqCst);
            drop_capabilities();
            return Ok(());
        }
        // Now become a clean image: this process is a copy of `run`'s memory (its
        // config, a VM's secret) and the guest can read a same-user process's
        // /proc/1/environ and /proc/1/mem. Signals stay blocked across exec until the
        // new image has its handlers, so none is lost meanwhile.
        block_forwarded(libc::SIG_BLOCK);
        close_from(3, report);
        let mut pid_text = [0u8; 24];
        let length = format_decimal(guest as u64, &mut pid_text);
        pid_text[length] = 0;
        let argv = [
            c"pushnet-sandbox".as_ptr(),
            REAPER_ARG.as_ptr(),
            pid_text.as_ptr().cast(),
            std::ptr::null(),
        ];
        let envp = [std::ptr::null()];
        libc::execve(c"/proc/self/exe".as_ptr(), argv.as_ptr(), envp.as_ptr());
        // Fail closed: no guest runs beside a reaper that holds `run`'s memory.
        libc::kill(guest, libc::SIGKILL);
        fail_exit(report, STAGE_EXEC_REAPER);
    }
}

/// The reaper's clean image (`sidecar __sandbox-reaper PID`, exec'd by [`reaper`] with an
/// empty environment): forwards signals to the guest, reaps every process of the
/// namespace, and exits with the guest's status (which ends the namespace).
pub fn reaper_main(guest: libc::pid_t) -> ! {
    FORWARD_TO.store(guest, Ordering::SeqCst);
    // SAFETY: signal dispositions and waits of our own children; `_exit` ends us.
    unsafe {
        forward_signals();
        block_forwarded(libc::SIG_UNBLOCK);
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == guest {
                libc::_exit(exit_code(status));
            }
            if pid == -1 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

/// Capabilities a guest keeps in its bounding set: those a container runtime leaves an
/// unprivileged container (files, ids, signals, low ports, raw sockets, chroot), minus
/// `CAP_MKNOD` (no device cgroup here would stop a device node). Every other one (among
/// them `CAP_SYS_ADMIN`: mount, umount, setns; `CAP_SYS_PTRACE`; `CAP_SYS_MODULE`;
/// `CAP_DAC_READ_SEARCH`; `CAP_NET_ADMIN`) is dropped before exec, so that a guest run as
/// root cannot unmount its `/proc` to uncover the host's, or enter another namespace.
const KEPT_CAPABILITIES: [libc::c_int; 12] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 29];

/// Drops every capability but [`KEPT_CAPABILITIES`] from the bounding set (numbers the
/// kernel does not know fail with EINVAL, which is fine).
unsafe fn drop_capabilities() {
    for capability in 0..64 {
        if !KEPT_CAPABILITIES.contains(&capability) {
            // SAFETY: prctl(2) on this process's own bounding set.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) };
        }
    }
}

/// `argv[1]` of the reaper's clean image.
pub const REAPER_ARG: &std::ffi::CStr = c"__sandbox-reaper";

/// Blocks (or unblocks) the forwarded and swallowed signals.
unsafe fn block_forwarded(how: libc::c_int) {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in FORWARDED.iter().chain(SWALLOWED.iter()) {
            libc::sigaddset(&mut set, *signal);
        }
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

/// Closes every fd from `first` up, except `keep`.
unsafe fn close_from(first: RawFd, keep: RawFd) {
    unsafe {
        if keep < first {
            close_range(first, RawFd::MAX);
            return;
        }
        if keep > first {
            close_range(first, keep - 1);
        }
        if keep < RawFd::MAX {
            close_range(keep + 1, RawFd::MAX);
        }
    }
}

/// Writes `stage\0errno` to the report pipe and returns the error to fail with.
fn failed(report: RawFd, stage: usize) -> io::Error {
    let error = io::Error::last_os_error();
    let errno = error.raw_os_error().unwrap_or(0);
    let mut message = [0u8; 64];
    let name = STAGES[stage].as_bytes();
    message[..name.len()].copy_from_slice(name);
    let mut length = name.len() + 1;
    length += format_decimal(errno as u64, &mut message[length..]);
    // SAFETY: write(2) from a buffer we own.
    unsafe { libc::write(report, message.as_ptr().cast(), length) };
    error
}

unsafe fn fail_exit(report: RawFd, stage: usize) -> ! {
    failed(report, stage);
    unsafe { libc::_exit(126) }
}

/// `ID ID 1`: the id mapped to itself.
fn write_id_map(path: &std::ffi::CStr, id: u32) -> io::Result<()> {
    let mut line = [0u8; 48];
    let mut length = format_decimal(u64::from(id), &mut line);
    line[length] = b' ';
    length += 1;
    length += format_decimal(u64::from(id), &mut line[length..]);
    line[length..length + 3].copy_from_slice(b" 1\n");
    write_file(path, &line[..length + 3])
}

fn write_file(path: &std::ffi::CStr, contents: &[u8]) -> io::Result<()> {
    // SAFETY: open/write/close on a path and a buffer we own.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, contents.as_ptr().cast(), contents.len());
        let error = io::Error::last_os_error();
        libc::close(fd);
        if written != contents.len() as isize {
            return Err(error);
        }
    }
    Ok(())
}

/// Writes `value` in decimal at the start of `out`; returns the length.
fn format_decimal(mut value: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    n
}

extern "C" fn swallow(_signal: libc::c_int) {}

extern "C" fn pass_on(signal: libc::c_int) {
    let target = FORWARD_TO.load(Ordering::SeqCst);
    if target > 0 {
        // SAFETY: kill(2) is async-signal-safe; the target is our own child.
        unsafe { libc::kill(target, signal) };
    }
}

unsafe fn forward_signals() {
    let handlers = FORWARDED
        .iter()
        .map(|&signal| (signal, pass_on as extern "C" fn(libc::c_int)))
        .chain(
            SWALLOWED
                .iter()
                .map(|&signal| (signal, swallow as extern "C" fn(libc::c_int))),
        );
    for (signal, handler) in handlers {
        // SAFETY: a zeroed sigaction with a handler that at most calls kill(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

unsafe fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: close_range(2) (Linux 5.9); on an older kernel, close one by one up to the
    // fd limit.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0,
        ) == 0
        {
            return;
        }
        let mut limit: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as RawFd
        } else {
            1024
        };
        for fd in first..=last.min(max) {
            libc::close(fd);
        }
    }
}

/// Waits for `pid` (retrying on EINTR) and returns the exit code to pass on.
unsafe fn wait_exit_code(pid: libc::pid_t) -> libc::c_int {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got == pid {
            return exit_code(status);
        }
        // SAFETY: reading errno.
        if got == -1 && unsafe { *libc::__errno_location() } != libc::EINTR {
            return 1;
        }
    }
}

/// A wait status as an exit code: the code, or 128 + N when signal N ended the process.
fn exit_code(status: libc::c_int) -> libc::c_int {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut out = [0u8; 20];
        let n = format_decimal(0, &mut out);
        assert_eq!(&out[..n], b"0");
        let n = format_decimal(1000, &mut out);
        assert_eq!(&out[..n], b"1000");
        let n = format_decimal(u64::MAX, &mut out);
        assert_eq!(&out[..n], u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn wait_statuses_become_shell_exit_codes() {
        assert_eq!(exit_code(7 << 8), 7);
        assert_eq!(exit_code(libc::SIGKILL), 128 + 9);
    }
}
