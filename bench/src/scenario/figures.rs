//! `scenario::figures`: the figures of one run ([`RunFigures`], serialisable as the JSON the
//! benchmark writes) and of a scenario over all its runs ([`Comparison`]: per server the median
//! of its runs, and the Kaskade/Janus ratios with the exact machine-readable ratio line) — pure.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::runner::RunOptions;
use crate::loadgen::measure::StreamReport;

/// End-to-end latency quantiles, µs (`None` when nothing was received).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub samples: u64,
}

impl LatencySummary {
    pub fn of(s: &StreamReport) -> Self {
        let h = &s.latency;
        if h.is_empty() {
            return Self::default();
        }
        let q = |q: f64| Some(h.value_at_quantile(q) as f64);
        Self {
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: Some(h.max() as f64),
            samples: h.len(),
        }
    }
}

/// One kind of stream (audio or video) over all subscriptions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamFigures {
    pub received: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    pub jitter_mean_us: f64,
    pub latency: LatencySummary,
}

impl StreamFigures {
    pub fn of(s: &StreamReport) -> Self {
        Self {
            received: s.received,
            lost: s.lost,
            loss_ratio: s.loss_ratio(),
            jitter_mean_us: s.jitter_mean_us(),
            latency: LatencySummary::of(s),
        }
    }
}

/// What only Kaskade reports about itself (`/metrics`), summed over its nodes.
#[derive(Clone, Debug, Serialize)]
pub struct ServerFigures {
    pub egress_pps: f64,
    pub ingress_pps: f64,
    /// In-node forwarding latency (datagram in → out), from the histogram buckets.
    pub forward_latency_p50_us: Option<f64>,
    pub forward_latency_p99_us: Option<f64>,
}

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunFigures {
    pub sfu: String,
    pub scenario: String,
    pub round: usize,
    pub options: RunOptions,
    pub publishers: usize,
    pub subscriptions: usize,
    /// Subscriptions connected when the window closed, and those that never connected.
    pub connected: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    /// Subscriptions that ended on their own after connecting.
    pub ended_by_stack: usize,
    pub ramp_s: f64,
    pub window_s: f64,
    /// Datagrams the subscriptions received per second in the window.
    pub egress_pps: f64,
    /// CPU-seconds of the server processes in the window, and as cores busy.
    pub server_cpu_s: f64,
    pub server_cpu_cores: f64,
    /// `egress_pps × window / server_cpu_s`.
    pub packets_per_cpu_s: f64,
    pub server_rss_bytes: u64,
    pub server_peak_rss_bytes: u64,
    pub loadgen_cpu_s: f64,
    /// Kernel UDP drops in the namespace during the window.
    pub kernel_rcvbuf_drops: u64,
    pub kernel_sndbuf_drops: u64,
    /// All streams together.
    pub latency: LatencySummary,
    pub audio: StreamFigures,
    pub video: StreamFigures,
    pub kaskade: Option<ServerFigures>,
    /// `(latency µs, fraction of packets at or below)`, for the CDF plot.
    #[serde(skip)]
    pub cdf: Vec<(f64, f64)>,
    pub load_average_1m: Option<f64>,
}

impl RunFigures {
    /// Lost / expected over all streams.
    pub fn loss_ratio(&self) -> f64 {
        let lost = self.audio.lost + self.video.lost;
        let expected = lost + self.audio.received + self.video.received;
        if expected == 0 {
            0.0
        } else {
            lost as f64 / expected as f64
        }
    }
}

/// Points of the CDF of `h`: quantiles from 0 to 1, denser in the tail.
pub fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
    qs.extend((1..10).map(|i| 0.99 + i as f64 / 1000.0));
    qs.extend((1..10).map(|i| 0.999 + i as f64 / 10_000.0));
    qs.push(1.0);
    qs.into_iter()
        .map(|q| (h.value_at_quantile(q) as f64, q))
        .collect()
}

/// Median of `values` (`None` when empty).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// One server's figures over its runs of a scenario: medians.
#[derive(Clone, Debug, Serialize)]
pub struct ServerSummary {
    pub sfu: String,
    pub runs: usize,
    pub egress_pps: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub packets_per_cpu_s: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub loss_ratio: Option<f64>,
    pub rss_mb: Option<f64>,
    pub failed_sessions: usize,
    pub forward_latency_p50_us: Option<f64>,
    pub forward_latency_p99_us: Option<f64>,
}

impl ServerSummary {
    /// Medians over `runs` (all of one server).
    pub fn of(sfu: &str, runs: &[&RunFigures]) -> Self {
        let m = |f: &dyn Fn(&RunFigures) -> Option<f64>| {
            median(runs.iter().filter_map(|r| f(r)).collect())
        };
        Self {
            sfu: sfu.to_owned(),
            runs: runs.len(),
            egress_pps: m(&|r| Some(r.egress_pps)),
            server_cpu_cores: m(&|r| Some(r.server_cpu_cores)),
            packets_per_cpu_s: m(&|r| Some(r.packets_per_cpu_s)),
            p50_us: m(&|r| r.latency.p50_us),
            p99_us: m(&|r| r.latency.p99_us),
            p999_us: m(&|r| r.latency.p999_us),
            loss_ratio: m(&|r| Some(r.loss_ratio())),
            rss_mb: m(&|r| Some(r.server_rss_bytes as f64 / 1_048_576.0)),
            failed_sessions: runs.iter().map(|r| r.failed + r.ended_by_stack).sum(),
            forward_latency_p50_us: m(&|r| r.kaskade.as_ref()?.forward_latency_p50_us),
            forward_latency_p99_us: m(&|r| r.kaskade.as_ref()?.forward_latency_p99_us),
        }
    }
}

