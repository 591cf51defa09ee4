//! Where the guests of a run come from: an embedded sidecar (in-process transport, the
//! default) or a separate `sidecar serve --listen` process (`--transport unix`, as a
//! deployed guest sees it), and how a guest thread is started.
//!
//! Either sidecar has the run's VM ([`VM`]) plus [`SCALE_VMS`] more for `scale_10k`
//! (which spreads its sockets over many VMs, as a host would), [`PEER_VM`] and
//! [`NOISY_VM`] (the other VM of `paired_echo` and of `isolation_p99`), and allows
//! `127.0.0.1` (all ports): the `*_ext` rows and `scale_10k` reach a native server
//! process on the host's loopback through host kernel sockets, and `paired_echo`'s
//! guest reaches [`VM`]'s published port. It publishes three host ports to [`VM`]
//! ([`PublishedPorts`]). `paired_echo`'s kernel lane needs a second sidecar, the same
//! but with pairing off ([`Env::kernel_path`]).

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use guest_client::{
    connect_unix, Client, GuestLoop, InProcTransport, LoopCounters, LoopHandle, UnixStream,
};
use sidecar::{Sidecar, SidecarConfig};
use sidecar_protocol::{CreditParams, Endpoint, EventBody, ListenParams, SocketId, WriteParams};

use crate::ports::PublishedPorts;

pub const VM: &str = "bench";
const SECRET: &str = "bench-secret";
/// The VMs `scale_10k` spreads its guests over: [`scale_vm`]`(0..SCALE_VMS)`.
pub const SCALE_VMS: usize = 100;
/// What the sidecar lets guests reach outside their VM: the native server process, and
/// (for [`PEER_VM`]) the run VM's published ports.
const ALLOW: &str = "127.0.0.1";
/// `paired_echo`'s connecting VM (its VM A; the server is in [`VM`]).
pub const PEER_VM: &str = "peer";
/// `isolation_p99`'s noisy VM (its VM A; the measured echo is in [`VM`]).
pub const NOISY_VM: &str = "noisy";

/// Whether a guest's connect to another VM's published port pairs in memory (the
/// sidecar's default) or stays on the kernel path (`pairing_wait` = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    On,
    Off,
}

/// Every VM of a run's sidecar.
fn vm_names() -> impl Iterator<Item = String> {
    [VM, PEER_VM, NOISY_VM]
        .into_iter()
        .map(str::to_owned)
        .chain((0..SCALE_VMS).map(scale_vm))
}

/// The name of the `i`-th extra VM of `scale_10k`.
pub fn scale_vm(i: usize) -> String {
    format!("scale-{i:03}")
}

/// The secret of `vm` in every sidecar the bench starts.
pub fn secret_of(vm: &str) -> String {
    format!("{SECRET}-{vm}")
}

fn allow_rule() -> sidecar::AllowRule {
    ALLOW.parse().expect("a valid allow rule")
}

/// Makes guest clients; cheap to clone, `Send`.
#[derive(Clone)]
pub struct Connector {
    kind: ConnectorKind,
    /// The run's control guest: every spawned guest connects to its listener, and one
    /// byte from it tells that guest to end (so no guest outlives its row, ticking).
    control: Arc<Mutex<Client>>,
}

#[derive(Clone)]
enum ConnectorKind {
    Embedded(Arc<Sidecar>),
    Unix(PathBuf),
}

const CONTROL_PATH: &str = "/bench/control";

/// A guest on its own thread; stopped (and joined) when dropped.
pub struct GuestThread {
    handle: Option<thread::JoinHandle<LoopCounters>>,
    stop: SocketId,
    control: Arc<Mutex<Client>>,
}

impl GuestThread {
    /// Waits for the guest to end by itself; returns its counters.
    pub fn join(mut self) -> LoopCounters {
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("guest thread")
    }
}

impl Drop for GuestThread {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self
                .control
                .lock()
                .expect("control")
                .send_noreply(&WriteParams { socket: self.stop }, b"!");
            let _ = handle.join();
        }
    }
}

/// Resolves when either future does (the guest's work, or its stop signal).
struct Either<A, B>(Pin<Box<A>>, Pin<Box<B>>);

