//! The Unix listening socket (`serve --listen PATH`): many sessions, one per connection.
//!
//! The socket file is created mode 0600 with no window where it is more open: it is
//! bound inside a fresh private (0700) directory, chmod'ed, then renamed into place. A
//! path that already holds a live socket is refused (`EADDRINUSE`) rather than stolen; a
//! stale one (nobody answers) is replaced.
//!
//! An accept that fails for want of fds sheds one connection and backs off
//! ([`crate::fds`]): the listener stays readable then, so waiting on it would spin.

use std::cell::RefCell;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use super::stream::{async_fd, FdSink, FdSource};
use super::{serve_connection, Arrival};
use crate::config::random_token;
use crate::core::Core;
use crate::fds::{self, Backoff, FdHold};
use crate::metrics::bump;

/// Binds `path` as a Unix listening socket readable and writable by this user only.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running listener", path.display()),
            ));
        }
        fs::remove_file(path)?;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = parent.join(format!(".sidecar-bind-{}", &random_token()[..16]));
    DirBuilder::new().mode(0o700).create(&staging)?;
    let staged = staging.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o600))?;
        fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&staging);
    result
}

/// Accepts connections until the loop shuts down; each becomes a session. The
/// listener's fd is counted from now on (not only once the task runs).
pub fn accept_loop(
    core: Rc<RefCell<Core>>,
    listener: UnixListener,
    max_frame: usize,
) -> impl std::future::Future<Output = ()> {
    let listening = FdHold::new(&core.borrow().metrics, 1);
    async move {
        accept_until_stopped(core, listener, max_frame).await;
        drop(listening);
    }
}

async fn accept_until_stopped(core: Rc<RefCell<Core>>, listener: UnixListener, max_frame: usize) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%e, "cannot serve the Unix listener");
            return;
        }
    };
    let metrics = Arc::clone(&core.borrow().metrics);
    let mut backoff = Backoff::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                let fd = match stream.into_std() {
                    Ok(std_stream) => OwnedFd::from(std_stream),
                    Err(e) => {
                        crate::warn_limited!(%e, "accepted connection unusable");
                        continue;
                    }
                };
                match async_fd(fd) {
                    Ok(fd) => {
                        let task = serve_fds(
                            Rc::clone(&core),
                            Arc::clone(&fd),
                            fd,
                            true,
                            max_frame,
                            None,
                            Arrival::Accepted,
                        );
                        tokio::task::spawn_local(task);
                    }
                    Err(e) => crate::warn_limited!(%e, "cannot register a connection"),
                }
            }
            Err(e) => {
                // EMFILE and friends: the listener stays readable and nothing notifies
                // "an fd was freed". Shed one connection with the spare fd (its client
                // sees the close at once, not a hang), then back off on a timer: the
                // loop serves everything else meanwhile. Counted, never a spin.
                let shed = fds::is_exhaustion(&e)
                    && metrics.fds.shed(|| accept_and_close(listener.as_raw_fd()));
                if shed {
                    bump(&metrics.accept_shed);
                }
                bump(&metrics.accept_backoff);
                let wait = backoff.step();
                let total_shed = crate::metrics::get(&metrics.accept_shed);
                crate::warn_limited!(%e, shed = total_shed, ?wait,
                    "accept on the Unix listener failed; shedding and backing off");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Takes one pending connection off a non-blocking listener and closes it.
fn accept_and_close(listener: RawFd) -> io::Result<()> {
    // SAFETY: accept on a listening fd we own, without an address buffer; the fd it
    // returns is ours and closed at once.
    let fd = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the accepted fd is ours alone.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Serves one fd-based connection (a socket, or stdin + stdout); `bound` and `arrival`
/// as [`serve_connection`] takes them.
pub async fn serve_fds(
    core: Rc<RefCell<Core>>,
    read: Arc<AsyncFd<File>>,
    write: Arc<AsyncFd<File>>,
    is_socket: bool,
    max_frame: usize,
    bound: Option<String>,
    arrival: Arrival,
) {
    // Counted as open until both the reader (here) and the writer are done with them.
    let fds = if is_socket && Arc::ptr_eq(&read, &write) {
        1
    } else {
        2
    };
    let hold = Rc::new(FdHold::new(&core.borrow().metrics, fds));
    let sink = FdSink::new(write, is_socket);
    {
        let mut core = core.borrow_mut();
        // Writers of ended sessions are reaped here, so the set stays as big as the
        // sessions that are live (or flushing).
        while core.writers.try_join_next().is_some() {}
        let writer = Arc::clone(&sink).run_writer();
        let hold = Rc::clone(&hold);
        core.writers.spawn_local(async move {
            writer.await;
            drop(hold);
        });
    }
    let mut stopping = core.borrow().stopping.subscribe();
    let max_header = core.borrow().config.limits.max_header;
    let closer: Arc<dyn crate::outbound::FrameSink> = Arc::clone(&sink) as _;
    let served = serve_connection(
        core,
        FdSource::new(read, max_frame, is_socket).with_max_header(max_header),
        sink,
        max_frame,
        bound,
        arrival,
    );
    tokio::select! {
        () = served => {}
        // A stopping sidecar has ended every session already; one still waiting for its
        // hello is closed here, so that its writer ends and the stop is not held up.
        _ = stopping.wait_for(|stopping| *stopping) => closer.close(),
    }
    drop(hold);
}
