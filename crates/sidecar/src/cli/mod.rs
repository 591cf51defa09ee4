//! The `sidecar` command's subcommands beside `serve` (in `main.rs`), and the operator
//! settings they share: the config file and the flags that add to it.

pub mod run;
pub mod sandbox;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sidecar::policy::Proto;
use sidecar::SidecarConfig;

/// Operator settings shared by `serve` and `run` (everything but the VM flags).
#[derive(clap::Args)]
pub struct OperatorArgs {
    /// A TOML config file (VMs, secrets, policy, limits; see docs/sidecar.example.toml).
    /// `--vm` and `--allow` add to what it defines. Under `serve`, SIGHUP reloads it
    /// without dropping sessions; a reload that fails keeps the old one.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Let guests reach destinations outside their VM through host sockets (TCP and UDP):
    /// ADDR[/PREFIX][:PORT[-PORT]], IPv6 as [ADDR] when a port follows. Repeatable;
    /// without any, nothing outside a VM is reachable (the host's loopback included).
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<sidecar::AllowRule>,
    /// Publish a host port to a VM's in-VM listener, like `docker -p`:
    /// NAME=[HOSTIP:]HOSTPORT:PORT[/tcp|/udp] (host IP default 127.0.0.1). Repeatable.
    #[arg(long = "publish", value_name = "NAME=[HOSTIP:]HOSTPORT:PORT[/udp]")]
    pub publish: Vec<String>,
    /// Largest frame accepted from a guest, in bytes (default 16 MiB, or the config's).
    #[arg(long, value_name = "BYTES")]
    pub max_frame: Option<usize>,
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

/// `NAME=SECRET` or `NAME=@FILE` (the secret being the file's first line).
pub fn parse_vm(spec: &str) -> Result<(String, String)> {
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

/// The config file's configuration alone (empty without `--config`).
pub fn load_file(args: &OperatorArgs) -> Result<SidecarConfig> {
    match &args.config {
        Some(path) => Ok(sidecar::config_file::load(path)?),
        None => Ok(SidecarConfig::default()),
    }
}

/// The configuration: the file's (if any), the VMs given as flags, then the other flags.
pub fn build_config(args: &OperatorArgs, vms: &[(String, String)]) -> Result<SidecarConfig> {
    let mut config = load_file(args)?;
    for (name, secret) in vms {
        config = config.with_vm(name.clone(), secret.clone());
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
