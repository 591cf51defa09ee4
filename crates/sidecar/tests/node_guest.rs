//! The Node guest runtime (`guests/node/`): its suites, `guests/node/test/*.test.js`, run
//! by Node's own test runner against this build's `sidecar` binary (`PUSHNET_SIDECAR`).
//! Each suite starts `sidecar run --vm t -- node <app>` (and the same apps under plain
//! Node) and checks exit codes and output.
//!
//! Node (18 or later: Debian 12's `nodejs` is 18.20) must be on PATH: without it this
//! test fails, saying so, unless `PUSHNET_SKIP_NODE=1` (CI installs Node).

mod node_runner;

use std::time::Duration;

/// The suites' own tests have per-test timeouts; this only guards the whole run.
const WHOLE_RUN_LIMIT: Duration = Duration::from_secs(15 * 60);

#[test]
fn node_guest_suites_pass() {
    let Some(version) = node_runner::node_or_skip("the Node guest suites") else {
        return;
    };
    let suites = node_runner::test_files("guests/node/test");
    node_runner::run_node_tests(&suites, &version, WHOLE_RUN_LIMIT);
}
