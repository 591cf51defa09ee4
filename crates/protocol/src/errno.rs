//! Raw OS error numbers ↔ [`ErrorCode`], without depending on `libc`.
//!
//! A guest-side crate should not need `libc`, and std exposes only `raw_os_error()` plus a
//! coarse `ErrorKind`. So this is a small, explicit table for the platforms the sidecar runs
//! on: Linux (the generic errno layout shared by x86, ARM, RISC-V, PowerPC, s390x; MIPS and
//! SPARC differ and get no table) and Apple's Darwin. Elsewhere [`code_for`] returns `None`
//! and callers fall back to `ErrorKind`. A test checks every entry against `libc`.

use crate::error::ErrorCode;

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
const TABLE: &[(i32, ErrorCode)] = &[
    (1, ErrorCode::Eperm),
    (2, ErrorCode::Enoent),
    (4, ErrorCode::Eintr),
    (5, ErrorCode::Eio),
    (9, ErrorCode::Ebadf),
    (11, ErrorCode::Eagain),
    (12, ErrorCode::Enomem),
    (13, ErrorCode::Eacces),
    (17, ErrorCode::Eexist),
    (22, ErrorCode::Einval),
    (23, ErrorCode::Enfile),
    (24, ErrorCode::Emfile),
    (32, ErrorCode::Epipe),
    (36, ErrorCode::Enametoolong),
    (38, ErrorCode::Enosys),
    (71, ErrorCode::Eproto),
    (89, ErrorCode::Edestaddrreq),
    (90, ErrorCode::Emsgsize),
    (93, ErrorCode::Eprotonosupport),
    (95, ErrorCode::Enotsup), // also EOPNOTSUPP on Linux
    (97, ErrorCode::Eafnosupport),
    (98, ErrorCode::Eaddrinuse),
    (99, ErrorCode::Eaddrnotavail),
    (100, ErrorCode::Enetdown),
    (101, ErrorCode::Enetunreach),
    (103, ErrorCode::Econnaborted),
    (104, ErrorCode::Econnreset),
    (105, ErrorCode::Enobufs),
    (106, ErrorCode::Eisconn),
    (107, ErrorCode::Enotconn),
    (110, ErrorCode::Etimedout),
    (111, ErrorCode::Econnrefused),
    (113, ErrorCode::Ehostunreach),
    (114, ErrorCode::Ealready),
    (115, ErrorCode::Einprogress),
    (125, ErrorCode::Ecanceled),
];

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos"
))]
const TABLE: &[(i32, ErrorCode)] = &[
    (1, ErrorCode::Eperm),
    (2, ErrorCode::Enoent),
    (4, ErrorCode::Eintr),
    (5, ErrorCode::Eio),
    (9, ErrorCode::Ebadf),
    (12, ErrorCode::Enomem),
    (13, ErrorCode::Eacces),
    (17, ErrorCode::Eexist),
    (22, ErrorCode::Einval),
    (23, ErrorCode::Enfile),
    (24, ErrorCode::Emfile),
    (32, ErrorCode::Epipe),
    (35, ErrorCode::Eagain),
    (36, ErrorCode::Einprogress),
    (37, ErrorCode::Ealready),
    (39, ErrorCode::Edestaddrreq),
    (40, ErrorCode::Emsgsize),
    (43, ErrorCode::Eprotonosupport),
    (45, ErrorCode::Enotsup),
    (47, ErrorCode::Eafnosupport),
    (48, ErrorCode::Eaddrinuse),
    (49, ErrorCode::Eaddrnotavail),
    (50, ErrorCode::Enetdown),
    (51, ErrorCode::Enetunreach),
    (53, ErrorCode::Econnaborted),
    (54, ErrorCode::Econnreset),
    (55, ErrorCode::Enobufs),
    (56, ErrorCode::Eisconn),
    (57, ErrorCode::Enotconn),
    (60, ErrorCode::Etimedout),
    (61, ErrorCode::Econnrefused),
    (63, ErrorCode::Enametoolong),
    (65, ErrorCode::Ehostunreach),
    (78, ErrorCode::Enosys),
    (89, ErrorCode::Ecanceled),
    (100, ErrorCode::Eproto),
    (102, ErrorCode::Enotsup), // EOPNOTSUPP, a distinct number on Darwin
];

#[cfg(not(any(
    all(
        any(target_os = "linux", target_os = "android"),
        not(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "sparc",
            target_arch = "sparc64"
        ))
    ),
    target_os = "macos",
    target_os = "ios",
    target_os = "tvos",
    target_os = "watchos"
)))]
const TABLE: &[(i32, ErrorCode)] = &[];

