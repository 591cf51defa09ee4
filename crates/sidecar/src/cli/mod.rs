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
    /// [tcp:|udp:]ADDR[/PREFIX][:PORT[-PORT]], IPv6 as [ADDR] when a port follows; or
    /// host Unix sockets: unix:/PATH (that socket file) or unix:/DIR/ (every path below
    /// it). Repeatable; without any, nothing outside a VM is reachable (the host's
    /// loopback and socket files included).
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<sidecar::policy::Rule>,
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

/// Why `--vm NAME=SECRET` is refused, and what to give instead.
const LITERAL_SECRET_REFUSED: &str = "a secret on the command line is readable by every \
    local user and every guest (argv is world-readable in /proc/<pid>/cmdline); give \
    NAME=@FILE (the secret is the file's first line; keep the file mode 0600) or \
    NAME=env:VAR (read from this process's environment, then removed from it)";

/// Where a `--vm` flag's secret comes from: `NAME=@FILE` or `NAME=env:VAR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The first line of a file, read again on every `SIGHUP` reload.
    File(PathBuf),
    /// A variable of the sidecar's own environment, taken once.
    Env(String),
}

/// Splits `NAME=@FILE` / `NAME=env:VAR` into the VM name and where its secret comes from.
/// A literal `NAME=SECRET` is refused (argv is readable by every local user, and by
/// every guest, through `/proc/<pid>/cmdline`); the error never repeats the secret.
pub fn parse_vm_source(spec: &str) -> Result<(String, SecretSource)> {
    let Some((name, source)) = spec.split_once('=') else {
        bail!("--vm {spec:?}: expected NAME=@FILE or NAME=env:VAR");
    };
    if name.is_empty() {
        bail!("--vm: the VM name is empty (expected NAME=@FILE or NAME=env:VAR)");
    }
    if let Some(file) = source.strip_prefix('@') {
        if file.is_empty() {
            bail!("--vm {name}=@: the file name is empty");
        }
        return Ok((name.to_owned(), SecretSource::File(PathBuf::from(file))));
    }
    if let Some(var) = source.strip_prefix("env:") {
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            bail!("--vm {name}=env:{var}: expected the name of an environment variable");
        }
        return Ok((name.to_owned(), SecretSource::Env(var.to_owned())));
    }
    bail!("--vm {name}=...: refused: {LITERAL_SECRET_REFUSED}")
}

/// Reads a secret from where it comes from. `env:VAR` is removed from this process's
/// environment once read, so no child the sidecar starts (`sidecar run`'s command)
/// inherits it. That cannot scrub what the kernel shows as `/proc/<pid>/environ` (the
/// environment the process was started with, readable by the same user only); an
/// operator who needs that gone passes `@FILE`.
///
/// Call it before any thread is started: `std::env::remove_var` is not thread-safe (it
/// races with any other thread reading the environment, e.g. `getaddrinfo`).
pub fn read_secret(name: &str, source: &SecretSource) -> Result<String> {
    let secret = match source {
        SecretSource::File(file) => std::fs::read_to_string(file)
            .with_context(|| {
                format!(
                    "reading the secret of VM {name} from {} (--vm {name}=@FILE)",
                    file.display()
                )
            })?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        SecretSource::Env(var) => {
            let value = std::env::var_os(var);
            std::env::remove_var(var);
            match value.map(|v| v.into_string()) {
                None => bail!(
                    "--vm {name}=env:{var}: the environment variable {var} is not set \
                     (set it in the sidecar's environment, or give --vm {name}=@FILE)"
                ),
                Some(Err(_)) => bail!("--vm {name}=env:{var}: {var} is not valid UTF-8"),
                Some(Ok(value)) => value,
            }
        }
    };
    if secret.is_empty() {
        let from = match source {
            SecretSource::File(file) => format!("the first line of {}", file.display()),
            SecretSource::Env(var) => format!("the environment variable {var}"),
        };
        bail!("--vm {name}: the secret is empty ({from})");
    }
    Ok(secret)
}

/// `NAME=@FILE` (the secret being the file's first line) or `NAME=env:VAR` (the secret
/// being `VAR` of this process's environment, removed from it once read): the VM name and
/// its secret. A literal `NAME=SECRET` is refused. Call it before any thread is started
/// (see [`read_secret`]).
pub fn parse_vm(spec: &str) -> Result<(String, String)> {
    let (name, source) = parse_vm_source(spec)?;
    let secret = read_secret(&name, &source)?;
    Ok((name, secret))
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
    for rule in &args.allow {
        config.policy.add(rule.clone());
    }
    for spec in &args.publish {
        let (vm, host, port, proto) = parse_publish(spec)?;
        if !config.vms.contains_key(&vm) {
            bail!("--publish {spec:?}: no VM named {vm}");
        }
        config = config.with_publish_proto(&vm, host, port, proto);
    }
    if config.vms.is_empty() {
        bail!("no VM is defined: give --vm NAME=@FILE, --vm NAME=env:VAR or [[vm]] in --config");
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_flags_name_a_file_or_a_variable_never_a_literal() {
        let file = parse_vm_source("web=@/etc/sidecar/web.secret").unwrap();
        assert_eq!(
            file,
            (
                "web".into(),
                SecretSource::File("/etc/sidecar/web.secret".into())
            )
        );
        let env = parse_vm_source("web=env:WEB_SECRET").unwrap();
        assert_eq!(env, ("web".into(), SecretSource::Env("WEB_SECRET".into())));
        let refused = parse_vm_source("web=hunter2").unwrap_err().to_string();
        assert!(!refused.contains("hunter2"), "{refused}");
        assert!(refused.contains("/proc/<pid>/cmdline"), "{refused}");
        assert!(refused.contains("NAME=@FILE") && refused.contains("NAME=env:VAR"));
        for bad in ["web", "=env:X", "web=@", "web=env:", "web=env:A=B"] {
            assert!(parse_vm_source(bad).is_err(), "{bad} accepted");
        }
    }
}
