//! Workspace root of the push-based guest networking sidecar.
//!
//! This package holds no code of its own: it exists so that the cross-crate integration
//! tests (`tests/`) and the criterion microbenchmarks (`benches/`) live at the top of the
//! repository. The libraries are under `crates/`.
