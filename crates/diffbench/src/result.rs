//! One measured row × lane, as the JSON file and the table carry it. Key names are fixed:
//! other tools read them.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RowResult {
    pub row: String,
    pub lane: String,
    pub samples: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_endpoints: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gib_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeups_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u64>,
    /// Where wake-up counts came from (`proc_task_status` or `own_counters`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_event: Option<f64>,
    /// `scale_10k`: the p99 of the same paced stream over 10 sockets (its gate's yardstick).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_p99_us: Option<f64>,
    /// A latency row's lanes: the `pipe_rtt` p50 measured in this row's own rotation, the
    /// hop floor's per-hop figure for this row (`table.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipe_rtt_p50_us: Option<f64>,
}

/// The three lanes, in table order.
pub const LANES: [&str; 3] = ["host", "guest-poll", "guest-push"];
