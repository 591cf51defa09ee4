//! The macOS sandbox: the command runs under `sandbox-exec` with a profile that allows
//! everything but network operations (connect, bind, listen, send to an address). The
//! session's socketpairs are already connected when the child inherits them, so reading
//! and writing them needs no network permission. macOS has no PID namespace: other
//! processes stay visible to `ps`.
//!
//! Untested on this project's machines (they are Linux); the profile is the documented
//! Seatbelt language, and `sandbox-exec` ships with macOS.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use super::OPT_OUT;

const SANDBOX_EXEC: &str = "/usr/bin/sandbox-exec";

/// Everything is allowed except the network.
const PROFILE: &str = "(version 1)\n(allow default)\n(deny network*)\n";

/// `sandbox-exec -p PROFILE PROGRAM ARGS...`
pub fn command(program: &OsString, args: &[OsString]) -> Result<Command> {
    if !Path::new(SANDBOX_EXEC).is_file() {
        bail!(
            "cannot start the command in the network sandbox: {SANDBOX_EXEC} is missing. Run \
             with {OPT_OUT} to start it without one (it can then reach every network the host \
             can: not for untrusted code)"
        );
    }
    let mut command = Command::new(SANDBOX_EXEC);
    command.arg("-p").arg(PROFILE).arg(program).args(args);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_denies_the_network_and_the_command_runs_under_it() {
        assert!(PROFILE.contains("(deny network*)"));
        let program = OsString::from("node");
        let args = [OsString::from("app.js")];
        match command(&program, &args) {
            Ok(command) => {
                assert_eq!(command.get_program(), SANDBOX_EXEC);
                let argv: Vec<_> = command.get_args().collect();
                assert_eq!(argv, ["-p", PROFILE, "node", "app.js"]);
            }
            // No sandbox-exec here (not macOS): the refusal names it and the opt-out.
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains(SANDBOX_EXEC) && text.contains(OPT_OUT),
                    "{text}"
                );
            }
        }
    }
}
