//! The `sidecar` command: serve guests over stdio or a Unix listening socket.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sidecar::policy::Proto;
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
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Serve one session over stdin/stdout (logs go to stderr only).
    #[arg(long, conflicts_with = "listen", required_unless_present = "listen")]
    stdio: bool,
    /// Serve sessions on a Unix socket created at PATH (mode 0600).
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// A TOML config file (VMs, secrets, policy, limits; see docs/sidecar.example.toml).
    /// SIGHUP reloads it without dropping sessions; a reload that fails keeps the old one.
    /// `--vm` and `--allow` add to what it defines.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Define a VM guests may attach to: NAME=SECRET, or NAME=@FILE to read the secret
    /// from a file (first line). Repeatable; at least one, here or in --config.
    #[arg(
        long = "vm",
        value_name = "NAME=SECRET",
        required_unless_present = "config"
    )]
    vms: Vec<String>,
    /// Let guests reach destinations outside their VM through host sockets (TCP and UDP):
    /// ADDR[/PREFIX][:PORT[-PORT]], IPv6 as [ADDR] when a port follows. Repeatable;
    /// without any, nothing outside a VM is reachable (the host's loopback included).
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<sidecar::AllowRule>,
    /// Publish a host port to a VM's in-VM listener, like `docker -p`:
    /// NAME=[HOSTIP:]HOSTPORT:PORT[/tcp|/udp] (host IP default 127.0.0.1). Repeatable.
    #[arg(long = "publish", value_name = "NAME=[HOSTIP:]HOSTPORT:PORT[/udp]")]
    publish: Vec<String>,
    /// Largest frame accepted from a guest, in bytes (default 16 MiB, or the config's).
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<usize>,
}

/// `NAME=[HOSTIP:]HOSTPORT:PORT[/tcp|/udp]` → (VM, host address, in-VM port, protocol).
fn parse_publish(spec: &str) -> Result<(String, std::net::SocketAddr, u16, Proto)> {
    let usage = || format!("--publish {spec:?}: expected NAME=[HOSTIP:]HOSTPORT:PORT[/udp]");
    let (spec_addr, proto) = match (spec.strip_suffix("/udp"), spec.strip_suffix("/tcp")) {
        (Some(rest), _) => (rest, Proto::Udp),
        (_, Some(rest)) => (rest, Proto::Tcp),
        _ => (spec, Proto::Tcp),
    };
    let (name, rest) = spec_addr.split_once('=').with_context(usage)?;
    let (host, port) = rest.rsplit_once(':').with_context(usage)?;
    let port: u16 = port.parse().ok().with_context(usage)?;
    let host = match host.parse::<u16>() {
        Ok(host_port) => std::net::SocketAddr::from(([127, 0, 0, 1], host_port)),
        Err(_) => host.parse().ok().with_context(usage)?,
    };
    if name.is_empty() || host.port() == 0 || port == 0 {
        bail!("{}: the VM name and both ports must be given", usage());
    }
    Ok((name.to_owned(), host, port, proto))
}

fn parse_vm(spec: &str) -> Result<(String, String)> {
    let Some((name, secret)) = spec.split_once('=') else {
        bail!("--vm {spec:?}: expected NAME=SECRET or NAME=@FILE");
    };
    if name.is_empty() {
        bail!("--vm {spec:?}: the VM name is empty");
    }
    let secret = match secret.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the secret of VM {name} from {file}"))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => secret.to_owned(),
    };
    if secret.is_empty() {
        bail!("--vm {name}: the secret is empty");
    }
    Ok((name.to_owned(), secret))
}

/// The configuration: the file's (if any), plus the flags.
fn build_config(args: &ServeArgs) -> Result<SidecarConfig> {
    let mut config = match &args.config {
        Some(path) => sidecar::config_file::load(path)?,
        None => SidecarConfig::default(),
    };
    for spec in &args.vms {
        let (name, secret) = parse_vm(spec)?;
        config = config.with_vm(name, secret);
    }
    if let Some(max_frame) = args.max_frame {
        config.limits.max_frame = max_frame;
    }
    config.policy.rules.extend(args.allow.iter().copied());
    for spec in &args.publish {
        let (vm, host, port, proto) = parse_publish(spec)?;
        if !config.vms.contains_key(&vm) {
            bail!("--publish {spec:?}: no VM named {vm}");
        }
        config = config.with_publish_proto(&vm, host, port, proto);
    }
    if config.vms.is_empty() {
        bail!("no VM is defined: give --vm NAME=SECRET or [[vm]] in --config");
    }
    Ok(config)
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
    if args.config.is_none() {
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
    }
}
