//! `sidecar run --vm NAME [...] -- CMD ARGS...`: run a command as a guest of VM `NAME`,
//! inside the network sandbox (`sandbox/`; `--no-sandbox` opts out, with a warning).
//!
//! Without `--connect`, an embedded sidecar is started (the VM gets a fresh random secret
//! unless the config defines it) and serves two Unix socketpairs as the child's session:
//! fd 3 is the primary stream (the child's blocking calls), fd 4 the event channel
//! (PROTOCOL.md §6.3; poll mode has none). With `--connect PATH` the two streams are
//! connections to a running sidecar's Unix listener instead.
//!
//! The child never holds a secret: its primary stream is already attached to the VM
//! (the embedded sidecar serves it so; with `--connect`, `run` says the `bind` hello on
//! it first), so the child's hello carries no VM secret, and its event channel attaches
//! with the one-time token that hello returns. The child learns what to do from its
//! environment (`PUSHNET_FD`, `PUSHNET_EVENT_FD`, `PUSHNET_VM`, `PUSHNET_MODE`; nothing
//! there is secret), and Node gets the guest runtime through
//! `NODE_OPTIONS=--require <repo>/guests/node/preload.cjs`.
//!
//! `run` exits with the child's exit code (128 + N when signal N ended it) after the
//! embedded sidecar has shut down. SIGTERM and SIGHUP are forwarded to the child; SIGINT
//! is not (a terminal's Ctrl-C reaches the child in the same process group directly), and
//! does not stop `run` before its child.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sidecar::config::random_token;
use sidecar::Sidecar;
use sidecar_protocol::{encode_call, read_frame, Header, HelloParams, DEFAULT_MAX_FRAME};

use super::sandbox::{Prepared, OPT_OUT};
use super::OperatorArgs;

/// The fd numbers the child finds its streams on.
const PRIMARY_FD: RawFd = 3;
const EVENT_FD: RawFd = 4;

/// How long `run --connect` waits for the sidecar to answer its `bind` hello.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);

/// Variables `run` sets for the child, and the one it never passes on.
const CHILD_VARIABLES: [&str; 4] = [
    "PUSHNET_FD",
    "PUSHNET_EVENT_FD",
    "PUSHNET_VM",
    "PUSHNET_MODE",
];

/// The Node preload in this repository (overridable with `PUSHNET_NODE_PRELOAD`).
const PRELOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/node/preload.cjs");

