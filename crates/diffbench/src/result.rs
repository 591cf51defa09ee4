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
    /// `hostile_p99`: the sidecar's peak resident set under the lane's attack, KiB, and
    /// what it may be (64 MiB plus the configured limits' worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_budget_kib: Option<u64>,
    /// `hostile_p99`: the sidecar's peak fd count under the attack, and its fd limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_fds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_cap: Option<u64>,
    /// `hostile_p99`: the sidecar's CPU over a second of idleness after the attack (% of
    /// one CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_cpu_pct: Option<f64>,
    /// `hostile_p99`: whether a new session of the bystander's VM attached during the attack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bystander_attached: Option<bool>,
    /// `hostile_p99`: lines the sidecar logged over the whole row (its `alone` lane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_lines: Option<u64>,
    /// `hostile_p99`: what the attack did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The three lanes, in table order.
pub const LANES: [&str; 3] = ["host", "guest-poll", "guest-push"];
