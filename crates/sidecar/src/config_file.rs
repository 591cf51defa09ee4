//! The operator's config file (TOML): VMs and their secrets, the network policy, limits.
//! `sidecar serve --config FILE` loads it at start, and again on `SIGHUP`.
//!
//! A file that does not parse, names an unknown key, or holds a bad value (an allow rule
//! that is not one, a secret file that cannot be read, a VM defined twice, limits that
//! cannot work together) is refused as a whole, with the line and the reason: at start
//! the sidecar does not start; on a reload the running configuration stays. `[limits]`
//! is sidecar-wide; a VM's `[vm.limits]` (the same keys) overrides it for that VM. The commented example `docs/sidecar.example.toml`
//! shows every key, and the tests load it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use std::net::SocketAddr;

use crate::config::{LimitOverrides, Limits, Publish, SidecarConfig, VmConfig};
use crate::policy::Proto;
use crate::policy::{AllowRule, Rule, UnixRule};

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// Syntax, an unknown key, or a bad value; `line` is 1-based.
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    /// Largest frame accepted from a guest, in bytes.
    max_frame: Option<usize>,
    /// Rules every VM gets.
    #[serde(default)]
    allow: Vec<RuleSpec>,
    #[serde(default)]
    limits: LimitsSpec,
    #[serde(default, rename = "vm")]
    vms: Vec<toml::Spanned<VmSpec>>,
}

/// `[limits]` (sidecar-wide) and `[vm.limits]` (one VM's own): the same keys.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsSpec {
    sockets_per_vm: Option<usize>,
    listeners_per_vm: Option<usize>,
    pending_connections_per_vm: Option<usize>,
    parked_calls_per_session: Option<usize>,
    event_queue_bytes: Option<usize>,
    write_high_water: Option<usize>,
    write_hard_limit: Option<usize>,
    udp_receive_buffer: Option<usize>,
    pairing_wait_ms: Option<u64>,
    // Before hello, headers, names, sessions: sessions_per_vm is per VM, the rest
    // sidecar wide.
    sessions_per_vm: Option<usize>,
    hello_timeout_ms: Option<u64>,
    unattached_connections: Option<usize>,
    hello_max_frame: Option<usize>,
    refused_hello_delay_ms: Option<u64>,
    max_credit: Option<u64>,
    max_header: Option<usize>,
    // Memory per session and VM (per VM), the loop's share (sidecar wide).
    session_outbound_bytes: Option<usize>,
    buffered_bytes_per_vm: Option<usize>,
    bytes_per_turn: Option<usize>,
    // File descriptors (sidecar wide).
    fd_reserve: Option<usize>,
    // Host name lookups: dns_threads and dns_timeout_ms are sidecar-wide.
    dns_threads: Option<usize>,
    dns_lookups_per_vm: Option<usize>,
    dns_timeout_ms: Option<u64>,
}

impl LimitsSpec {
    /// The first sidecar-wide key this spec sets (refused in `[vm.limits]`).
    fn sidecar_wide_key(&self) -> Option<&'static str> {
        [
            (self.pairing_wait_ms.is_some(), "pairing_wait_ms"),
            (self.hello_timeout_ms.is_some(), "hello_timeout_ms"),
            (
                self.unattached_connections.is_some(),
                "unattached_connections",
            ),
            (self.hello_max_frame.is_some(), "hello_max_frame"),
            (
                self.refused_hello_delay_ms.is_some(),
                "refused_hello_delay_ms",
            ),
            (self.max_credit.is_some(), "max_credit"),
            (self.max_header.is_some(), "max_header"),
            (self.bytes_per_turn.is_some(), "bytes_per_turn"),
            (self.fd_reserve.is_some(), "fd_reserve"),
            (self.dns_threads.is_some(), "dns_threads"),
            (self.dns_timeout_ms.is_some(), "dns_timeout_ms"),
        ]
        .into_iter()
        .find_map(|(set, key)| set.then_some(key))
    }
}

