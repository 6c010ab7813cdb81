//! `failover`: how long media stops when part of an etcd mesh fails — from the failure to the
//! first frame decoded again — over repeated runs of real node processes, a real etcd and real
//! clients. Each run builds its mesh from scratch (the scenarios are those of the end-to-end
//! tests, from `kaskade_tests::failover_relay` and `kaskade_tests::failover_browser`):
//!
//! - `relay`: two sites, four nodes; aiortc WHEP subscribers on n4 fed through site b's relay
//!   node n3; n3 killed with SIGKILL. Measure: kill → first video frame the subscriber decodes
//!   again (each subscriber reports when its stall ended on CLOCK_MONOTONIC, the clock this
//!   process reads at the kill); the run's figure is its slowest subscriber.
//! - `node`: two headless-Chromium pages on two nodes; page B's node killed with SIGKILL; the
//!   page reconnects to the other node, resumes and republishes. Measure: kill → page B's first
//!   frame again (failover.mjs samples the frame counters every 20 ms).
//! - `site`: page A on site a, page B on site b (two nodes); both nodes of site b killed; page B
//!   moves to site a. Measure as for `node`.
//! - `drain`: both pages on a node drained with `kaskade drain`. Measure: the longer of the two
//!   pages' longest stall (a drain should cost no more than a keyframe).
//!
//! Output: one line per run on stderr, then a markdown table (runs, failures, p50, max, every
//! value) and one JSON line on stdout. A run that fails is counted and reported, not hidden.
//! Only loopback addresses (the relay scenario, 127.0.0.50–54) and network namespaces made for
//! the run (the browser scenarios) are used.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use kaskade_tests::failover_browser::{
    BrowserKit, page_node_killed, page_site_killed, pages_drained,
};
use kaskade_tests::failover_relay::{TwoSiteAddrs, relay_node_killed};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Relay,
    Node,
    Site,
    Drain,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Relay => "relay",
            Kind::Node => "node",
            Kind::Site => "site",
            Kind::Drain => "drain",
        }
    }

    fn measure(self) -> &'static str {
        match self {
            Kind::Relay => "kill of the site's relay node → aiortc subscriber decodes again",
            Kind::Node => "kill of the page's node → page decodes again",
            Kind::Site => "kill of the page's whole site → page decodes again",
            Kind::Drain => "drain of the pages' node → longest stall of either page",
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "Failover time of an etcd mesh (failure → first frame again), repeated runs")]
struct Args {
    /// Path of the node binary.
    #[arg(long, default_value = "target/release/kaskade")]
    kaskade: PathBuf,
    /// Runs per kind.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Failure kinds to measure.
    #[arg(long, value_delimiter = ',', default_value = "relay,node,site")]
    kinds: Vec<Kind>,
    /// aiortc subscribers behind the killed relay node (`relay`).
    #[arg(long, default_value_t = 2)]
    subscribers: usize,
}

/// One run: its figure (ms) or why it failed.
type RunOutcome = Result<f64, String>;

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.kaskade.is_file() {
        eprintln!(
            "failover: no node binary at {} (build it: cargo build --release -p kaskade-node)",
            args.kaskade.display()
        );
        return ExitCode::FAILURE;
    }
    let needs_browser = args.kinds.iter().any(|k| *k != Kind::Relay);
    let kit = if needs_browser {
        match BrowserKit::prepare() {
            Some(kit) => Some(kit),
            None => {
                eprintln!("failover: KASKADE_SKIP_BROWSER=1 but browser kinds were asked for");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let mut report = Vec::new();
    for kind in &args.kinds {
        let mut outcomes = Vec::new();
        for i in 0..args.runs {
            let outcome = run_once(*kind, &args, kit.as_ref(), i);
            match &outcome {
                Ok(ms) => eprintln!("failover {} run {}: {ms:.0} ms", kind.name(), i + 1),
                Err(e) => eprintln!("failover {} run {}: FAILED: {e}", kind.name(), i + 1),
            }
            outcomes.push(outcome);
        }
        report.push((*kind, outcomes));
    }
    print_report(&args, &report);
    let all_failed = report
        .iter()
        .any(|(_, o)| !o.is_empty() && o.iter().all(Result::is_err));
    if all_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One run of `kind`; panics in the harness (it asserts as it goes) become a failed run.
fn run_once(kind: Kind, args: &Args, kit: Option<&BrowserKit>, i: usize) -> RunOutcome {
    let tag = format!("bench-failover-{}-{i}", kind.name());
    let bin = args.kaskade.as_path();
    let run = || -> anyhow::Result<f64> {
        match kind {
            Kind::Relay => {
                let addrs = TwoSiteAddrs::from_prefix("127.0.0.5");
                let outcome = relay_node_killed(bin, &addrs, args.subscribers)?;
                anyhow::ensure!(
                    outcome.rerouted_to_origin,
                    "n4 did not re-route to the origin"
                );
                Ok(outcome.kill_to_frame_ms.iter().copied().fold(0.0, f64::max))
            }
            Kind::Node | Kind::Site => {
                let kit = kit.expect("browser kit prepared for browser kinds");
                let result = if kind == Kind::Node {
                    page_node_killed(kit, bin, &tag)?
                } else {
                    page_site_killed(kit, bin, &tag)?
                };
                page_b_recovery(&result)
            }
            Kind::Drain => {
                let kit = kit.expect("browser kit prepared for browser kinds");
                let (result, exit) = pages_drained(kit, bin, &tag)?;
                anyhow::ensure!(result["ok"] == true, "pages did not come through: {result}");
                anyhow::ensure!(exit.success(), "the drained node exited with {exit}");
                let gap = |p: &str| result[p]["gap_ms"].as_f64().unwrap_or(f64::NAN);
                Ok(gap("a").max(gap("b")))
            }
        }
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(ms)) if ms.is_finite() => Ok(ms),
        Ok(Ok(ms)) => Err(format!("no figure ({ms})")),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into())),
    }
}

/// Page B's kill → first frame again, from failover.mjs's result, if it came through.
fn page_b_recovery(result: &Value) -> anyhow::Result<f64> {
    anyhow::ensure!(result["ok"] == true, "pages did not come through: {result}");
    let b = &result["b"];
    anyhow::ensure!(b["same_participant"] == true, "page B did not resume: {b}");
    b["recovery_ms"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("page B has no recovery time: {b}"))
}

/// The nearest-rank percentile `p` (0–100) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_report(args: &Args, report: &[(Kind, Vec<RunOutcome>)]) {
    println!();
    println!("| kind | measure | runs | failed | p50 ms | max ms | every run (ms) |");
    println!("|---|---|---|---|---|---|---|");
    let mut json_kinds = serde_json::Map::new();
    for (kind, outcomes) in report {
        let mut ok: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .copied()
            .collect();
        let failed = outcomes.len() - ok.len();
        let every = ok
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        ok.sort_by(f64::total_cmp);
        let (p50, max) = (percentile(&ok, 50.0), percentile(&ok, 100.0));
        println!(
            "| {} | {} | {} | {failed} | {p50:.0} | {max:.0} | {every} |",
            kind.name(),
            kind.measure(),
            outcomes.len()
        );
        let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        json_kinds.insert(
            kind.name().into(),
            json!({"runs": outcomes.len(), "failed": failed, "p50_ms": p50, "max_ms": max,
                   "values_ms": ok, "errors": errors}),
        );
    }
    println!(
        "{}",
        json!({"bench": "failover", "runs_per_kind": args.runs, "subscribers": args.subscribers,
               "kinds": json_kinds})
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&v, 100.0), 10.0);
        assert_eq!(percentile(&v[..1], 50.0), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
