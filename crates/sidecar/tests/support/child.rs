//! A `sidecar serve --listen` child process, for the tests that need the real binary: what
//! only a process has (its signals, its own fd limit, its exit status, its log on stderr)
//! cannot be tried on an in-process [`sidecar::Sidecar`].
//!
//! [`Served::terminate`] is the stop check every attack test ends with: SIGTERM, then the
//! exit (status 0) within [`STOP_BOUND`], and the Unix socket file gone.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{RawGuest, Wire, DEADLINE};

/// How long a SIGTERMed sidecar may take to exit: its flush grace period (a guest that
/// does not read is waited for that long), and a margin for a loaded machine.
pub const STOP_BOUND: Duration =
    sidecar::shutdown::FLUSH_GRACE.saturating_add(Duration::from_secs(8));

/// The running child and its log.
pub struct Served {
    /// `None` once it has been stopped.
    child: Option<Child>,
    pub socket: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts the binary with `config` (a TOML file of mode 0600), `RUST_LOG=info`, and,
    /// if given, an fd limit set in the child only (soft = hard, so the sidecar cannot
    /// raise it); returns once it listens on [`Served::socket`].
    pub fn start(config: &str, fd_limit: Option<u64>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let config_file = dir.path().join("sidecar.toml");
        std::fs::write(&config_file, config).unwrap();
        std::fs::set_permissions(&config_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sidecar"));
        command
            .args(["serve", "--listen", socket.to_str().unwrap(), "--config"])
            .arg(&config_file)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        if let Some(limit) = fd_limit {
            // SAFETY: only setrlimit, in the forked child before exec.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
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
            lines,
            log,
            _dir: dir,
        };
        served.wait_for_log("listening");
        served
    }

    /// Waits (bounded) for a log line containing `needle`; panics past the deadline.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
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
    pub fn logged(&mut self, needle: &str) -> bool {
        self.log.try_iter().any(|line| line.contains(needle))
    }

    /// As [`Served::wait_for_log`], counting a line already seen by [`Served::logged`].
    pub fn wait_for_log_or_seen(&mut self, needle: &str) {
        if self.lines().iter().any(|l| l.contains(needle)) {
            return;
        }
        self.wait_for_log(needle);
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// A new connection to the sidecar's Unix socket (no hello yet).
    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).unwrap()
    }

    /// A guest of `vm` attached over the Unix socket (push mode, every capability).
    pub fn attach(&self, vm: &str, secret: &str) -> RawGuest {
        RawGuest::attach(Wire::Unix(self.connect()), vm, secret)
    }

    /// SIGTERM, then the exit, which must come within [`STOP_BOUND`] with status 0; the
    /// socket file must be gone. Returns the whole log.
    pub fn terminate(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(STOP_BOUND) {
            Ok(status) => assert!(status.unwrap().success(), "{:#?}", self.lines()),
            Err(_) => {
                // SAFETY: our own child, still running.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!(
                    "SIGTERM: still running after {STOP_BOUND:?}: {:#?}",
                    self.lines()
                );
            }
        }
        assert!(!Path::new(&self.socket).exists(), "the socket file stayed");
        // The log ends with the process (the reader thread sees end of file).
        let deadline = Instant::now() + DEADLINE;
        while self
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
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
pub fn plain(line: &str) -> String {
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