impl From<&LimitsSpec> for LimitOverrides {
    fn from(spec: &LimitsSpec) -> Self {
        LimitOverrides {
            sockets_per_vm: spec.sockets_per_vm,
            listeners_per_vm: spec.listeners_per_vm,
            pending_connections_per_vm: spec.pending_connections_per_vm,
            parked_calls_per_session: spec.parked_calls_per_session,
            write_high_water: spec.write_high_water,
            write_hard_limit: spec.write_hard_limit,
            udp_receive_buffer: spec.udp_receive_buffer,
            event_queue_bytes: spec.event_queue_bytes,
            sessions_per_vm: spec.sessions_per_vm,
            session_outbound_bytes: spec.session_outbound_bytes,
            buffered_bytes_per_vm: spec.buffered_bytes_per_vm,
            dns_lookups_per_vm: spec.dns_lookups_per_vm,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmSpec {
    name: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    allow: Vec<RuleSpec>,
    #[serde(default)]
    publish: Vec<toml::Spanned<PublishSpec>>,
    /// `[vm.limits]`: this VM's own limits over `[limits]`.
    limits: Option<toml::Spanned<LimitsSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishSpec {
    /// The host address and port to listen on, e.g. "127.0.0.1:8080".
    host: String,
    /// The VM's in-VM port it leads to.
    port: u16,
    /// Only "tcp" for now.
    #[serde(default)]
    proto: Option<String>,
}

/// An allow rule as written, with where it was written (a bad one is reported at its
/// own line).
type RuleSpec = toml::Spanned<String>;

fn rules(
    text: &str,
    specs: Vec<RuleSpec>,
    invalid: &impl Fn(usize, String) -> ConfigError,
) -> Result<(Vec<AllowRule>, Vec<UnixRule>), ConfigError> {
    let parsed: Vec<Rule> = specs
        .into_iter()
        .map(|spec| {
            let line = line_of(text, spec.span().start);
            spec.get_ref()
                .parse()
                .map_err(|e: crate::policy::RuleError| invalid(line, e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(crate::policy::unix::split(parsed))
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a config file's text. `path` names it in errors; relative `secret_file`s are
/// read relative to the file's directory.
pub fn parse(text: &str, path: &Path) -> Result<SidecarConfig, ConfigError> {
    parse_noting_literal_secrets(text, path).map(|(config, _)| config)
}

/// [`parse`], and the names of the VMs whose secret is written in the file itself
/// (`secret`, not `secret_file`).
fn parse_noting_literal_secrets(
    text: &str,
    path: &Path,
) -> Result<(SidecarConfig, Vec<String>), ConfigError> {
    let shown = path.display().to_string();
    let invalid = |line: usize, reason: String| ConfigError::Invalid {
        path: shown.clone(),
        line,
        reason,
    };
    let spec: FileSpec = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |span| line_of(text, span.start));
        invalid(line, e.message().to_owned())
    })?;
    let mut config = SidecarConfig::default();
    let defaults = Limits::default();
    config.limits = Limits {
        max_frame: spec.max_frame.unwrap_or(defaults.max_frame),
        pairing_wait: spec
            .limits
            .pairing_wait_ms
            .map_or(defaults.pairing_wait, Duration::from_millis),
        hello_timeout: spec
            .limits
            .hello_timeout_ms
            .map_or(defaults.hello_timeout, Duration::from_millis),
        unattached_connections: spec
            .limits
            .unattached_connections
            .unwrap_or(defaults.unattached_connections),
        hello_max_frame: spec
            .limits
            .hello_max_frame
            .unwrap_or(defaults.hello_max_frame),
        refused_hello_delay: spec
            .limits
            .refused_hello_delay_ms
            .map_or(defaults.refused_hello_delay, Duration::from_millis),
        max_credit: spec.limits.max_credit.unwrap_or(defaults.max_credit),
        max_header: spec.limits.max_header.unwrap_or(defaults.max_header),
        bytes_per_turn: spec
            .limits
            .bytes_per_turn
            .unwrap_or(defaults.bytes_per_turn),
        fd_reserve: spec.limits.fd_reserve.unwrap_or(defaults.fd_reserve),
        dns_threads: spec.limits.dns_threads.unwrap_or(defaults.dns_threads),
        dns_timeout: spec
            .limits
            .dns_timeout_ms
            .map_or(defaults.dns_timeout, Duration::from_millis),
        ..LimitOverrides::from(&spec.limits).over(&defaults)
    };
    if let Err(e) = config.limits.validate() {
        return Err(invalid(1, format!("[limits]: {e}")));
    }
    (config.policy.rules, config.policy.unix) = rules(text, spec.allow, &invalid)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut vms = BTreeMap::new();
    let mut published = std::collections::HashSet::new();
    let mut literal = Vec::new();
    for vm in spec.vms {
        let line = line_of(text, vm.span().start);
        let vm = vm.into_inner();
        if vm.name.is_empty() {
            return Err(invalid(line, "a [[vm]] needs a non-empty name".into()));
        }
        let secret = match (vm.secret, vm.secret_file) {
            (Some(secret), None) => {
                literal.push(vm.name.clone());
                secret
            }
            (None, Some(file)) => {
                let file = base.join(file);
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        invalid(
                            line,
                            format!("VM {}: reading {}: {e}", vm.name, file.display()),
                        )
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }
            _ => {
                return Err(invalid(
                    line,
                    format!("VM {}: give exactly one of secret, secret_file", vm.name),
                ))
            }
        };
        if secret.is_empty() {
            return Err(invalid(
                line,
                format!("VM {}: the secret is empty", vm.name),
            ));
        }
        let (allow, allow_unix) = rules(text, vm.allow, &invalid)?;
        let mut publish = Vec::new();
        for spec in vm.publish {
            let line = line_of(text, spec.span().start);
            let spec = spec.into_inner();
            let proto = match spec.proto.as_deref() {
                None | Some("tcp") => Proto::Tcp,
                Some("udp") => Proto::Udp,
                Some(other) => {
                    return Err(invalid(
                        line,
                        format!("publish proto {other:?}: \"tcp\" or \"udp\""),
                    ))
                }
            };
            let host: SocketAddr = spec.host.parse().map_err(|_| {
                invalid(
                    line,
                    format!("publish host {:?} is not ADDR:PORT", spec.host),
                )
            })?;
            if host.port() == 0 || spec.port == 0 {
                return Err(invalid(
                    line,
                    "a publication needs both ports (not 0)".into(),
                ));
            }
            if !published.insert((host, proto)) {
                return Err(invalid(line, format!("{host} is published twice")));
            }
            publish.push(Publish {
                host,
                port: spec.port,
                proto,
            });
        }
        let limits = match vm.limits {
            Some(spec) => {
                let own = LimitOverrides::from(spec.get_ref());
                let line = line_of(text, spec.span().start);
                if let Some(key) = spec.get_ref().sidecar_wide_key() {
                    let e = format!("{key} is sidecar-wide (set it in [limits])");
                    return Err(invalid(line, format!("VM {}: [vm.limits]: {e}", vm.name)));
                }
                if let Err(e) = own.over(&config.limits).validate() {
                    return Err(invalid(line, format!("VM {}: [vm.limits]: {e}", vm.name)));
                }
                own
            }
            None => LimitOverrides::default(),
        };
        let config = VmConfig {
            secret,
            allow,
            allow_unix,
            publish,
            limits,
        };
        if vms.insert(vm.name.clone(), config).is_some() {
            return Err(invalid(line, format!("VM {} is defined twice", vm.name)));
        }
    }
    config.vms = vms;
    Ok((config, literal))
}

/// Reads and parses a config file. A file that holds a literal `secret` and that other
/// users can read (group or others have any permission bit) gets a warning naming it and
/// the fix; it is still loaded.
pub fn load(path: &Path) -> Result<SidecarConfig, ConfigError> {
    let read_error = |error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    };
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let (config, literal) = parse_noting_literal_secrets(&text, path)?;
    if !literal.is_empty() {
        let mode = std::fs::metadata(path).map_err(read_error)?.permissions();
        if let Some(warning) = exposed_secrets_warning(path, mode_of(&mode), &literal) {
            tracing::warn!("{warning}");
        }
    }
    Ok(config)
}

#[cfg(unix)]
fn mode_of(permissions: &std::fs::Permissions) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    permissions.mode()
}

#[cfg(not(unix))]
fn mode_of(_: &std::fs::Permissions) -> u32 {
    0
}

/// The warning for a config file of mode `mode` that holds the literal secrets of the
/// VMs `literal`: `None` when there are none or only the owner may read the file
/// (`mode & 0o077 == 0`). It names the file, the VMs (never their secrets) and the fix.
fn exposed_secrets_warning(path: &Path, mode: u32, literal: &[String]) -> Option<String> {
    if literal.is_empty() || mode & 0o077 == 0 {
        return None;
    }
    Some(format!(
        "{}: mode {:03o} lets other users read the secret of VM {}: run `chmod 600 {}`, or \
         move each secret to a file of its own (`secret_file`, mode 0600)",
        path.display(),
        mode & 0o777,
        literal.join(", "),
        path.display(),
    ))
}

#[cfg(test)]
mod tests;
