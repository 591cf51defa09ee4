//! The embedding API: start a sidecar (its RPC loop on a thread of its own), attach
//! sessions over any transport, read the operator's stats, shut it down.
//!
//! The RPC loop is a single-thread tokio runtime with a `LocalSet`, as in the system this
//! replaces: every call is served there, none may block, and a call that must wait is
//! parked as a local task. Commands reach the loop through a channel, so the handle is
//! `Send + Sync` and usable from any thread.
//!
//! # Two ways for the loop to sleep
//!
//! Byte-stream transports (`serve_fds`, `listen_unix`) need tokio's I/O driver, and with
//! it the loop sleeps in `epoll_wait`/`kevent`: a guest thread of the same process that
//! queues a call wakes it through an eventfd, and the loop comes back through the poller.
//! A sidecar that serves in-process sessions only ([`Sidecar::start_in_process`]) needs no
//! I/O driver (host sockets and published ports live on the readiness thread), so its
//! loop sleeps on a condition variable (a futex on Linux) that the guest's thread signals
//! directly, as the bare-C yardstick of `scripts/benchmarks/c` does. Measured with
//! diffbench (`--no-node`, builds alternated, two sets of three pairs): in-VM echoes
//! 12.0–12.8 → 11.0–11.5 µs p50; the `_ext` rows moved within their run-to-run noise
//! (`docs/benchmarks.md`, "Embedding").

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::SidecarConfig;
use crate::core::Core;
use crate::host::dns_pool::DnsPool;
use crate::host::publish::{self, BoundPublication};
use crate::host::HostNet;
use crate::metrics::Metrics;
use crate::policy::Proto;
use crate::transport::inproc::{PipeSink, PipeSource};
use crate::transport::listen::{accept_loop, bind_private, serve_fds};
use crate::transport::stream::async_fd;
use crate::transport::{serve_connection, Arrival};

enum Command {
    InProcess(inproc_pipe::End, Option<String>),
    Fds {
        read: OwnedFd,
        write: Option<OwnedFd>,
        bound: Option<String>,
        done: std_mpsc::Sender<()>,
    },
    Listen(std::os::unix::net::UnixListener),
    Stats(std_mpsc::Sender<Value>),
    Reload(
        Box<SidecarConfig>,
        Vec<BoundPublication>,
        std_mpsc::Sender<()>,
    ),
}

/// Which transports a sidecar serves, fixed when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transports {
    /// In-process sessions, fds and Unix sockets: the loop has tokio's I/O driver.
    All,
    /// In-process sessions only: no I/O driver, the loop sleeps on a condition variable.
    InProcessOnly,
}

/// A running sidecar. Dropping it (or [`Sidecar::shutdown`]) ends every session, stops
/// the RPC loop and removes the Unix socket files it created.
pub struct Sidecar {
    commands: Option<mpsc::UnboundedSender<Command>>,
    /// Which transports this sidecar serves (fixed at start: see the module docs).
    transports: Transports,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    socket_files: parking_lot::Mutex<Vec<PathBuf>>,
    /// Host addresses published now (their sockets live on the RPC loop).
    published: parking_lot::Mutex<HashSet<(SocketAddr, Proto)>>,
}

impl Sidecar {
    /// Starts the RPC loop thread (`sidecar-rpc`), serving every transport: in-process
    /// sessions, fds ([`Sidecar::serve_fds`]) and Unix sockets ([`Sidecar::listen_unix`]).
    /// Fails if a published port cannot be bound.
    pub fn start(config: SidecarConfig) -> io::Result<Sidecar> {
        Sidecar::start_serving(config, Transports::All)
    }

    /// Starts a sidecar that serves in-process sessions only
    /// ([`Sidecar::connect_in_process`]), for an embedder whose guests are threads of its
    /// own process. Its RPC loop sleeps on a condition variable instead of in the poller,
    /// so a guest's call wakes it sooner (module docs). Host sockets, published ports and
    /// everything else work as with [`Sidecar::start`]; [`Sidecar::serve_fds`] and
    /// [`Sidecar::listen_unix`] fail with `Unsupported`.
    pub fn start_in_process(config: SidecarConfig) -> io::Result<Sidecar> {
        Sidecar::start_serving(config, Transports::InProcessOnly)
    }

    fn start_serving(mut config: SidecarConfig, transports: Transports) -> io::Result<Sidecar> {
        check_limits(&config)?;
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let mut builder = tokio::runtime::Builder::new_current_thread();
        if transports == Transports::All {
            builder.enable_io();
        }
        let runtime = builder.enable_time().build()?;
        let loop_metrics = Arc::clone(&metrics);
        // The readiness thread: host sockets' events, handled inline there.
        let reactor = Arc::new(readiness::Reactor::new()?);
        // The fds open now are the base of the count; what opens later is counted.
        metrics.fds.start();
        crate::fds::clamp_config(&mut config, metrics.fds.limit());
        let hosts = published_hosts(&config);
        let bound = publish::bind_all(hosts.iter().copied())?;
        tx.send(Command::Reload(
            Box::new(config.clone()),
            bound,
            std_mpsc::channel().0,
        ))
        .map_err(|_| io::Error::other("the command channel closed"))?;
        let thread = std::thread::Builder::new()
            .name("sidecar-rpc".into())
            .spawn(move || run_loop(runtime, Arc::new(config), loop_metrics, reactor, rx))?;
        Ok(Sidecar {
            commands: Some(tx),
            transports,
            thread: Some(thread),
            metrics,
            socket_files: parking_lot::Mutex::new(Vec::new()),
            published: parking_lot::Mutex::new(hosts),
        })
    }