/// A scenario's servers side by side.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub servers: Vec<ServerSummary>,
    /// Kaskade/Janus, when both ran.
    pub packets_per_cpu_s_ratio: Option<f64>,
    pub p99_latency_ratio: Option<f64>,
    /// Runs that ended in an error (`<server> #<round>: <error>`), left out of the medians.
    pub failed_runs: Vec<String>,
}

impl Comparison {
    pub fn of(scenario: &str, runs: &[RunFigures]) -> Self {
        let mut names: Vec<&str> = runs.iter().map(|r| r.sfu.as_str()).collect();
        names.sort();
        names.dedup();
        let servers: Vec<ServerSummary> = names
            .iter()
            .map(|n| {
                let mine: Vec<&RunFigures> = runs.iter().filter(|r| r.sfu == *n).collect();
                ServerSummary::of(n, &mine)
            })
            .collect();
        let find = |n: &str| servers.iter().find(|s| s.sfu == n);
        let ratio = |f: fn(&ServerSummary) -> Option<f64>| {
            let (k, j) = (f(find("kaskade")?)?, f(find("janus")?)?);
            (j > 0.0).then_some(k / j)
        };
        Self {
            scenario: scenario.to_owned(),
            packets_per_cpu_s_ratio: ratio(|s| s.packets_per_cpu_s),
            p99_latency_ratio: ratio(|s| s.p99_us),
            servers,
            failed_runs: Vec::new(),
        }
    }

    /// `ratio <scenario> packets_per_cpu_s=<k/j> p99_latency=<k/j>` (`nan` where a side is
    /// missing).
    pub fn ratio_line(&self) -> String {
        let f = |v: Option<f64>| v.map_or("nan".to_owned(), |v| format!("{v:.3}"));
        format!(
            "ratio {} packets_per_cpu_s={} p99_latency={}",
            self.scenario,
            f(self.packets_per_cpu_s_ratio),
            f(self.p99_latency_ratio)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::measure::latency_histogram;

    fn run(sfu: &str, pps_per_cpu: f64, p99: f64) -> RunFigures {
        RunFigures {
            sfu: sfu.into(),
            scenario: "fanout-5".into(),
            round: 0,
            options: RunOptions {
                duration_s: 1.0,
                warmup_s: 0.0,
                ramp_rate: 1.0,
                concurrency: 1,
                loops: 1,
                bind_ip: [127, 0, 0, 1].into(),
                progress: false,
            },
            publishers: 1,
            subscriptions: 5,
            connected: 5,
            failed: 0,
            first_failure: None,
            ended_by_stack: 0,
            ramp_s: 0.1,
            window_s: 1.0,
            egress_pps: 100.0,
            server_cpu_s: 0.1,
            server_cpu_cores: 0.1,
            packets_per_cpu_s: pps_per_cpu,
            server_rss_bytes: 1 << 20,
            server_peak_rss_bytes: 1 << 20,
            loadgen_cpu_s: 0.0,
            kernel_rcvbuf_drops: 0,
            kernel_sndbuf_drops: 0,
            latency: LatencySummary {
                p99_us: Some(p99),
                ..Default::default()
            },
            audio: StreamFigures::default(),
            video: StreamFigures {
                received: 90,
                lost: 10,
                ..Default::default()
            },
            kaskade: None,
            cdf: Vec::new(),
            load_average_1m: None,
        }
    }

    #[test]
    fn ratio_line_uses_medians_of_each_server() {
        let runs = vec![
            run("kaskade", 300.0, 100.0),
            run("janus", 100.0, 400.0),
            run("kaskade", 500.0, 300.0),
            run("janus", 100.0, 400.0),
            run("kaskade", 200.0, 200.0),
        ];
        let c = Comparison::of("fanout-5", &runs);
        assert_eq!(
            c.ratio_line(),
            "ratio fanout-5 packets_per_cpu_s=3.000 p99_latency=0.500"
        );
        assert_eq!(c.servers.len(), 2);
        assert!((runs[0].loss_ratio() - 0.1).abs() < 1e-9);
        let alone = Comparison::of("cascade-2", &runs[..1]);
        assert_eq!(
            alone.ratio_line(),
            "ratio cascade-2 packets_per_cpu_s=nan p99_latency=nan"
        );
    }

    #[test]
    fn cdf_is_monotonic_and_ends_at_one() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let points = cdf_points(&h);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
        );
        assert_eq!(points.last().unwrap().1, 1.0);
        assert!(cdf_points(&latency_histogram()).is_empty());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
