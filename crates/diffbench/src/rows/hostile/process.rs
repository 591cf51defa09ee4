//! The sidecar `hostile_p99` attacks: a `sidecar serve --listen` process of its own, so
//! what the attacks make it hold (resident memory, fds, CPU) is read off that process
//! alone, and so its open-file limit can be set low for it only (`setrlimit` in the child,
//! soft and hard alike, so the sidecar cannot raise it back) without touching the
//! machine or the bench.
//!
//! Its two VMs are the run's names: [`VM`] (the bystander, whose echo is measured) and
//! [`NOISY_VM`] (the attacker), with their secrets in a config file of mode 0600 (never
//! on the command line). The attacker's VM publishes one host TCP port (the fd attack's
//! target) and may reach `tcp:0.0.0.0/0:443`, so its lookups are egress (the DNS attack).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;

use crate::env::{secret_of, sidecar_binary, spawn_listening, Connector, NOISY_VM, VM};

/// The sidecar's open-file limit (soft and hard) during the row.
pub const FD_LIMIT: u64 = 1024;

/// The limits the row configures, so the memory budget is the configured limits' worth.
pub struct Configured {
    /// Bytes the attacker's sessions may have queued for them, each.
    pub session_outbound_bytes: u64,
    /// Bytes the attacker's VM may have buffered across its sockets.
    pub buffered_bytes_per_vm: u64,
}

pub const CONFIGURED: Configured = Configured {
    session_outbound_bytes: 4 << 20,
    buffered_bytes_per_vm: 32 << 20,
};

/// The running sidecar; killed on drop.
pub struct HostileSidecar {
    child: Child,
    pub socket: PathBuf,
    /// The host port published to [`NOISY_VM`]'s in-VM port [`PUBLISHED_PORT`].
    pub published: u16,
    /// Lines the sidecar has logged (stderr) so far.
    pub log_lines: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

/// The in-VM port the attacker's guest listens on behind the published host port.
pub const PUBLISHED_PORT: u16 = 80;

fn config_text(published: u16) -> String {
    let Configured {
        session_outbound_bytes,
        buffered_bytes_per_vm,
    } = CONFIGURED;
    format!(
        r#"
[limits]
session_outbound_bytes = {session_outbound_bytes}
buffered_bytes_per_vm = {buffered_bytes_per_vm}

[[vm]]
name = "{VM}"
secret = "{bystander}"

[[vm]]
name = "{NOISY_VM}"
secret = "{attacker}"
allow = ["tcp:0.0.0.0/0:443"]

[[vm.publish]]
host = "127.0.0.1:{published}"
port = {PUBLISHED_PORT}
"#,
        bystander = secret_of(VM),
        attacker = secret_of(NOISY_VM),
    )
}

impl HostileSidecar {
    pub fn start() -> Result<HostileSidecar> {
        let binary = sidecar_binary()?;
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("hostile.sock");
        let published = crate::ports::free_tcp_port()?;
        let config = dir.path().join("hostile.toml");
        std::fs::write(&config, config_text(published))?;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
        let mut command = Command::new(&binary);
        command
            .args(["serve", "--listen"])
            .arg(&socket)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info");
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: FD_LIMIT as libc::rlim_t,
                    rlim_max: FD_LIMIT as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let log_lines = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&log_lines);
        let child = spawn_listening(&mut command, move || {
            counted.fetch_add(1, Ordering::Relaxed);
        })?;
        Ok(HostileSidecar {
            child,
            socket,
            published,
            log_lines,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connector(&self) -> Connector {
        Connector::unix(self.socket.clone())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HostileSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one process holds, read from `/proc` (Linux; `None` elsewhere).
pub mod probe {
    /// Resets the peak resident set (`VmHWM`) to the current one (`clear_refs` 5).
    pub fn reset_peak_rss(pid: u32) -> bool {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
    }

    /// `VmHWM` (peak resident set since start or the last reset), KiB.
    pub fn peak_rss_kib(pid: u32) -> Option<u64> {
        status_field(pid, "VmHWM:")
    }

    /// `VmRSS`, KiB.
    pub fn rss_kib(pid: u32) -> Option<u64> {
        status_field(pid, "VmRSS:")
    }

    fn status_field(pid: u32, name: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Open fds of the process.
    pub fn fds(pid: u32) -> Option<u64> {
        Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
    }

    /// CPU time (user + system) of the whole process, ns.
    pub fn cpu_ns(pid: u32) -> Option<u64> {
        crate::osstat::sample(pid, |_| true).map(|s| s.cpu_ns)
    }
}
