//! Re-executing this binary as a helper process (`--pipe-echo` for `pipe_rtt`,
//! `--ext-server` for the native server of the `*_ext` rows), with two guards against a
//! fork bomb: only the `diffbench` binary itself may re-execute itself (another binary
//! that links this library, e.g. a scratch example calling `pipe::host()`, would not
//! handle the hidden flag and could spawn itself again and again), and a helper process
//! may never start one (the environment marks it).
//!
//! `main` handles the hidden flags first thing, before any row can run.

use std::ffi::OsStr;
use std::process::Command;

/// Set in every helper's environment.
const HELPER_ENV: &str = "DIFFBENCH_HELPER";

/// A command that runs this binary with the hidden `flag`; panics where that could
/// recurse (see the module docs).
pub fn command(flag: &str) -> Command {
    assert!(
        std::env::var_os(HELPER_ENV).is_none(),
        "a diffbench helper process must not start helpers ({flag})"
    );
    let exe = std::env::current_exe().expect("own path");
    assert_eq!(
        exe.file_stem(),
        Some(OsStr::new("diffbench")),
        "only the diffbench binary may re-execute itself with {flag} (this is {})",
        exe.display()
    );
    let mut command = Command::new(exe);
    command.arg(flag).env(HELPER_ENV, flag);
    if crate::rows::pipe::one_cpu() {
        command.env(crate::rows::pipe::ONE_CPU_ENV, "1");
    }
    command
}
