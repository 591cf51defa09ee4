//! Published npm software run unmodified as guests (`guests/node/compat/`): express +
//! fetch, fastify + undici + axios, ws, socket.io, and the database clients pg and
//! ioredis against a real PostgreSQL and Redis that the suites start on loopback. Each
//! app runs under plain Node, as a push-mode guest and as a poll-mode guest;
//! `guests/node/compat/*.test.js` run by Node's test runner against this build's
//! `sidecar` binary.
//!
//! Needs Node 18 or later, the packages installed from the lock file (`npm ci` in
//! guests/node/compat: .ci/run does it) and the `postgresql` and `redis-server` Debian
//! packages (.ci/run installs them). A missing piece fails the test, saying which;
//! `PUSHNET_SKIP_NODE=1` skips it, as it skips the other Node suites.

mod node_runner;

use std::time::Duration;

/// The files' own tests have per-test timeouts; this only guards the whole run.
const WHOLE_RUN_LIMIT: Duration = Duration::from_secs(10 * 60);

const COMPAT_DIR: &str = "guests/node/compat";

#[test]
fn npm_packages_run_as_guests() {
    let Some(version) = node_runner::node_or_skip("the npm compatibility suites") else {
        return;
    };
    let modules = node_runner::repo().join(COMPAT_DIR).join("node_modules");
    assert!(
        modules.is_dir(),
        "{} is missing: install the packages from the lock file with `npm ci --prefix \
         {COMPAT_DIR}` (.ci/run does), or set PUSHNET_SKIP_NODE=1 to skip the Node suites",
        modules.display()
    );
    let files = node_runner::test_files(COMPAT_DIR);
    node_runner::run_node_tests(&files, &version, WHOLE_RUN_LIMIT);
}
