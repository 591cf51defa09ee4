//! Fuzz targets for the wire and the sidecar's call dispatch. The targets in
//! `fuzz_targets/` are one line each; the input formats and the properties live here, so
//! the seed corpus can be generated and replayed by ordinary tests (`src/corpus.rs`).

pub mod dispatch;
pub mod frames;

#[cfg(test)]
mod corpus;
