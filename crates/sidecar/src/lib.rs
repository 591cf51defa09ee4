//! The push-based networking sidecar.
//!
//! A guest (a JS isolate, a WASM module) reaches the network only through synchronous
//! calls into this process and events it pushes back. Sessions attach to operator-defined
//! VMs (private loopbacks, ports and Unix paths); their sockets' events are **pushed** as
//! they happen, so a guest never waits on a timer. See `docs/PROTOCOL.md` for the wire and
//! `../shared/DESIGN.md` for the architecture.
//!
//! - [`Sidecar`] ([`runtime`]): the embedding API: start, attach sessions (in-process,
//!   fds, a Unix listening socket), stats, reload, shutdown ([`shutdown`]: stop
//!   accepting, tell every guest, flush within a grace period).
//! - [`core`]: sessions, VMs, the socket table (single-threaded, on the RPC loop).
//! - [`host`]: host kernel sockets for destinations outside a VM, on the readiness thread.
//! - [`calls`] / [`parked`]: serving calls, and the calls that must wait.
//! - [`outbound`]: a session's push side, never blocking the pusher.
//! - [`transport`]: in-process pipe, fd streams, the Unix listener.
//! - [`addr`]: address matching inside a VM; [`policy`]: what is reachable outside it;
//!   [`config`] and its [`limits`], [`metrics`], [`stats`]; [`ratelog`]: log lines a peer
//!   can cause, at most one per second per site.

pub mod addr;
pub mod calls;
pub mod config;
pub mod config_file;
pub mod core;
pub mod fds;
pub mod host;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod parked;
pub mod policy;
pub mod ratelog;
pub mod runtime;
pub mod shutdown;
pub mod stats;
pub mod transport;

pub use config::{LimitOverrides, Limits, SidecarConfig, VmConfig};
pub use policy::{AllowRule, Policy};
pub use runtime::Sidecar;