    /// `Unsupported` for a sidecar started with [`Sidecar::start_in_process`]: its loop has
    /// no I/O driver to watch an fd with.
    fn serves_fds(&self) -> io::Result<()> {
        match self.transports {
            Transports::All => Ok(()),
            Transports::InProcessOnly => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this sidecar serves in-process sessions only (started with \
                 Sidecar::start_in_process): use Sidecar::start for fds and Unix sockets",
            )),
        }
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands
            .as_ref()
            .and_then(|tx| tx.send(command).ok())
            .ok_or_else(|| io::Error::other("the sidecar has shut down"))
    }

    /// A new in-process connection; returns the guest's end of the pipe.
    pub fn connect_in_process(&self) -> io::Result<inproc_pipe::End> {
        let (guest, sidecar) = inproc_pipe::duplex();
        self.send(Command::InProcess(sidecar, None))?;
        Ok(guest)
    }

    /// A new in-process connection already attached to VM `vm`: the guest's hello on it
    /// carries no VM name and no secret (`HelloParams::attached`), so an embedder never
    /// hands a guest its VM's secret. A VM the config does not define refuses that hello.
    pub fn connect_in_process_attached(&self, vm: &str) -> io::Result<inproc_pipe::End> {
        let (guest, sidecar) = inproc_pipe::duplex();
        self.send(Command::InProcess(sidecar, Some(vm.to_owned())))?;
        Ok(guest)
    }

    /// Serves one connection over fds: a socket (`write` = `None`: the same fd both ways)
    /// or a pipe pair such as stdin/stdout. The returned channel yields once the
    /// connection has ended. `Unsupported` on a sidecar from
    /// [`Sidecar::start_in_process`].
    pub fn serve_fds(
        &self,
        read: OwnedFd,
        write: Option<OwnedFd>,
    ) -> io::Result<std_mpsc::Receiver<()>> {
        self.serve_fds_as(read, write, None)
    }

    /// As [`Sidecar::serve_fds`], for a stream already attached to VM `vm`: the guest on
    /// the other end says hello without a VM name or secret. This is how `sidecar run`
    /// hands its child a session without handing it a secret.
    pub fn serve_fds_attached(
        &self,
        read: OwnedFd,
        write: Option<OwnedFd>,
        vm: &str,
    ) -> io::Result<std_mpsc::Receiver<()>> {
        self.serve_fds_as(read, write, Some(vm.to_owned()))
    }

    fn serve_fds_as(
        &self,
        read: OwnedFd,
        write: Option<OwnedFd>,
        bound: Option<String>,
    ) -> io::Result<std_mpsc::Receiver<()>> {
        self.serves_fds()?;
        let (done, finished) = std_mpsc::channel();
        self.send(Command::Fds {
            read,
            write,
            bound,
            done,
        })?;
        Ok(finished)
    }

    /// Listens on a Unix socket at `path` (created mode 0600); each connection is a
    /// session. The file is removed when the sidecar shuts down. `Unsupported` (and no
    /// file created) on a sidecar from [`Sidecar::start_in_process`].
    pub fn listen_unix(&self, path: &Path) -> io::Result<()> {
        self.serves_fds()?;
        let listener = bind_private(path)?;
        self.send(Command::Listen(listener))?;
        self.socket_files.lock().push(path.to_path_buf());
        Ok(())
    }

    /// The operator's view of the counters (every VM).
    pub fn stats(&self) -> io::Result<Value> {
        let (tx, rx) = std_mpsc::channel();
        self.send(Command::Stats(tx))?;
        rx.recv()
            .map_err(|_| io::Error::other("the sidecar has shut down"))
    }

    /// Replaces the operator configuration (VMs, secrets, policy, limits) without dropping
    /// live sessions: new VMs can be attached to at once, new rules and limits apply to
    /// calls from now on. A session of a VM that is no longer configured keeps running;
    /// new attaches to that VM are refused. Returns once the loop has applied it.
    ///
    /// Newly published host ports are bound first: if one cannot be, nothing changes and
    /// the error is returned; so it is for limits that cannot work together.
    pub fn reload(&self, mut config: SidecarConfig) -> io::Result<()> {
        check_limits(&config)?;
        crate::fds::clamp_config(&mut config, self.metrics.fds.limit());
        let mut published = self.published.lock();
        let hosts = published_hosts(&config);
        let bound = publish::bind_all(hosts.difference(&published).copied())?;
        let (tx, rx) = std_mpsc::channel();
        self.send(Command::Reload(Box::new(config), bound, tx))?;
        rx.recv()
            .map_err(|_| io::Error::other("the sidecar has shut down"))?;
        *published = hosts;
        Ok(())
    }

    /// Sidecar-wide counters, readable without a round trip to the loop.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Ends every session and stops the loop (also done on drop).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for path in self.socket_files.lock().drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_loop(
    runtime: tokio::runtime::Runtime,
    config: Arc<SidecarConfig>,
    metrics: Arc<Metrics>,
    reactor: Arc<readiness::Reactor>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let (notices, notices_rx) = mpsc::unbounded_channel();
        let threads = config.limits.dns_threads;
        let dns = DnsPool::new(config.resolver.clone(), threads, Arc::clone(&metrics));
        let host = HostNet {
            reactor,
            notices,
            dns,
        };
        let core = Rc::new(RefCell::new(Core::new(config, metrics, host)));
        tokio::task::spawn_local(crate::host::reap(Rc::clone(&core), notices_rx));
        tokio::task::spawn_local(crate::transport::turn::resume_held(Rc::clone(&core)));
        let mut acceptors = Vec::new();
        while let Some(command) = commands.recv().await {
            // Read per command: a reload may change it for new connections.
            let max_frame = core.borrow().config.limits.max_frame;
            match command {
                Command::InProcess(end, bound) => {
                    let source = PipeSource::new(end.rx, max_frame);
                    let sink = Arc::new(PipeSink(end.tx));
                    tokio::task::spawn_local(serve_connection(
                        Rc::clone(&core),
                        source,
                        sink,
                        max_frame,
                        bound,
                        Arrival::Handed,
                    ));
                }
                Command::Fds {
                    read,
                    write,
                    bound,
                    done,
                } => serve_fd_command(&core, read, write, bound, done, max_frame),
                Command::Listen(listener) => {
                    acceptors.push(tokio::task::spawn_local(accept_loop(
                        Rc::clone(&core),
                        listener,
                        max_frame,
                    )));
                }
                Command::Stats(reply) => {
                    let _ = reply.send(crate::stats::sidecar_stats(&core.borrow()));
                }
                Command::Reload(config, bound, done) => {
                    let stopping = core.borrow_mut().apply_config(*config);
                    for socket in bound {
                        let key = (socket.host, socket.proto());
                        let task = tokio::task::spawn_local(publish::serve_bound(
                            Rc::clone(&core),
                            socket,
                        ));
                        core.borrow_mut().publishers.insert(key, task);
                    }
                    // The removed publications' listeners are closed (their tasks
                    // dropped) before the reload is reported done.
                    for task in stopping {
                        let _ = task.await;
                    }
                    let _ = done.send(());
                }
            }
        }
        // The sidecar itself is going away: stop accepting, push `close` for every id,
        // flush (bounded), then tear down.
        crate::shutdown::shutdown(&core, acceptors).await;
    });
}

