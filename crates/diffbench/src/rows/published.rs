//! `published_get`: a native HTTP client (a host thread, std `TcpStream`, the keep-alive
//! GET of `http_loopback_get`) talks to a guest HTTP server through a host port the
//! sidecar publishes to the run's VM, like `docker -p`: what a host program sees of a
//! guest service. The guest's end is a host kernel socket served by the readiness
//! thread, as in the `*_ext` rows but the other way round (the guest accepts). Only the
//! server is a guest (`guest_endpoints` = 1): hop floor = host p50 + 1 × `pipe_rtt`.
//!
//! Lanes: `host` (the same native client against a native keep-alive server thread),
//! `guest-poll` and `guest-push` (the guest server in poll / push mode, each behind its
//! own published port, [`crate::ports::PublishedPorts`]). A guest lane whose first GET
//! does not come back within `PROBE_DEADLINE` (no publication, nothing forwarded) is
//! reported as a set-up failure and left out, instead of hanging the run.

use std::sync::mpsc;
use std::time::Duration;

use guest_client::TcpListener;

use super::http::{self, NativeClient};
use super::{Budget, Lane, Runner};
use crate::env::{Connector, Env};
use crate::ports::{HTTP_POLL_PORT, HTTP_PUSH_PORT};

pub const ROW: &str = "published_get";

/// Guests per round trip: only the server is a guest.
pub const GUEST_ENDPOINTS: u32 = 1;

const HOST: &str = "127.0.0.1";
/// How long a guest lane's set-up (its server's bind, the first GET) may take.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// The row's lanes: host always; each guest lane only if its first GET came back (else
/// its error goes to `failures`).
pub fn lanes(env: &Env, budget: Budget, failures: &mut Vec<String>) -> Vec<Lane> {
    let mut lanes = vec![Lane {
        name: "host",
        run: http::host(),
        per_block: budget.fast,
    }];
    let published = env.published;
    for (name, poll, in_vm, host_port, per_block) in [
        (
            "guest-poll",
            true,
            HTTP_POLL_PORT,
            published.http_poll,
            budget.slow,
        ),
        (
            "guest-push",
            false,
            HTTP_PUSH_PORT,
            published.http_push,
            budget.fast,
        ),
    ] {
        match guest(&env.connector, poll, in_vm, host_port) {
            Ok(run) => lanes.push(Lane {
                name,
                run,
                per_block,
            }),
            Err(e) => failures.push(format!("{ROW} {name}: {e}")),
        }
    }
    lanes
}

/// A guest HTTP server listening on the run VM's `in_vm` port, and the native client
/// connected to it through published `host_port`, its first GET done.
fn guest(connector: &Connector, poll: bool, in_vm: u16, host_port: u16) -> Result<Runner, String> {
    let (tx, rx) = mpsc::channel();
    let server = connector.spawn("published-http", poll, move |lp| async move {
        let listener = match TcpListener::bind(&lp, HOST, in_vm) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = tx.send(Err(format!("guest listen on port {in_vm}: {e}")));
                return;
            }
        };
        let _ = tx.send(Ok(()));
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        // A server's choice, as the native one makes it: each response leaves at once.
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("warning: guest set_nodelay: {e}");
        }
        http::serve_guest(stream).await;
    });
    rx.recv_timeout(PROBE_DEADLINE)
        .unwrap_or_else(|_| Err(format!("no listener within {PROBE_DEADLINE:?}")))?;
    let first_get = || {
        let mut client = NativeClient::connect((HOST, host_port))?;
        client.stream.set_read_timeout(Some(PROBE_DEADLINE))?;
        client.get()?;
        client.stream.set_read_timeout(None)?;
        std::io::Result::Ok(client)
    };
    let client = first_get().map_err(|e| format!("first GET via {HOST}:{host_port}: {e}"))?;
    Ok(client.runner(server))
}