impl<A: Future<Output = ()>, B: Future<Output = ()>> Future for Either<A, B> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0.as_mut().poll(cx).is_ready() || self.1.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Connector {
    fn new(kind: ConnectorKind) -> Connector {
        let client = Self::connect(&kind, VM, false);
        let connector = Connector {
            kind,
            control: Arc::new(Mutex::new(client)),
        };
        let listen = ListenParams {
            endpoint: Endpoint::unix(CONTROL_PATH),
            backlog: Some(65_535),
        };
        connector
            .control_client()
            .call(&listen)
            .expect("control listener");
        connector
    }

    /// Guests of the `sidecar serve --listen` process at `socket`, which must have [`VM`]
    /// (the control listener's VM) with the bench's secrets ([`secret_of`]).
    pub fn unix(socket: PathBuf) -> Connector {
        Connector::new(ConnectorKind::Unix(socket))
    }

    fn control_client(&self) -> std::sync::MutexGuard<'_, Client> {
        self.control.lock().expect("control")
    }

    fn connect(kind: &ConnectorKind, vm: &str, poll: bool) -> Client {
        let secret = secret_of(vm);
        let hello = match poll {
            true => Client::hello_params_poll(vm, secret),
            false => Client::hello_params(vm, secret),
        };
        match kind {
            ConnectorKind::Embedded(sidecar) => {
                let end = sidecar.connect_in_process().expect("sidecar running");
                Client::connect(InProcTransport::new(end), hello).expect("hello")
            }
            ConnectorKind::Unix(path) => {
                Client::connect(connect_unix(path).expect("sidecar socket"), hello).expect("hello")
            }
        }
    }

    /// A new guest session, push or poll mode.
    pub fn client(&self, poll: bool) -> Client {
        Self::connect(&self.kind, VM, poll)
    }

    /// A new guest session of VM `vm` (one of [`scale_vm`]'s, or [`VM`]), push or poll
    /// mode. Only [`VM`] has the control listener, so guests of other VMs are not
    /// started with [`Connector::spawn`]: their threads must end by themselves.
    pub fn client_in(&self, vm: &str, poll: bool) -> Client {
        Self::connect(&self.kind, vm, poll)
    }

    pub fn guest(&self, poll: bool) -> GuestLoop {
        GuestLoop::new(self.client(poll)).expect("guest loop")
    }

    /// Runs `body` as a guest on a thread of its own named `name` (the loop is built
    /// there: a loop is single-threaded). The guest ends when `body` does or when the
    /// returned handle is dropped, whichever comes first.
    pub fn spawn<F, Fut>(&self, name: &str, poll: bool, body: F) -> GuestThread
    where
        F: FnOnce(LoopHandle) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let kind = self.kind.clone();
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let lp = GuestLoop::new(Connector::connect(&kind, VM, poll)).expect("guest loop");
                let handle = lp.handle();
                lp.block_on(async move {
                    let stop = UnixStream::connect(&handle, CONTROL_PATH)
                        .await
                        .expect("control");
                    let stopped = async move {
                        let mut byte = [0u8; 1];
                        let _ = stop.read(&mut byte).await;
                    };
                    Either(Box::pin(body(handle.clone())), Box::pin(stopped)).await;
                });
                lp.counters()
            })
            .expect("spawn guest thread");
        // Learn which control socket is this guest's.
        let mut control = self.control_client();
        let stop = loop {
            let (event, _) = control
                .next_event(Some(Instant::now() + Duration::from_secs(60)))
                .expect("control events")
                .expect("the guest connects to the control listener");
            if let EventBody::Accept { socket, .. } = event.body {
                let _ = control.send_noreply(&CreditParams { socket, bytes: 0 }, b"");
                break socket;
            }
        };
        drop(control);
        GuestThread {
            handle: Some(handle),
            stop,
            control: Arc::clone(&self.control),
        }
    }
}

