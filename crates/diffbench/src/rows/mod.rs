//! The rows of the table. Latency rows are lanes of round-trip runners, interleaved in
//! blocks so machine drift hits every lane alike; the others measure a rate.

pub mod accept;
pub mod bulk;
pub mod bulk_ext;
pub mod cpu;
pub mod echo;
pub mod ext;
pub mod hostile;
pub mod http;
pub mod idle;
pub mod isolation;
pub mod node;
pub mod paired;
pub mod pipe;
pub mod published;
pub mod scale;
pub mod startup;

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

/// The hop floor's own lane: the cross-process pipe round trip, run inside every latency
/// row's rotation so it is measured in the same machine state as the lanes it is the
/// floor of (on a small VM a wake-up costs twice as much for a while after the vCPUs
/// idled, e.g. during the poll lane's timer sleeps). Its samples from all rows make up
/// the `pipe_rtt` row.
pub struct HopFloor {
    pub lane: Lane,
    pub hist: Histogram<u64>,
}

impl HopFloor {
    pub fn new(lane: Lane) -> HopFloor {
        HopFloor {
            lane,
            hist: histogram(),
        }
    }

    /// The `pipe_rtt` row.
    pub fn result(&self) -> RowResult {
        summary("pipe_rtt", self.lane.name, &self.hist, None)
    }
}

/// Runs a latency row: a warm-up, then `blocks` rounds of every lane (and the hop floor's
/// lane, if given) in turn, the order rotated each round.
pub fn run_latency(
    row: &str,
    mut lanes: Vec<Lane>,
    budget: Budget,
    guest_endpoints: u32,
    mut floor: Option<&mut HopFloor>,
) -> Vec<RowResult> {
    for lane in lanes.iter_mut() {
        (lane.run)(lane.per_block.min(20), &mut histogram());
    }
    let mut hists: Vec<Histogram<u64>> = lanes.iter().map(|_| histogram()).collect();
    // This row's own `pipe_rtt` blocks: its hop floor is measured in the machine states
    // its lanes ran in (the run-wide row merges every row's blocks).
    let mut own_floor = histogram();
    let n = lanes.len() + usize::from(floor.is_some());
    for block in 0..budget.blocks {
        // Rotate the order each block: on a small VM, whichever lane runs right after the
        // mostly idle poll lane starts on cold, descheduled vCPUs and runs slower for a
        // while; rotating spreads that over every lane instead of always the same one.
        for i in 0..n {
            let at = (i + block) % n;
            match lanes.get_mut(at) {
                Some(lane) => (lane.run)(lane.per_block, &mut hists[at]),
                None => {
                    let floor = floor.as_deref_mut().expect("the extra lane");
                    let mut block = histogram();
                    (floor.lane.run)(floor.lane.per_block, &mut block);
                    floor.hist.add(&block).expect("same histogram bounds");
                    own_floor.add(&block).expect("same histogram bounds");
                }
            }
        }
    }
    lanes
        .iter()
        .zip(hists)
        .map(|(lane, hist)| {
            let k = lane.name.contains("guest").then_some(guest_endpoints);
            RowResult {
                pipe_rtt_p50_us: (!own_floor.is_empty()).then(|| p50_us(&own_floor)),
                ..summary(row, lane.name, &hist, k)
            }
        })
        .collect()
}

pub(crate) fn summary(row: &str, lane: &str, hist: &Histogram<u64>, k: Option<u32>) -> RowResult {
    RowResult {
        row: row.into(),
        lane: lane.into(),
        samples: hist.len(),
        p50_us: Some(p50_us(hist)),
        p99_us: Some(hist.value_at_quantile(0.99) as f64 / 1000.0),
        guest_endpoints: k,
        ..RowResult::default()
    }
}

fn p50_us(hist: &Histogram<u64>) -> f64 {
    hist.value_at_quantile(0.5) as f64 / 1000.0
}

/// A port number out of a guest address.
pub fn port_of(address: &guest_client::protocol::Address) -> u16 {
    match address {
        guest_client::protocol::Address::Inet(addr) => addr.port(),
        other => panic!("not an inet address: {other:?}"),
    }
}

/// The median of a few per-round figures (throughput and CPU rows measure in rounds,
/// alternating lanes, so drift on a noisy machine hits every lane alike).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A lane that records `value_ns` for every operation.
    fn constant(name: &'static str, value_ns: Rc<Cell<u64>>) -> Lane {
        Lane {
            name,
            run: Box::new(move |n, hist| {
                for _ in 0..n {
                    hist.record(value_ns.get()).unwrap();
                }
            }),
            per_block: 10,
        }
    }

    #[test]
    fn each_row_carries_the_pipe_rtt_of_its_own_blocks_and_the_floor_row_all_of_them() {
        let budget = Budget {
            blocks: 3,
            fast: 10,
            slow: 1,
            quick: true,
        };
        // The machine's state changes between rows: pipe_rtt reads 40 µs in the first
        // row's blocks and 60 µs in the second's.
        let pipe = Rc::new(Cell::new(40_000));
        let mut floor = HopFloor::new(constant("host", Rc::clone(&pipe)));
        let lane = |ns| constant("guest-push", Rc::new(Cell::new(ns)));
        let first = run_latency("a", vec![lane(70_000)], budget, 1, Some(&mut floor));
        pipe.set(60_000);
        let second = run_latency("b", vec![lane(80_000)], budget, 1, Some(&mut floor));
        let own = |rows: &[RowResult]| rows[0].pipe_rtt_p50_us.map(f64::round);
        assert_eq!(own(&first), Some(40.0));
        assert_eq!(own(&second), Some(60.0));
        let whole = floor.result();
        assert_eq!(whole.samples, 60, "every block of both rows");
        // Without a floor lane, a row has no pipe_rtt of its own.
        let alone = run_latency("c", vec![lane(1_000)], budget, 1, None);
        assert_eq!(alone[0].pipe_rtt_p50_us, None);
    }
}
