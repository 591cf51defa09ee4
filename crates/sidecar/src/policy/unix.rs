//! Host Unix sockets under policy: `unix:PATH` rules, which host socket files a VM's
//! guests may connect to.
//!
//! A guest's Unix path is first a name in its VM's own table (an in-VM listener there
//! always wins, as for TCP). Only when the VM has none does a rule decide whether the
//! path reaches a host socket file. A rule is an **exact path** (`unix:/run/app.sock`) or,
//! written with a trailing `/`, a **directory prefix** (`unix:/var/run/postgresql/`:
//! every path below that directory, at any depth).
//!
//! Checked twice, so that neither spelling nor symlinks lead elsewhere:
//!
//! 1. **Lexically**, on the guest's path normalised against its `cwd` (`.` and `..`
//!    resolved as names: `/var/run/postgresql/../../../etc/x` *is* `/etc/x`, which the
//!    prefix does not cover). A path no rule covers is `ENOENT`, as the VM's own empty
//!    namespace answers: without a rule, host paths do not exist for a guest.
//! 2. **Resolved**: the host path with every symlink followed (`realpath`) must still fall
//!    under a rule whose own path is resolved the same way (so `/var/run` → `/run` on
//!    Debian, or `/var` → `/private/var` on macOS, changes nothing). A symlink inside an
//!    allowed directory that points outside every rule is refused with `EACCES`. The
//!    connect then goes to the resolved path, so what was checked is what is reached
//!    (short of a host user with write access above the allowed directory swapping a
//!    component between the check and the connect: allow directories only whose writers
//!    you trust, and not world-writable ones such as `/tmp`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{AllowRule, RuleError};
use crate::addr::normalize_unix_path;

/// One `unix:` allow rule: an exact host path, or a directory and everything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixRule {
    /// Normalised and absolute; for a prefix it ends with `/`.
    path: String,
    prefix: bool,
}

impl UnixRule {
    /// Whether the guest path `path` (already normalised) is covered as written.
    pub fn covers(&self, path: &str) -> bool {
        match self.prefix {
            true => path.len() > self.path.len() && path.starts_with(&self.path),
            false => path == self.path,
        }
    }

    /// Whether `resolved` (a path with its symlinks resolved) is covered by this rule's
    /// own path, resolved the same way (lexically when it does not exist yet).
    pub fn covers_resolved(&self, resolved: &Path) -> bool {
        let own = Path::new(&self.path);
        let own = std::fs::canonicalize(own).unwrap_or_else(|_| own.to_path_buf());
        match self.prefix {
            true => resolved != own && resolved.starts_with(&own),
            false => resolved == own,
        }
    }
}

impl fmt::Display for UnixRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unix:{}", self.path)
    }
}

impl FromStr for UnixRule {
    type Err = RuleError;

    /// `unix:/ABSOLUTE/PATH` (exact) or `unix:/ABSOLUTE/DIR/` (prefix).
    fn from_str(spec: &str) -> Result<Self, RuleError> {
        let fail = |reason: &str| RuleError {
            rule: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let path = spec
            .strip_prefix("unix:")
            .ok_or_else(|| fail("a host path rule starts with unix:"))?;
        if !path.starts_with('/') {
            return Err(fail("a host path must be absolute"));
        }
        let normal = normalize_unix_path(path, "/").ok_or_else(|| fail("a path without NUL"))?;
        let prefix = path.ends_with('/');
        let path = match (prefix, normal.as_str()) {
            (true, "/") => normal,
            (true, _) => format!("{normal}/"),
            (false, _) => normal,
        };
        Ok(UnixRule { path, prefix })
    }
}

/// Any allow rule as the operator writes it (`--allow`, `allow = [...]`): an address rule
/// or a `unix:` host path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Net(AllowRule),
    Unix(UnixRule),
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(spec: &str) -> Result<Self, RuleError> {
        match spec.starts_with("unix:") {
            true => spec.parse().map(Rule::Unix),
            false => spec.parse().map(Rule::Net),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Net(rule) => rule.fmt(f),
            Rule::Unix(rule) => rule.fmt(f),
        }
    }
}

