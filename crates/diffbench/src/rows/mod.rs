//! The rows of the table. Latency rows are lanes of round-trip runners, interleaved in
//! blocks so machine drift hits every lane alike; the others measure a rate.

pub mod accept;
pub mod bulk;
pub mod cpu;
pub mod echo;
pub mod http;
pub mod idle;
pub mod pipe;

use hdrhistogram::Histogram;

use crate::result::RowResult;

/// Runs `n` operations, recording each one's latency in ns.
pub type Runner = Box<dyn FnMut(usize, &mut Histogram<u64>)>;

/// One lane of a latency row: its name, its runner, and operations per block.
pub struct Lane {
    pub name: &'static str,
    pub run: Runner,
    pub per_block: usize,
}

/// How long the run is: block count and operations per block for fast / slow lanes.
#[derive(Clone, Copy)]
pub struct Budget {
    pub blocks: usize,
    pub fast: usize,
    /// The poll lane pays a timer tick (4 ms) per event: far fewer samples fit.
    pub slow: usize,
    pub quick: bool,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

/// Runs a latency row: a warm-up, then `blocks` rounds of every lane in turn.
pub fn run_latency(
    row: &str,
    mut lanes: Vec<Lane>,
    budget: Budget,
    guest_endpoints: u32,
) -> Vec<RowResult> {
    for lane in lanes.iter_mut() {
        (lane.run)(lane.per_block.min(20), &mut histogram());
    }
    let mut hists: Vec<Histogram<u64>> = lanes.iter().map(|_| histogram()).collect();
    for _ in 0..budget.blocks {
        for (lane, hist) in lanes.iter_mut().zip(hists.iter_mut()) {
            (lane.run)(lane.per_block, hist);
        }
    }
    lanes
        .iter()
        .zip(hists)
        .map(|(lane, hist)| RowResult {
            row: row.into(),
            lane: lane.name.into(),
            samples: hist.len(),
            p50_us: Some(hist.value_at_quantile(0.5) as f64 / 1000.0),
            p99_us: Some(hist.value_at_quantile(0.99) as f64 / 1000.0),
            guest_endpoints: (lane.name != "host").then_some(guest_endpoints),
            ..RowResult::default()
        })
        .collect()
}

/// A port number out of a guest address.
pub fn port_of(address: &guest_client::protocol::Address) -> u16 {
    match address {
        guest_client::protocol::Address::Inet(addr) => addr.port(),
        other => panic!("not an inet address: {other:?}"),
    }
}
