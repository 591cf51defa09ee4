//! The network sandbox `sidecar run` starts its command in, on by default.
//!
//! A guest's only way to the network must be its sidecar session: the policy, the VM's
//! private loopback and the limits all live there. Patching a runtime's socket modules
//! cannot promise that (a program reaches native sockets through child processes,
//! workers, native addons, or internals of the runtime), so the kernel draws the line:
//!
//! - Linux ([`linux`]): fresh network, PID, mount and (when not root) user namespaces.
//!   The network namespace has only a `lo` that is down, so nothing is reachable but the
//!   session fds the child inherits; the PID namespace has its own `/proc`, so no other
//!   process's command line or environment can be read. Every descendant inherits it.
//! - macOS ([`macos`]): `sandbox-exec` with a profile that denies network operations;
//!   the inherited session fds stay usable. Untested on this project's machines.
//! - Elsewhere, or where the kernel refuses namespaces, `run` refuses to start and names
//!   the cause and `--no-sandbox`; it never runs a command unsandboxed unless told to.

#[cfg(target_os = "linux")]
pub mod linux;
// Compiled in every test build too, so the Linux CI at least builds and checks it.
#[cfg(any(target_os = "macos", test))]
pub mod macos;

use std::ffi::OsString;
use std::process::Command;

use anyhow::Result;

/// The opt-out, named in every refusal.
pub const OPT_OUT: &str = "--no-sandbox";

/// A command about to be started in the sandbox. Call [`Prepared::spawned`] right after
/// `spawn`, whatever it returned: it says whether the sandbox was set up.
pub struct Prepared {
    pub command: Command,
    #[cfg(target_os = "linux")]
    report: Option<linux_report::Report>,
}

impl Prepared {
    /// `run` without a sandbox (`--no-sandbox`): the command as it is.
    pub fn unsandboxed(program: &OsString, args: &[OsString]) -> Prepared {
        let mut command = Command::new(program);
        command.args(args);
        Prepared {
            command,
            #[cfg(target_os = "linux")]
            report: None,
        }
    }

    /// The command, to be started in the sandbox. On Linux this adds the last
    /// `pre_exec` step: call it after every other `pre_exec` of the command.
    pub fn sandboxed(program: &OsString, args: &[OsString]) -> Result<Prepared> {
        #[cfg(target_os = "linux")]
        {
            let mut prepared = Prepared::unsandboxed(program, args);
            prepared.report = Some(linux_report::Report::new()?);
            Ok(prepared)
        }
        #[cfg(target_os = "macos")]
        {
            Ok(Prepared {
                command: macos::command(program, args)?,
            })
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        {
            let _ = (program, args);
            anyhow::bail!(
                "sidecar run has no network sandbox on this operating system; run with \
                 {OPT_OUT} to start the command without one (it can then reach every network \
                 the host can: not for untrusted code)"
            )
        }
    }

    /// Installs the sandbox step (Linux); must come after the command's other
    /// `pre_exec` steps, which run first in the order they were added.
    pub fn install(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(report) = &self.report {
            let fd = report.write_fd();
            // SAFETY: `enter` makes only async-signal-safe system calls (see linux.rs).
            unsafe {
                use std::os::unix::process::CommandExt;
                self.command.pre_exec(move || linux::enter(fd));
            }
        }
    }

    /// After `spawn`: `Err` with the cause when the sandbox could not be set up (the
    /// child, if any, has then exited or is about to).
    pub fn spawned(&mut self) -> Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(report) = self.report.take() {
            return report.read();
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod linux_report {
    //! The report pipe: the sandbox's setup steps write `stage\0errno` here before they
    //! fail; an empty pipe at end of file means the command was started in the sandbox.

    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use anyhow::{bail, Context, Result};

    use super::OPT_OUT;

    pub struct Report {
        read: std::fs::File,
        write: Option<OwnedFd>,
    }

    impl Report {
        pub fn new() -> Result<Report> {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills the two fds on success.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("creating the sandbox's report pipe");
            }
            // SAFETY: both fds are new and ours.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // Above the session fds the child places at 3 and 4, so that placing them
            // cannot overwrite it.
            // SAFETY: fcntl on an fd we own.
            let high = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            if high < 0 {
                return Err(std::io::Error::last_os_error())
                    .context("moving the sandbox's report pipe");
            }
            drop(write);
            // SAFETY: `high` is a new fd of ours.
            let write = unsafe { OwnedFd::from_raw_fd(high) };
            Ok(Report {
                read: std::fs::File::from(read),
                write: Some(write),
            })
        }

        pub fn write_fd(&self) -> RawFd {
            self.write.as_ref().map_or(-1, AsRawFd::as_raw_fd)
        }

        /// Reads the pipe to its end (every process of the setup closes it when done:
        /// the guest at exec) and turns a report into the error to show.
        pub fn read(mut self) -> Result<()> {
            drop(self.write.take());
            let mut message = Vec::new();
            self.read
                .read_to_end(&mut message)
                .context("reading the sandbox's report pipe")?;
            if message.is_empty() {
                return Ok(());
            }
            let (stage, errno) = parse(&message);
            let error = std::io::Error::from_raw_os_error(errno);
            bail!("{}", explain(&stage, &error))
        }
    }

    fn parse(message: &[u8]) -> (String, i32) {
        let mut parts = message.splitn(2, |&b| b == 0);
        let stage = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let errno = parts
            .next()
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0);
        (stage, errno)
    }

    /// What went wrong, why that happens, and the way out.
    pub fn explain(stage: &str, error: &std::io::Error) -> String {
        let cause = match stage {
            "unshare" => {
                "the kernel refused to create the sandbox's namespaces (network, PID, \
                          mount, and user when not root): namespaces may be disabled \
                          (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, \
                          kernel.apparmor_restrict_unprivileged_userns) or refused by a \
                          container's seccomp profile"
            }
            "setgroups" | "uid_map" | "gid_map" => {
                "the kernel refused to map the caller's ids into the sandbox's user namespace"
            }
            "mount-private" | "mount-proc" => {
                "the sandbox could not mount its own /proc (a container may hide parts of the \
                 host's /proc, which forbids a new one)"
            }
            _ => "the sandbox could not be set up",
        };
        format!(
            "cannot start the command in the network sandbox: {cause} ({stage}: {error}). Run \
             with {OPT_OUT} to start it without one (it can then reach every network the host \
             can: not for untrusted code)"
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_report_names_the_step_the_errno_and_the_opt_out() {
            let (stage, errno) = parse(b"unshare\x001");
            assert_eq!((stage.as_str(), errno), ("unshare", 1));
            let text = explain(&stage, &std::io::Error::from_raw_os_error(errno));
            assert!(text.contains("unshare: Operation not permitted"), "{text}");
            assert!(text.contains("--no-sandbox"), "{text}");
        }
    }
}
