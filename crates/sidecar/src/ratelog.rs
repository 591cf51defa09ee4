//! Rate-limited log lines, for every place a peer can cause one.
//!
//! Why: a hostile guest or host client that can make the sidecar log once per thing it
//! does (a refused hello, a failed accept, a shed connection) can fill the operator's disk
//! and burn the loop's time formatting lines. Each such site logs at most once per
//! [`INTERVAL`]; the lines it held back in between are counted and reported with the next
//! one it emits (`suppressed = N`), so nothing is hidden, only summarised.
//!
//! Use [`warn_limited!`](crate::warn_limited): one static [`RateLimit`] per call site,
//! lock-free (two atomics), so any thread may log through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The shortest time between two lines of one site.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One call site's budget.
pub struct RateLimit {
    /// Milliseconds since [`epoch`] when this site last emitted, plus one (0: never).
    last_ms: AtomicU64,
    /// Lines held back since the last one emitted.
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl RateLimit {
    pub const fn new() -> Self {
        RateLimit {
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this line may be emitted now: `Some(n)` with the `n` lines held back since
    /// the last one, or `None` (this one is counted instead).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(epoch().elapsed())
    }

    fn admit_at(&self, now: Duration) -> Option<u64> {
        let now_ms = now.as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= INTERVAL.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!` at most once per [`INTERVAL`] per call site, with a `suppressed`
/// field counting the lines held back since the last one.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static SITE: $crate::ratelog::RateLimit = $crate::ratelog::RateLimit::new();
        if let Some(suppressed) = SITE.admit() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let site = RateLimit::new();
        let t0 = Duration::from_secs(10);
        assert_eq!(site.admit_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(site.admit_at(t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(site.admit_at(t0 + INTERVAL), Some(5));
        assert_eq!(site.admit_at(t0 + INTERVAL), None);
        assert_eq!(site.admit_at(t0 + INTERVAL * 3), Some(1));
    }

    #[test]
    fn the_macro_compiles_with_fields() {
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        for _ in 0..3 {
            crate::warn_limited!(%e, "accept failed");
        }
    }
}
