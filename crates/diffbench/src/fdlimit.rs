//! Raising the open-file limit: `scale_10k` holds 10,000 connected sockets in the
//! sidecar (the bench process when embedded) and their 10,000 peers in the native server
//! process. Many shells start programs with a soft `RLIMIT_NOFILE` of 1,024 and a much
//! higher hard limit; the soft limit may be raised to the hard one without privileges.
//! Children inherit the raised limit (the `sidecar serve` child of `--transport unix`
//! included), and the native server process raises its own as well.

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force
/// (`None` if it could not be read).
pub fn raise_to_hard() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: a valid rlimit; raising the soft limit up to the hard one is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}
