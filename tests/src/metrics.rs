//! Owns: reading the node's Prometheus text exposition (`GET /metrics`) in tests — a small parser
//! and [`metric`], which sums the samples of one metric that carry the given labels.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text format, skipping comments and lines it cannot read.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = if let Some(open) = line.find('{') {
        let close = find_label_end(line, open)?;
        (
            &line[..open],
            parse_labels(&line[open + 1..close])?,
            &line[close + 1..],
        )
    } else {
        let sp = line.find(char::is_whitespace)?;
        (&line[..sp], BTreeMap::new(), &line[sp..])
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// Index of the `}` closing the label set opened at `open`, honouring quoted values.
fn find_label_end(line: &str, open: usize) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(open + i),
            _ => {}
        }
    }
    None
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        rest = rest[eq + 1..].trim_start();
        rest = rest.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.insert(key, value);
        rest = rest[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(out)
}

/// Sum of the samples named `name` whose labels include all of `labels`; `None` if no sample
/// matches (a metric that is absent is reported, not taken for zero).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for s in samples.iter().filter(|s| s.name == name) {
        if labels
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        {
            found = true;
            sum += s.value;
        }
    }
    found.then_some(sum)
}

/// Fetches `{base_url}/metrics` and returns [`value`] of `name` with `labels`.
/// Errors when the request fails or the status is not 200; `Ok(None)` when the metric is absent.
pub fn metric(base_url: &str, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<Option<f64>> {
    metric_with(base_url, None, name, labels)
}

/// Same, presenting `token` as the scrape credential.
pub fn metric_with(
    base_url: &str,
    token: Option<&str>,
    name: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<Option<f64>> {
    Ok(value(&scrape_with(base_url, token)?, name, labels))
}

/// All samples of `{base_url}/metrics`.
pub fn scrape(base_url: &str) -> anyhow::Result<Vec<Sample>> {
    scrape_with(base_url, None)
}

/// All samples of `{base_url}/metrics`, presenting `token` as the scrape credential.
pub fn scrape_with(base_url: &str, token: Option<&str>) -> anyhow::Result<Vec<Sample>> {
    let url = format!("{}/metrics", base_url.trim_end_matches('/'));
    let r = crate::http::get_with_bearer(&url, token)?;
    anyhow::ensure!(
        r.status == 200,
        "GET /metrics: status {}: {}",
        r.status,
        r.text()
    );
    Ok(parse(&r.text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP kaskade_rooms Rooms.
# TYPE kaskade_rooms gauge
kaskade_rooms 2
kaskade_dropped_datagrams_total{reason="garbage"} 7
kaskade_dropped_datagrams_total{reason="unknown_source",node="n{1}"} 5 1700000000000
kaskade_forward_latency_seconds_bucket{le="0.001"} 3
kaskade_forward_latency_seconds_bucket{le="+Inf"} 9
kaskade_forward_latency_seconds_sum 0.0123
weird{a="x\"y,z"} 1e3
"#;

    #[test]
    fn parses_plain_labelled_and_escaped_samples() {
        let s = parse(TEXT);
        assert_eq!(value(&s, "kaskade_rooms", &[]), Some(2.0));
        assert_eq!(
            value(&s, "kaskade_dropped_datagrams_total", &[]),
            Some(12.0)
        );
        assert_eq!(
            value(
                &s,
                "kaskade_dropped_datagrams_total",
                &[("reason", "garbage")]
            ),
            Some(7.0)
        );
        assert_eq!(
            value(&s, "kaskade_dropped_datagrams_total", &[("node", "n{1}")]),
            Some(5.0)
        );
        assert_eq!(
            value(&s, "kaskade_dropped_datagrams_total", &[("reason", "srtp")]),
            None
        );
        assert_eq!(
            value(
                &s,
                "kaskade_forward_latency_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(9.0)
        );
        assert_eq!(value(&s, "weird", &[("a", "x\"y,z")]), Some(1000.0));
        assert_eq!(value(&s, "kaskade_missing", &[]), None);
    }
}