/// Whether this platform has an errno table (tests use it to know what to expect).
#[cfg(test)]
pub(crate) fn has_table() -> bool {
    !TABLE.is_empty()
}

/// The code for a raw OS error number, if the table knows it.
pub(crate) fn code_for(errno: i32) -> Option<ErrorCode> {
    TABLE
        .iter()
        .find(|(n, _)| *n == errno)
        .map(|(_, code)| code.clone())
}

/// The first raw OS error number for a code, if the table knows it.
pub(crate) fn raw_for(code: &ErrorCode) -> Option<i32> {
    TABLE.iter().find(|(_, c)| c == code).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(
        all(target_os = "linux", target_arch = "x86_64"),
        all(target_os = "linux", target_arch = "aarch64"),
        target_os = "macos"
    ))]
    #[test]
    fn table_matches_libc() {
        let expected: &[(i32, ErrorCode)] = &[
            (libc::EPERM, ErrorCode::Eperm),
            (libc::ENOENT, ErrorCode::Enoent),
            (libc::EINTR, ErrorCode::Eintr),
            (libc::EIO, ErrorCode::Eio),
            (libc::EBADF, ErrorCode::Ebadf),
            (libc::EAGAIN, ErrorCode::Eagain),
            (libc::ENOMEM, ErrorCode::Enomem),
            (libc::EACCES, ErrorCode::Eacces),
            (libc::EEXIST, ErrorCode::Eexist),
            (libc::EINVAL, ErrorCode::Einval),
            (libc::ENFILE, ErrorCode::Enfile),
            (libc::EMFILE, ErrorCode::Emfile),
            (libc::EPIPE, ErrorCode::Epipe),
            (libc::ENAMETOOLONG, ErrorCode::Enametoolong),
            (libc::ENOSYS, ErrorCode::Enosys),
            (libc::EPROTO, ErrorCode::Eproto),
            (libc::EDESTADDRREQ, ErrorCode::Edestaddrreq),
            (libc::EMSGSIZE, ErrorCode::Emsgsize),
            (libc::EPROTONOSUPPORT, ErrorCode::Eprotonosupport),
            (libc::ENOTSUP, ErrorCode::Enotsup),
            (libc::EOPNOTSUPP, ErrorCode::Enotsup),
            (libc::EAFNOSUPPORT, ErrorCode::Eafnosupport),
            (libc::EADDRINUSE, ErrorCode::Eaddrinuse),
            (libc::EADDRNOTAVAIL, ErrorCode::Eaddrnotavail),
            (libc::ENETDOWN, ErrorCode::Enetdown),
            (libc::ENETUNREACH, ErrorCode::Enetunreach),
            (libc::ECONNABORTED, ErrorCode::Econnaborted),
            (libc::ECONNRESET, ErrorCode::Econnreset),
            (libc::ENOBUFS, ErrorCode::Enobufs),
            (libc::EISCONN, ErrorCode::Eisconn),
            (libc::ENOTCONN, ErrorCode::Enotconn),
            (libc::ETIMEDOUT, ErrorCode::Etimedout),
            (libc::ECONNREFUSED, ErrorCode::Econnrefused),
            (libc::EHOSTUNREACH, ErrorCode::Ehostunreach),
            (libc::EALREADY, ErrorCode::Ealready),
            (libc::EINPROGRESS, ErrorCode::Einprogress),
            (libc::ECANCELED, ErrorCode::Ecanceled),
        ];
        for (errno, code) in expected {
            assert_eq!(code_for(*errno).as_ref(), Some(code), "errno {errno}");
        }
        // Every table entry is one of the checked constants.
        for (errno, code) in TABLE {
            assert!(
                expected.iter().any(|(n, c)| n == errno && c == code),
                "unchecked table entry {errno} -> {code}"
            );
        }
    }

    #[test]
    fn table_agrees_with_std_error_kinds() {
        // Independent of libc: std classifies raw errors itself; where std has a specific
        // kind, our code must map back to that same kind.
        for (errno, code) in TABLE {
            let kind = std::io::Error::from_raw_os_error(*errno).kind();
            let from_kind = ErrorCode::from_io_kind(kind);
            if from_kind != ErrorCode::Eio {
                assert_eq!(code.io_kind(), kind, "errno {errno} ({code})");
            }
        }
    }

    #[test]
    fn unknown_errno_is_none() {
        assert_eq!(code_for(-1), None);
        assert_eq!(code_for(100_000), None);
    }
}