/// Splits rules into address rules and host path rules, in order.
pub fn split(rules: impl IntoIterator<Item = Rule>) -> (Vec<AllowRule>, Vec<UnixRule>) {
    let (mut net, mut unix) = (Vec::new(), Vec::new());
    for rule in rules {
        match rule {
            Rule::Net(rule) => net.push(rule),
            Rule::Unix(rule) => unix.push(rule),
        }
    }
    (net, unix)
}

/// Where a guest's Unix connect outside its VM goes: the resolved host path, or why not.
#[derive(Debug, PartialEq, Eq)]
pub enum UnixVerdict {
    /// Connect to this host path (symlinks resolved).
    Allowed(PathBuf),
    /// No rule covers the path as written (`ENOENT`, as the VM's namespace answers).
    NotCovered,
    /// Covered as written, but the path does not exist on the host (`realpath` failed).
    Missing(std::io::ErrorKind),
    /// Covered as written, but it resolves (through a symlink) outside every rule.
    Escapes,
}

/// Checks guest path `path` (normalised) against `rules`: lexically, then resolved.
pub fn check<'a>(rules: impl Iterator<Item = &'a UnixRule> + Clone, path: &str) -> UnixVerdict {
    if !rules.clone().any(|rule| rule.covers(path)) {
        return UnixVerdict::NotCovered;
    }
    let resolved = match std::fs::canonicalize(path) {
        Ok(resolved) => resolved,
        Err(e) => return UnixVerdict::Missing(e.kind()),
    };
    match rules.clone().any(|rule| rule.covers_resolved(&resolved)) {
        true => UnixVerdict::Allowed(resolved),
        false => UnixVerdict::Escapes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> UnixRule {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn forms_parse_normalised_and_print_back() {
        for (spec, shown) in [
            ("unix:/var/run/postgresql/", "unix:/var/run/postgresql/"),
            ("unix:/var/run//postgresql/./", "unix:/var/run/postgresql/"),
            ("unix:/run/app.sock", "unix:/run/app.sock"),
            ("unix:/run/x/../app.sock", "unix:/run/app.sock"),
            ("unix:/", "unix:/"),
        ] {
            assert_eq!(rule(spec).to_string(), shown, "{spec}");
            assert_eq!(rule(shown), rule(spec), "{shown} reparses");
        }
        for (spec, why) in [
            ("unix:run/app.sock", "absolute"),
            ("unix:", "absolute"),
            ("unix:/a\0b", "NUL"),
        ] {
            let err = spec.parse::<UnixRule>().unwrap_err().to_string();
            assert!(err.contains(why), "{spec}: {err}");
        }
        assert!(matches!("unix:/a".parse::<Rule>(), Ok(Rule::Unix(_))));
        assert!(matches!("10.0.0.1:80".parse::<Rule>(), Ok(Rule::Net(_))));
    }

    #[test]
    fn a_prefix_covers_below_it_and_an_exact_path_only_itself() {
        let dir = rule("unix:/var/run/postgresql/");
        assert!(dir.covers("/var/run/postgresql/.s.PGSQL.5432"));
        assert!(dir.covers("/var/run/postgresql/a/b.sock"));
        assert!(!dir.covers("/var/run/postgresql"));
        assert!(!dir.covers("/var/run/postgresqlx/a.sock"));
        assert!(!dir.covers("/var/run/other.sock"));
        let exact = rule("unix:/run/app.sock");
        assert!(exact.covers("/run/app.sock"));
        assert!(!exact.covers("/run/app.sock2"));
        assert!(!exact.covers("/run/app.sock/x"));
        assert!(rule("unix:/").covers("/anything"));
    }

    #[test]
    fn a_path_not_covered_is_never_looked_up() {
        let rules = [rule("unix:/nonexistent-dir-for-this-test/")];
        assert_eq!(check(rules.iter(), "/etc/passwd"), UnixVerdict::NotCovered);
        assert_eq!(
            check(rules.iter(), "/nonexistent-dir-for-this-test/a.sock"),
            UnixVerdict::Missing(std::io::ErrorKind::NotFound)
        );
    }
}
