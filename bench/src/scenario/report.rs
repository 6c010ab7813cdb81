//! `scenario::report`: how a benchmark invocation is written down — the Markdown section
//! appended to `bench/RESULTS.md` (date, commit, machine, command, one table per scenario), the
//! JSON of every run, and the latency CDF of every scenario as an SVG (each server one line,
//! latency on a log axis).

use std::fmt::Write as _;
use std::path::Path;

use super::figures::{Comparison, RunFigures, ServerSummary};

/// Where and on what the benchmark ran.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunContext {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub command: String,
}

impl RunContext {
    /// Reads the date, the git commit (with `-dirty` when the work tree has changes) and the
    /// machine (CPU model, cores, kernel).
    pub fn here(command: String) -> Self {
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let date = run("date", &["-u", "+%Y-%m-%d %H:%M"]).unwrap_or_default();
        let mut commit = run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or("unknown".into());
        if run("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty())
        {
            commit.push_str("-dirty");
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = run("uname", &["-r"]).unwrap_or_default();
        Self {
            date,
            commit,
            machine: format!("{cpu}, {cores} cores, Linux {kernel}"),
            command,
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

fn thousands(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{:.1}k", v / 1000.0))
}

/// The Markdown table of one scenario: one row per server (medians of its runs), then the
/// ratio line.
pub fn scenario_table(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} | runs | egress pkt/s | server CPU (cores) | pkt per CPU-s | e2e p50 / p99 / p99.9 (ms) | loss | RSS (MB) | failed sessions | in-node fwd p50 / p99 (µs) |",
        c.scenario
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in &c.servers {
        let ms = |v: Option<f64>| opt(v.map(|us| us / 1000.0), 2);
        let ServerSummary {
            sfu,
            runs,
            egress_pps,
            server_cpu_cores,
            packets_per_cpu_s,
            p50_us,
            p99_us,
            p999_us,
            loss_ratio,
            rss_mb,
            failed_sessions,
            forward_latency_p50_us,
            forward_latency_p99_us,
        } = s;
        let fwd = if forward_latency_p50_us.is_some() {
            format!(
                "{} / {}",
                opt(*forward_latency_p50_us, 0),
                opt(*forward_latency_p99_us, 0)
            )
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| {sfu} | {runs} | {} | {} | {} | {} / {} / {} | {} | {} | {failed_sessions} | {fwd} |",
            thousands(*egress_pps),
            opt(*server_cpu_cores, 2),
            thousands(*packets_per_cpu_s),
            ms(*p50_us),
            ms(*p99_us),
            ms(*p999_us),
            loss_ratio.map_or("–".into(), |l| format!("{:.3} %", l * 100.0)),
            opt(*rss_mb, 0),
        );
    }
    for failed in &c.failed_runs {
        let _ = writeln!(out, "\nRun failed (not in the medians): {failed}");
    }
    let _ = writeln!(out, "\n`{}`", c.ratio_line());
    out
}

/// The section appended to `RESULTS.md` for one invocation.
pub fn results_section(ctx: &RunContext, comparisons: &[Comparison], files: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## kaskade-bench, {} (commit {})\n",
        ctx.date, ctx.commit
    );
    let _ = writeln!(out, "Machine: {}  ", ctx.machine);
    let _ = writeln!(out, "Command: `{}`\n", ctx.command);
    for c in comparisons {
        out.push_str(&scenario_table(c));
        out.push('\n');
    }
    if !files.is_empty() {
        let _ = writeln!(out, "Files: {}", files.join(", "));
    }
    out
}

/// Appends `section` to the Markdown file at `path`.
pub fn append(path: &Path, section: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(section.as_bytes())
}

/// The latency CDF of `runs` (one line per run, coloured by server) as an SVG document.
pub fn cdf_svg(scenario: &str, runs: &[RunFigures]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 40.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let points = runs.iter().flat_map(|r| r.cdf.iter().map(|p| p.0.max(1.0)));
    let (lo, hi) = points.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_exp, hi_exp) = if lo > hi {
        (1.0, 4.0)
    } else {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    };
    let x =
        |us: f64| LEFT + (us.max(1.0).log10() - lo_exp) / (hi_exp - lo_exp) * (W - LEFT - RIGHT);
    let y = |q: f64| TOP + (1.0 - q) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="14">{scenario}: end-to-end latency CDF (all packets of all subscriptions)</text>"#
    );
    for e in lo_exp as i32..=hi_exp as i32 {
        let us = 10f64.powi(e);
        let label = if us >= 1e6 {
            format!("{} s", us / 1e6)
        } else if us >= 1000.0 {
            format!("{} ms", us / 1000.0)
        } else {
            format!("{us} µs")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{label}</text>"##,
            x(us),
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{q}</text>"##,
            y(q),
            W - RIGHT,
            LEFT - 6.0,
            y(q) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale)</text>"#,
        (W + LEFT) / 2.0,
        H - 12.0
    );
    for (i, r) in runs.iter().enumerate() {
        let colour = if r.sfu == "kaskade" {
            "#1f77b4"
        } else {
            "#d62728"
        };
        let path: Vec<String> = r
            .cdf
            .iter()
            .map(|(us, q)| format!("{:.1},{:.1}", x(*us), y(*q)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{} run {}</text>"#,
            LEFT + 10.0,
            TOP + 16.0 + 14.0 * i as f64,
            r.sfu,
            r.round + 1
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_server_and_the_ratio_line() {
        let c = Comparison::of("fanout-5", &[]);
        let t = scenario_table(&c);
        assert!(t.starts_with("| fanout-5 | runs |"));
        assert!(t.contains("`ratio fanout-5 packets_per_cpu_s=nan p99_latency=nan`"));
        let ctx = RunContext {
            date: "2026-11-23 10:00".into(),
            commit: "abc".into(),
            machine: "m".into(),
            command: "kaskade-bench fanout-5".into(),
        };
        let s = results_section(&ctx, &[c], &["a.json".into()]);
        assert!(s.contains("## kaskade-bench, 2026-11-23 10:00 (commit abc)"));
        assert!(s.contains("Command: `kaskade-bench fanout-5`"));
        let svg = cdf_svg("fanout-5", &[]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
