//! The `sidecar` command: serve guests over stdio or a Unix listening socket, or run a
//! command as a guest (`run`, in `cli/run.rs`).

mod cli;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cli::OperatorArgs;
use sidecar::{Sidecar, SidecarConfig};

#[derive(Parser)]
#[command(
    name = "sidecar",
    version,
    about = "Push-based networking sidecar for sandboxed guests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve guests: one over stdin/stdout (--stdio), or many over a Unix socket (--listen).
    Serve(ServeArgs),
    /// Run a command as a guest of VM NAME (`sidecar run --vm NAME -- node app.js`): an
    /// embedded sidecar (or, with --connect, a running one) serves it on fds 3 and 4,
    /// and Node programs get the guest runtime preloaded. Exits with the command's code.
    Run(cli::run::RunArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Serve one session over stdin/stdout (logs go to stderr only).
    #[arg(long, conflicts_with = "listen", required_unless_present = "listen")]
    stdio: bool,
    /// Serve sessions on a Unix socket created at PATH (mode 0600).
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// Define a VM guests may attach to: NAME=@FILE (the secret is the file's first line,
    /// read again on SIGHUP) or NAME=env:VAR (the secret is the variable VAR of the
    /// sidecar's environment, taken once at start and removed from it, so no child
    /// inherits it). A literal NAME=SECRET is refused: argv is readable by every local
    /// user and every guest through /proc/<pid>/cmdline. Repeatable; at least one, here
    /// or in --config.
    #[arg(
        long = "vm",
        value_name = "NAME=@FILE|NAME=env:VAR",
        required_unless_present = "config"
    )]
    vms: Vec<String>,
    #[command(flatten)]
    operator: OperatorArgs,
}

/// The `--vm` flags, parsed once at start: an `env:VAR` secret is taken then (and removed
/// from the environment, so a reload cannot read it again), a `@FILE` is read again on
/// every reload.
struct FlagVms(Vec<(String, cli::SecretSource, Option<String>)>);

impl FlagVms {
    /// Parses the flags and reads every secret once (a missing file or variable fails the
    /// start). Removes `env:` variables from the environment: call before any thread.
    fn take(specs: &[String]) -> Result<FlagVms> {
        let mut vms: Vec<(String, cli::SecretSource, Option<String>)> = Vec::new();
        for spec in specs {
            let (name, source) = cli::parse_vm_source(spec)?;
            // A variable named twice was removed by its first read: reuse that value.
            let taken = vms
                .iter()
                .find(|(_, s, _)| *s == source)
                .and_then(|(.., k)| k.clone());
            let secret = match taken {
                Some(secret) => secret,
                None => cli::read_secret(&name, &source)?,
            };
            let kept = matches!(source, cli::SecretSource::Env(_)).then_some(secret);
            vms.push((name, source, kept));
        }
        Ok(FlagVms(vms))
    }

    /// Each VM's name and current secret.
    fn secrets(&self) -> Result<Vec<(String, String)>> {
        self.0
            .iter()
            .map(|(name, source, kept)| match kept {
                Some(secret) => Ok((name.clone(), secret.clone())),
                None => Ok((name.clone(), cli::read_secret(name, source)?)),
            })
            .collect()
    }
}

/// The configuration: the file's (if any), plus the flags.
fn build_config(args: &ServeArgs, vms: &FlagVms) -> Result<SidecarConfig> {
    cli::build_config(&args.operator, &vms.secrets()?)
}

fn serve(args: ServeArgs) -> Result<()> {
    // First, while this is the only thread: env:VAR secrets leave the environment here.
    let vms = FlagVms::take(&args.vms)?;
    let config = build_config(&args, &vms)?;
    if args.stdio {
        let sidecar = Sidecar::start(config).context("starting the sidecar")?;
        let (stdin, stdout) = sidecar::runtime::stdio_fds()?;
        let finished = sidecar.serve_fds(stdin, Some(stdout))?;
        let _ = finished.recv();
        sidecar.shutdown();
        return Ok(());
    }
    let path = args
        .listen
        .clone()
        .expect("clap requires --listen without --stdio");
    // Handlers first: a SIGTERM that arrives just after "listening" must still be a clean
    // shutdown, not the default kill.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int, mut hup) = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    // After the handlers: the fds they hold are in the count the sidecar starts from.
    let sidecar = Sidecar::start(config).context("starting the sidecar")?;
    sidecar
        .listen_unix(&path)
        .with_context(|| format!("listening on {}", path.display()))?;
    tracing::info!(path = %path.display(), "listening");
    runtime.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&sidecar, &args, &vms),
            }
        }
    });
    sidecar.shutdown();
    Ok(())
}

/// Keeps freed frame buffers in the process for reuse. glibc's defaults return memory to
/// the kernel as soon as the top of the heap holds a few hundred KiB free, and serve
/// buffers past a dynamic threshold with mmap/munmap, so a stream of 64-256 KiB frames
/// paid page faults on fresh pages for every frame (measured: `tcp_bulk` over
/// `--transport unix` went from 0.83 to 1.2-1.5 GiB/s with these settings). Memory is still
/// bounded by the per-session limits; this only changes when glibc hands it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_buffers() {
    // SAFETY: mallopt only sets glibc malloc parameters; called first thing in main,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

/// `sidecar __sandbox-reaper PID`: becomes the sandbox's reaper for guest PID; returns
/// only when this is not that invocation.
#[cfg(target_os = "linux")]
fn reaper_image() {
    let mut args = std::env::args_os().skip(1);
    let reaper = cli::sandbox::linux::REAPER_ARG.to_str().ok();
    if args.next().as_deref().and_then(|a| a.to_str()) != reaper {
        return;
    }
    let guest = args.next().and_then(|pid| pid.to_str()?.parse().ok());
    match guest {
        Some(pid) if pid > 0 => cli::sandbox::linux::reaper_main(pid),
        _ => {
            eprintln!("sidecar __sandbox-reaper: expected the guest's pid");
            std::process::exit(2)
        }
    }
}

/// SIGHUP: re-read the config file and apply it; on any error keep the running one.
fn reload(sidecar: &Sidecar, args: &ServeArgs, vms: &FlagVms) {
    if args.operator.config.is_none() {
        tracing::warn!("SIGHUP without --config: nothing to reload");
        return;
    }
    match build_config(args, vms) {
        Ok(config) => match sidecar.reload(config) {
            Ok(()) => tracing::info!("config reloaded"),
            Err(e) => tracing::error!(%e, "config reload failed"),
        },
        Err(e) => tracing::error!("config reload refused, the running one stays: {e:#}"),
    }
}

fn main() -> Result<()> {
    // The sandbox's reaper re-executes this binary as its clean image (cli/sandbox):
    // before anything else, so that image holds nothing but the reaper.
    #[cfg(target_os = "linux")]
    reaper_image();
    keep_freed_buffers();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // Every session and host socket costs an fd: take what the hard limit allows (a
    // `run` child gets the original back, cli/run.rs). Logged once.
    match sidecar::fds::raise_limit() {
        Ok(r) => tracing::info!(fd_limit = r.now, was = r.before, hard = r.hard, "fd limit"),
        Err(e) => tracing::warn!(%e, "cannot raise the fd limit; keeping it"),
    }
    // No thread is started before the command runs: `serve` and `run` take `env:VAR`
    // secrets out of the environment first (std::env::remove_var is not thread-safe).
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Run(args) => {
            let code = cli::run::run(args)?;
            std::process::exit(code)
        }
    }
}
