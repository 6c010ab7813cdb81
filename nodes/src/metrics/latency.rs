//! In-node forwarding latency: the Prometheus histogram operators scrape, plus the same buckets
//! as plain atomic counters so the node can compute its own recent median and 99th percentile
//! for the registry (and the operator page) without parsing its own exposition. Observing costs
//! one bucket search and two relaxed atomic adds.

use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency buckets from 1 µs to 1 s, dense where the in-node targets are (30 µs / 200 µs) and
/// wide enough for a node queueing behind a large fan-out.
pub const LATENCY_BUCKETS: [f64; 20] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2,
    1e-1, 2e-1, 5e-1, 1.0,
];

/// Counts per bucket, the last one for everything above the largest bound.
const SLOTS: usize = LATENCY_BUCKETS.len() + 1;

/// Arrival of a packet at the socket to its send to one subscriber, in seconds.
pub struct ForwardLatency {
    pub histogram: Histogram,
    counts: [AtomicU64; SLOTS],
}

/// Bucket counts at one moment; the difference of two is the latency of the period between.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyCounts([u64; SLOTS]);

/// Median and 99th percentile of a period, in microseconds (each the upper bound of the bucket
/// the quantile falls in; the largest bound for the overflow bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyQuantiles {
    pub p50_us: u64,
    pub p99_us: u64,
}

impl ForwardLatency {
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new(LATENCY_BUCKETS),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub fn observe(&self, seconds: f64) {
        self.histogram.observe(seconds);
        let slot = LATENCY_BUCKETS.partition_point(|bound| *bound < seconds);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> LatencyCounts {
        LatencyCounts(std::array::from_fn(|i| {
            self.counts[i].load(Ordering::Relaxed)
        }))
    }
}

impl Default for ForwardLatency {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyCounts {
    /// The quantiles of what was observed between `earlier` and `self`; zeros when nothing was.
    pub fn quantiles_since(&self, earlier: &LatencyCounts) -> LatencyQuantiles {
        let delta: [u64; SLOTS] = std::array::from_fn(|i| self.0[i].saturating_sub(earlier.0[i]));
        let total: u64 = delta.iter().sum();
        if total == 0 {
            return LatencyQuantiles::default();
        }
        let at = |q: f64| -> u64 {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (slot, n) in delta.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    let bound = LATENCY_BUCKETS[slot.min(LATENCY_BUCKETS.len() - 1)];
                    return (bound * 1e6).round() as u64;
                }
            }
            (LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 1e6) as u64
        };
        LatencyQuantiles {
            p50_us: at(0.50),
            p99_us: at(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_cover_only_the_period_between_two_readings() {
        let latency = ForwardLatency::new();
        for _ in 0..1000 {
            latency.observe(800e-6); // bucket ≤ 1 ms
        }
        let before = latency.counts();
        for _ in 0..98 {
            latency.observe(25e-6); // bucket ≤ 30 µs
        }
        latency.observe(150e-6); // ≤ 200 µs
        latency.observe(4e-3); // ≤ 5 ms
        let q = latency.counts().quantiles_since(&before);
        assert_eq!(q.p50_us, 30);
        assert_eq!(q.p99_us, 200);
    }

    #[test]
    fn an_idle_period_has_no_latency_and_overflow_is_capped() {
        let latency = ForwardLatency::new();
        let a = latency.counts();
        assert_eq!(
            latency.counts().quantiles_since(&a),
            LatencyQuantiles::default()
        );
        latency.observe(3.0);
        let q = latency.counts().quantiles_since(&a);
        assert_eq!((q.p50_us, q.p99_us), (1_000_000, 1_000_000));
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket() {
        let latency = ForwardLatency::new();
        let a = latency.counts();
        latency.observe(5e-5);
        assert_eq!(latency.counts().quantiles_since(&a).p50_us, 50);
    }
}