#[derive(clap::Args)]
pub struct RunArgs {
    /// The VM the command is a guest of: NAME (a VM of --config, or else a new VM of the
    /// embedded sidecar). With --connect, its secret comes from --config, or from
    /// NAME=@FILE or NAME=env:VAR; the command itself never sees it.
    #[arg(long = "vm", value_name = "NAME")]
    vm: String,
    #[command(flatten)]
    operator: OperatorArgs,
    /// Poll mode: the guest re-polls its sockets on a 4 ms timer instead of receiving
    /// pushed events (the old polyfill's way, the baseline).
    #[arg(long)]
    poll: bool,
    /// Attach to a running sidecar's Unix socket (`serve --listen PATH`) instead of
    /// starting one; the VM's secret comes from --vm NAME=@FILE / NAME=env:VAR or --config.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["allow", "publish", "max_frame"])]
    connect: Option<PathBuf>,
    /// Start the command without the network sandbox: it can then reach every network
    /// the host can, and see every process. Not for untrusted code.
    #[arg(long)]
    no_sandbox: bool,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Runs the command; returns the exit code `run` should exit with.
pub fn run(args: RunArgs) -> Result<i32> {
    let (name, given_secret) = if args.vm.contains('=') {
        let (name, secret) = super::parse_vm(&args.vm)?;
        (name, Some(secret))
    } else {
        (args.vm.clone(), None)
    };
    if name.is_empty() {
        bail!("--vm: the VM name is empty");
    }
    let file = super::load_file(&args.operator)?;
    let file_secret = file.vms.get(&name).map(|vm| vm.secret.clone());
    let streams = if args.poll { 1 } else { 2 };

    let (sidecar, child_fds) = match &args.connect {
        Some(path) => {
            let Some(secret) = given_secret.or(file_secret) else {
                bail!(
                    "--connect needs the secret of VM {name}: give --vm {name}=@FILE or \
                     --vm {name}=env:VAR, or a --config that defines it"
                );
            };
            let connect = || {
                UnixStream::connect(path)
                    .with_context(|| format!("connecting to the sidecar at {}", path.display()))
            };
            let primary = connect()?;
            bind(&primary, &name, &secret)
                .with_context(|| format!("attaching to VM {name} at {}", path.display()))?;
            let mut fds = vec![OwnedFd::from(primary)];
            if streams == 2 {
                fds.push(OwnedFd::from(connect()?));
            }
            (None, fds)
        }
        None => {
            // The VM's secret (the file's, or a fresh one) stays inside this process.
            let secret = given_secret
                .clone()
                .or(file_secret.clone())
                .unwrap_or_else(random_token);
            // A VM the file defines keeps its rules and publications; a secret given as
            // a flag replaces only its secret.
            let extra = match &file_secret {
                Some(_) => vec![],
                None => vec![(name.clone(), secret.clone())],
            };
            let mut config = super::build_config(&args.operator, &extra)?;
            if let Some(vm) = config.vms.get_mut(&name) {
                vm.secret.clone_from(&secret);
            }
            let sidecar = Sidecar::start(config).context("starting the sidecar")?;
            let mut child_fds = Vec::new();
            for stream in 0..streams {
                let (ours, theirs) = UnixStream::pair().context("creating a socketpair")?;
                if stream == 0 {
                    sidecar.serve_fds_attached(OwnedFd::from(ours), None, &name)?;
                } else {
                    sidecar.serve_fds(OwnedFd::from(ours), None)?;
                }
                child_fds.push(OwnedFd::from(theirs));
            }
            (Some(sidecar), child_fds)
        }
    };

    let mut prepared = if args.no_sandbox {
        tracing::warn!(
            "{OPT_OUT}: the command runs without the network sandbox: it can reach every \
             network the host can, whatever the policy says"
        );
        Prepared::unsandboxed(&args.command[0], &args.command[1..])
    } else {
        Prepared::sandboxed(&args.command[0], &args.command[1..])?
    };
    let command = &mut prepared.command;
    for name in CHILD_VARIABLES {
        command.env_remove(name);
    }
    // An operator's own variable of that name never reaches the guest.
    command.env_remove("PUSHNET_SECRET");
    command
        .env("PUSHNET_FD", PRIMARY_FD.to_string())
        .env("PUSHNET_VM", &name)
        .env("PUSHNET_MODE", if args.poll { "poll" } else { "push" });
    if !args.poll {
        command.env("PUSHNET_EVENT_FD", EVENT_FD.to_string());
    }
    if let Some(options) = node_options() {
        command.env("NODE_OPTIONS", options);
    }
    let sources: Vec<RawFd> = child_fds.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // getrlimit/setrlimit, fcntl and dup2 (async-signal-safe), on fds that stay open in
    // the parent until spawn returns.
    unsafe {
        command.pre_exec(move || {
            // The guest gets the fd limit `run` started with, not the raised one.
            sidecar::fds::restore_in_child()?;
            place_fds(&sources)
        });
    }
    // After place_fds: the sandbox's step forks, and the guest it leaves must find its
    // fds in place.
    prepared.install();

    let status = wait_forwarding_signals(prepared, child_fds, &args.command[0])?;
    if let Some(sidecar) = sidecar {
        sidecar.shutdown();
    }
    Ok(exit_code(status))
}

/// The operator's `bind` hello on a stream to a running sidecar: attaches it to VM `vm`
/// before the child gets it, so that the child's own hello needs no secret.
fn bind(stream: &UnixStream, vm: &str, secret: &str) -> Result<()> {
    let mut frame = Vec::new();
    encode_call(
        1,
        &HelloParams::bind(vm, secret),
        false,
        &[],
        DEFAULT_MAX_FRAME,
        &mut frame,
    )?;
    stream.set_read_timeout(Some(BIND_TIMEOUT))?;
    (&*stream)
        .write_all(&frame)
        .context("sending the bind hello")?;
    let reply = read_frame(&mut &*stream, DEFAULT_MAX_FRAME)
        .context("reading the bind hello's reply")?
        .context("the sidecar closed the connection before answering")?;
    stream.set_read_timeout(None)?;
    match reply.parse_header() {
        Ok(Header::Reply(reply)) if reply.id == 1 => match reply.outcome {
            Ok(_) => Ok(()),
            Err(error) => bail!("the sidecar refused: {}: {}", error.code, error.message),
        },
        Ok(_) => bail!("the sidecar answered the bind hello with something else than its reply"),
        Err(e) => bail!("the sidecar's reply to the bind hello is malformed: {e}"),
    }
}

/// In the child: `sources[i]` becomes fd 3 + i, without close-on-exec. Every source is
/// first copied above the targets, so a source that happens to be fd 3 or 4 is never
/// overwritten before it is placed; the copies are close-on-exec.
fn place_fds(sources: &[RawFd]) -> std::io::Result<()> {
    let mut high = Vec::with_capacity(sources.len());
    for &fd in sources {
        // SAFETY: fcntl on an fd we own; no memory is involved.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high.push(copy);
    }
    for (i, &fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto a fixed number; replacing what is there is the point.
        if unsafe { libc::dup2(fd, PRIMARY_FD + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `NODE_OPTIONS` with the guest runtime's preload added, or `None` (with a warning)
/// when the preload cannot be found.
fn node_options() -> Option<OsString> {
    let preload = match std::env::var_os("PUSHNET_NODE_PRELOAD") {
        Some(path) => PathBuf::from(path),
        None => Path::new(PRELOAD)
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(PRELOAD)),
    };
    if !preload.is_file() {
        tracing::warn!(
            path = %preload.display(),
            "the Node guest runtime is not there (set PUSHNET_NODE_PRELOAD); NODE_OPTIONS is left as it is"
        );
        return None;
    }
    let mut options = std::env::var_os("NODE_OPTIONS").unwrap_or_default();
    if !options.is_empty() {
        options.push(" ");
    }
    options.push("--require ");
    options.push(quote_node_option(preload.as_os_str()));
    Some(options)
}

/// NODE_OPTIONS splits on spaces unless a value is double-quoted (`\` escapes in quotes).
fn quote_node_option(value: &OsStr) -> OsString {
    let text = value.to_string_lossy();
    let mut quoted = String::from("\"");
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    OsString::from(quoted)
}

/// Spawns the child and waits for it; SIGTERM and SIGHUP sent to `run` meanwhile are
/// passed on to it, SIGINT is ignored (see the module doc). `child_fds` (placed by the
/// command's `pre_exec`) are closed here once the child has them, so the session ends
/// with the child's last copy.
fn wait_forwarding_signals(
    mut prepared: Prepared,
    child_fds: Vec<OwnedFd>,
    program: &OsStr,
) -> Result<ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Handlers first, so a signal that arrives as the child starts is not the default kill.
    let (mut term, mut hup, mut int) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    let spawned = prepared.command.spawn();
    drop(child_fds);
    // A sandbox that could not be set up says why, whatever spawn returned.
    let mut child = match (spawned, prepared.spawned()) {
        (Ok(mut child), Err(e)) => {
            // Its setup failed: the child is exiting; reap it.
            let _ = child.wait();
            return Err(e);
        }
        (Err(_), Err(e)) => return Err(e),
        (spawned, Ok(())) => {
            spawned.with_context(|| format!("starting {}", program.to_string_lossy()))?
        }
    };
    let pid = child.id() as libc::pid_t;
    let (done, mut finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("run-wait".into())
        .spawn(move || {
            let _ = done.send(child.wait());
        })?;
    let forward = |signal: libc::c_int| {
        // SAFETY: kill(2) touches no memory. The child is ours; it may have been reaped
        // an instant ago by the waiting thread (`finished` is checked first, so only a
        // signal racing the exit itself can reach a recycled pid).
        unsafe { libc::kill(pid, signal) };
    };
    runtime.block_on(async {
        loop {
            tokio::select! {
                biased;
                status = &mut finished => {
                    return status
                        .context("the thread waiting for the child vanished")?
                        .context("waiting for the child");
                }
                _ = term.recv() => forward(libc::SIGTERM),
                _ = hup.recv() => forward(libc::SIGHUP),
                _ = int.recv() => {}
            }
        }
    })
}

/// The child's exit code, or 128 + N when signal N ended it (as a shell reports it).
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}
