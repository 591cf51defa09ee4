//! Handing freed heap memory back to the OS after a burst.
//!
//! Why `malloc_trim` and not different `mallopt` settings: `main` raises glibc's trim and
//! mmap thresholds on purpose (freed frame buffers stay in the process for reuse; with
//! glibc's defaults a stream of 64-256 KiB frames paid fresh page faults per frame, and
//! `tcp_bulk` lost a third of its throughput). Lowering them again would bring that back,
//! and would still not return memory freed in the middle of the heap or in other threads'
//! arenas (a trim threshold only shrinks the top of the main arena). `malloc_trim(0)`
//! walks every arena and gives back every free page (`MADV_DONTNEED`), so after a
//! session ends, or a large buffer is freed, the resident size falls back while the
//! steady state keeps its buffers.
//!
//! At most one trim per second: [`freed`] schedules a trim if the last one is a second old,
//! else schedules one (a single pending task) for when it is; either way 100 ms
//! after the call, so what the ending session's tasks still hold is freed first. The trim runs on tokio's
//! blocking pool, so a large heap's walk never stalls the RPC loop. Counted:
//! `memory_trims`. On other platforms (and other C libraries) this is a no-op.

use std::sync::Arc;

use crate::metrics::Metrics;

/// Something large was freed (a session ended, a big buffer went): trim soon.
pub fn freed(metrics: &Arc<Metrics>) {
    imp::freed(metrics);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use crate::metrics::{bump, Metrics};

    const MIN_INTERVAL: Duration = Duration::from_secs(1);
    const SETTLE: Duration = Duration::from_millis(100);

    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    static SCHEDULED: AtomicBool = AtomicBool::new(false);

    pub fn freed(metrics: &Arc<Metrics>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if SCHEDULED.swap(true, Ordering::AcqRel) {
            return; // a trim is already due
        }
        let since_last = LAST
            .lock()
            .map(|last| last.map_or(Duration::ZERO, |t| MIN_INTERVAL.saturating_sub(t.elapsed())))
            .unwrap_or(Duration::ZERO);
        // A moment later, so what the ending session's tasks still hold is freed first.
        let wait = since_last.max(SETTLE);
        let metrics = Arc::clone(metrics);
        handle.spawn(async move {
            tokio::time::sleep(wait).await;
            let trimmed = tokio::task::spawn_blocking(move || {
                if let Ok(mut last) = LAST.lock() {
                    *last = Some(Instant::now());
                }
                SCHEDULED.store(false, Ordering::Release);
                // SAFETY: malloc_trim only releases free memory of glibc's own arenas;
                // it takes their locks and is safe to call from any thread.
                unsafe { libc::malloc_trim(0) };
            });
            if trimmed.await.is_ok() {
                bump(&metrics.memory_trims);
            }
        });
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use std::sync::Arc;

    use crate::metrics::Metrics;

    pub fn freed(_metrics: &Arc<Metrics>) {}
}