fn serve_fd_command(
    core: &Rc<RefCell<Core>>,
    read: OwnedFd,
    write: Option<OwnedFd>,
    bound: Option<String>,
    done: std_mpsc::Sender<()>,
    max_frame: usize,
) {
    let is_socket = write.is_none();
    let fds = async_fd(read).and_then(|read| {
        let write = match write {
            Some(fd) => async_fd(fd)?,
            None => Arc::clone(&read),
        };
        Ok::<_, io::Error>((read, write))
    });
    match fds {
        Ok((read, write)) => {
            let core = Rc::clone(core);
            tokio::task::spawn_local(async move {
                serve_fds(
                    core,
                    read,
                    write,
                    is_socket,
                    max_frame,
                    bound,
                    Arrival::Handed,
                )
                .await;
                let _ = done.send(());
            });
        }
        Err(e) => {
            tracing::error!(%e, "cannot serve these fds (regular files cannot be polled)");
            let _ = done.send(());
        }
    }
}

/// The (address, protocol) pairs `config` publishes.
fn published_hosts(config: &SidecarConfig) -> HashSet<(SocketAddr, Proto)> {
    config
        .publications()
        .map(|(host, proto, ..)| (host, proto))
        .collect()
}

/// Refuses limits that cannot work together (`InvalidInput`, naming the VM).
fn check_limits(config: &SidecarConfig) -> io::Result<()> {
    config.validate_limits().map_err(|(vm, e)| {
        let whose = vm.map_or_else(|| "the global limits".to_owned(), |vm| format!("VM {vm}"));
        io::Error::new(io::ErrorKind::InvalidInput, format!("{whose}: {e}"))
    })
}

/// Opens stdin and stdout as a connection's fds (duplicated, so the originals stay).
pub fn stdio_fds() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::AsFd;
    let stdin = io::stdin().as_fd().try_clone_to_owned()?;
    let stdout = io::stdout().as_fd().try_clone_to_owned()?;
    Ok((stdin, stdout))
}
