//! Runs Node test files (`node --test`) against this build's `sidecar` binary, for the
//! test binaries that drive the Node guest suites (`node_guest`: guests/node/test;
//! `node_npm`: the published packages in guests/node/compat). The files get the binary
//! as `PUSHNET_SIDECAR`; their output is shown with --nocapture and always on failure.
//!
//! Node (18 or later: Debian 12's `nodejs` is 18.20) must be on PATH: without it these
//! tests fail, saying so, unless `PUSHNET_SKIP_NODE=1` (CI installs Node).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `node --version` as (major, full text), or why it cannot run.
fn node_version() -> Result<(u32, String), String> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run `node`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major = text
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("unexpected `node --version` output {text:?}"))?;
    Ok((major, text))
}

/// Node's version text, or `None` when `PUSHNET_SKIP_NODE=1` asks to skip; panics, saying
/// why, when Node is missing or older than 18.
pub fn node_or_skip(what: &str) -> Option<String> {
    if std::env::var("PUSHNET_SKIP_NODE").as_deref() == Ok("1") {
        eprintln!("PUSHNET_SKIP_NODE=1: {what} are skipped");
        return None;
    }
    let (major, version) = node_version().unwrap_or_else(|why| {
        panic!(
            "{why}\n{what} need Node.js 18 or later on PATH (CI installs it: apt-get install \
             nodejs). Set PUSHNET_SKIP_NODE=1 to skip them."
        )
    });
    assert!(
        major >= 18,
        "Node {version} is too old for the Node guest runtime (18 or later)"
    );
    Some(version)
}

/// Every `*.test.js` directly in `dir` (relative to the repository), sorted. Named
/// explicitly: given the directory, Node's runner would also run every `.js` under it,
/// the apps included.
pub fn test_files(dir: &str) -> Vec<PathBuf> {
    let dir = repo().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {}/*.test.js found", dir.display());
    files
}

/// Runs `node --test` on `files` from the repository root, killing it past `limit` (the
/// files' own tests have per-test timeouts; this only guards the whole run), and asserts
/// it passed.
pub fn run_node_tests(files: &[PathBuf], version: &str, limit: Duration) {
    let mut child = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .args(files)
        .current_dir(repo())
        .env("PUSHNET_SIDECAR", env!("CARGO_BIN_EXE_sidecar"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting node --test");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = done.send(text);
    });
    let out = match finished.recv_timeout(limit) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node --test ran past {limit:?} and was killed");
        }
    };
    let status = child.wait().expect("waiting for node --test");
    let err = err_reader.join().unwrap_or_default();
    // Shown with --nocapture, and always on failure.
    println!("{out}");
    assert!(
        status.success(),
        "node --test failed ({status}) with {version}:\n{out}\n--- stderr\n{err}"
    );
}
