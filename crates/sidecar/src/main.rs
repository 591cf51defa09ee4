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
    /// Define a VM guests may attach to: NAME=SECRET, or NAME=@FILE to read the secret
    /// from a file (first line). Repeatable; at least one, here or in --config.
    #[arg(
        long = "vm",
        value_name = "NAME=SECRET",
        required_unless_present = "config"
    )]
    vms: Vec<String>,
    #[command(flatten)]
    operator: OperatorArgs,
}

/// The configuration: the file's (if any), plus the flags.
fn build_config(args: &ServeArgs) -> Result<SidecarConfig> {
    let vms = args
        .vms
        .iter()
        .map(|spec| cli::parse_vm(spec))
        .collect::<Result<Vec<_>>>()?;
    cli::build_config(&args.operator, &vms)
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = build_config(&args)?;
    let sidecar = Sidecar::start(config).context("starting the sidecar")?;
    if args.stdio {
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
    sidecar
        .listen_unix(&path)
        .with_context(|| format!("listening on {}", path.display()))?;
    tracing::info!(path = %path.display(), "listening");
    runtime.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&sidecar, &args),
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

/// SIGHUP: re-read the config file and apply it; on any error keep the running one.
fn reload(sidecar: &Sidecar, args: &ServeArgs) {
    if args.operator.config.is_none() {
        tracing::warn!("SIGHUP without --config: nothing to reload");
        return;
    }
    match build_config(args) {
        Ok(config) => match sidecar.reload(config) {
            Ok(()) => tracing::info!("config reloaded"),
            Err(e) => tracing::error!(%e, "config reload failed"),
        },
        Err(e) => tracing::error!("config reload refused, the running one stays: {e:#}"),
    }
}

fn main() -> Result<()> {
    keep_freed_buffers();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Run(args) => {
            let code = cli::run::run(args)?;
            std::process::exit(code)
        }
    }
}