/// The `sidecar` binary beside this one (`scripts/benchmarks/run` builds both): the
/// `--transport unix` sidecar, and `sidecar run` for the Node guest lanes.
pub fn sidecar_binary() -> Result<std::path::PathBuf> {
    let binary = std::env::current_exe()?.with_file_name("sidecar");
    if !binary.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p sidecar`",
            binary.display()
        );
    }
    Ok(binary)
}

/// Starts `command` (a `sidecar serve --listen`) with its stderr piped and waits for its
/// "listening" log line. The rest of its stderr is drained on a thread (so the sidecar
/// never blocks on a full pipe), `on_line` called for each line.
pub fn spawn_listening(
    command: &mut Command,
    on_line: impl Fn() + Send + 'static,
) -> Result<Child> {
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            let _ = child.wait();
            bail!("the sidecar exited before listening");
        }
    }
    thread::spawn(move || {
        for _ in stderr.lines() {
            on_line();
        }
    });
    Ok(child)
}

/// The sidecar of a run, kept alive for its duration.
pub struct Env {
    pub connector: Connector,
    pub transport: &'static str,
    /// The host ports published to [`VM`].
    pub published: PublishedPorts,
    /// The sidecar process (`--transport unix`), killed on drop.
    pub process: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    pub fn embedded() -> Result<Env> {
        Env::embedded_with(Pairing::On)
    }

    fn embedded_with(pairing: Pairing) -> Result<Env> {
        let published = PublishedPorts::pick()?;
        let mut config = SidecarConfig::default().with_allow(allow_rule());
        for vm in vm_names() {
            config = config.with_vm(&vm, secret_of(&vm));
        }
        for (host, port) in published.pairs() {
            config = config.with_publish(VM, ([127, 0, 0, 1], host).into(), port);
        }
        if pairing == Pairing::Off {
            config.limits.pairing_wait = Duration::ZERO;
        }
        let sidecar = Sidecar::start_in_process(config)?;
        Ok(Env {
            connector: Connector::new(ConnectorKind::Embedded(Arc::new(sidecar))),
            transport: "inproc",
            published,
            process: None,
            _dir: None,
        })
    }

    /// Starts `sidecar serve --listen` (the binary next to this one) and waits for its
    /// "listening" log line.
    pub fn process() -> Result<Env> {
        Env::process_with(Pairing::On)
    }

    fn process_with(pairing: Pairing) -> Result<Env> {
        let binary = sidecar_binary()?;
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("sidecar.sock");
        let published = PublishedPorts::pick()?;
        // The secrets reach the sidecar through its environment (`--vm NAME=env:VAR`), never
        // its command line, which every local user can read.
        let secret_vars: Vec<(String, String, String)> = vm_names()
            .enumerate()
            .map(|(i, vm)| (format!("PUSHNET_BENCH_SECRET_{i}"), secret_of(&vm), vm))
            .collect();
        let vm_args = secret_vars
            .iter()
            .flat_map(|(var, _, vm)| ["--vm".to_owned(), format!("{vm}=env:{var}")]);
        let publish_args = published
            .pairs()
            .into_iter()
            .flat_map(|(host, port)| ["--publish".to_owned(), format!("{VM}={host}:{port}")]);
        let mut command = Command::new(&binary);
        command
            .args(["serve", "--listen"])
            .arg(&socket)
            .args(vm_args)
            .envs(secret_vars.iter().map(|(var, secret, _)| (var, secret)))
            .args(["--allow", ALLOW])
            .args(publish_args);
        if pairing == Pairing::Off {
            // No flag for it: a config file holding only the limit (the flags add the rest).
            let config = dir.path().join("kernel-path.toml");
            std::fs::write(&config, "[limits]\npairing_wait_ms = 0\n")?;
            command.arg("--config").arg(config);
        }
        let child = spawn_listening(command.env("RUST_LOG", "info"), || {})?;
        Ok(Env {
            connector: Connector::new(ConnectorKind::Unix(socket)),
            transport: "unix",
            published,
            process: Some(child),
            _dir: Some(dir),
        })
    }

    /// A second sidecar like this one (same transport, VMs, rules and publications on
    /// other host ports) but with pairing off: a guest's connect to another VM's
    /// published port stays on the kernel path (`paired_echo`'s kernel lane).
    pub fn kernel_path(&self) -> Result<Env> {
        match self.process {
            Some(_) => Env::process_with(Pairing::Off),
            None => Env::embedded_with(Pairing::Off),
        }
    }

    /// The operator's view of the sidecar's counters (`pairs_made`, …) when it is
    /// embedded; `None` for a separate process, whose operator view the bench cannot
    /// reach (a guest's `stats` shows only its own session and VM).
    pub fn operator_stats(&self) -> Option<serde_json::Value> {
        match &self.connector.kind {
            ConnectorKind::Embedded(sidecar) => sidecar.stats().ok(),
            ConnectorKind::Unix(_) => None,
        }
    }

    /// The process whose threads are the sidecar's: ours when embedded.
    pub fn sidecar_pid(&self) -> u32 {
        self.process.as_ref().map_or(std::process::id(), Child::id)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
