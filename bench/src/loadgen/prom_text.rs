//! `loadgen::prom_text`: reading an SFU's Prometheus text exposition — pure.
//!
//! Owns [`PromText`]: the samples of one scrape, summed by name and labels ([`PromText::sum`]),
//! a histogram's cumulative buckets ([`PromText::buckets`]), and [`bucket_quantile`], a
//! quantile of the difference of two scrapes of one histogram (what happened between them),
//! interpolated linearly inside the bucket it falls in, as Prometheus's `histogram_quantile`.

/// One sample line: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape.
#[derive(Debug, Clone, Default)]
pub struct PromText {
    samples: Vec<Sample>,
}

impl PromText {
    /// Parses the text format; comment and malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples.push((name.trim().to_owned(), labels, value));
        }
        Self { samples }
    }

    /// Sum of the samples of `name` (or `name_total`) whose labels include all of `labels`;
    /// `None` when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let total = format!("{name}_total");
        let mut found = None;
        for (n, l, v) in &self.samples {
            if (n == name || *n == total) && has_labels(l, labels) {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// The cumulative buckets `(le, count)` of histogram `name`, ascending, `+Inf` last.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|(n, _, _)| *n == bucket)
            .filter_map(|(_, l, v)| {
                let le = l.iter().find(|(k, _)| k == "le")?.1.as_str();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

fn has_labels(have: &[(String, String)], want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

/// The `q` quantile of the observations between two scrapes of one histogram (`before` may be
/// empty), interpolated inside its bucket; `None` without observations. A quantile in the `+Inf`
/// bucket is reported as the highest finite bound.
pub fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let count_before = |le: f64| {
        before
            .iter()
            .find(|(b, _)| *b == le)
            .map_or(0.0, |(_, c)| *c)
    };
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| (*le, (c - count_before(*le)).max(0.0)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (le, cumulative) in &delta {
        if *cumulative >= rank && *cumulative > below {
            if le.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (le - lower) * (rank - below) / (cumulative - below));
        }
        if le.is_finite() {
            lower = *le;
        }
        below = *cumulative;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# HELP kaskade_packets_out Packets sent\n\
        # TYPE kaskade_packets_out counter\n\
        kaskade_packets_out_total 1500\n\
        kaskade_dropped_datagrams_total{reason=\"garbage\"} 2\n\
        kaskade_dropped_datagrams_total{reason=\"send_failed\"} 3\n\
        kaskade_forward_latency_seconds_bucket{le=\"0.00001\"} 10\n\
        kaskade_forward_latency_seconds_bucket{le=\"0.0001\"} 90\n\
        kaskade_forward_latency_seconds_bucket{le=\"+Inf\"} 100\n\
        garbage line\n";

    #[test]
    fn sums_samples_by_name_and_labels() {
        let p = PromText::parse(SCRAPE);
        assert_eq!(p.sum("kaskade_packets_out", &[]), Some(1500.0));
        assert_eq!(p.sum("kaskade_dropped_datagrams", &[]), Some(5.0));
        assert_eq!(
            p.sum("kaskade_dropped_datagrams", &[("reason", "garbage")]),
            Some(2.0)
        );
        assert_eq!(p.sum("kaskade_nothing", &[]), None);
    }

    #[test]
    fn quantiles_of_the_observations_between_two_scrapes() {
        let after = PromText::parse(SCRAPE).buckets("kaskade_forward_latency_seconds");
        assert_eq!(after.len(), 3);
        // 10 at ≤ 10 µs, 80 in (10 µs, 100 µs], 10 above.
        let p50 = bucket_quantile(&[], &after, 0.5).unwrap();
        assert!((p50 - 55e-6).abs() < 1e-9, "{p50}");
        assert_eq!(bucket_quantile(&[], &after, 0.99), Some(0.0001));
        let before = vec![(0.00001, 10.0), (0.0001, 10.0), (f64::INFINITY, 20.0)];
        // Between the scrapes: 80 observations, all in (10 µs, 100 µs].
        let p10 = bucket_quantile(&before, &after, 0.1).unwrap();
        assert!((p10 - 19e-6).abs() < 1e-9, "{p10}");
        assert_eq!(bucket_quantile(&after, &after, 0.5), None);
    }
}
