//! `kaskade-bench`: runs the benchmark scenarios against Kaskade and Janus on this machine, in
//! the same invocation, alternating, and reports them side by side.
//!
//! `kaskade-bench fanout-500 --against kaskade,janus` starts the servers one after the other in a
//! network namespace of its own (both on its veth address, the load generator too), runs the
//! scenario `--rounds` times per server (alternating which goes first), prints one table per
//! scenario with the medians and the Kaskade/Janus ratios, writes the runs as JSON and a latency
//! CDF (SVG) to `--out`, appends the tables to `bench/RESULTS.md`, and ends with the line
//! `ratio <scenario> packets_per_cpu_s=<k/j> p99_latency=<k/j>` per scenario.
//!
//! The Kaskade node is this binary itself: `kaskade-bench node …` (and `certs …`) run the node's
//! own command line, so `cargo run -p kaskade-bench` needs nothing else built.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kaskade_bench::scenario::report::{self, RunContext};
use kaskade_bench::scenario::target::own_exe;
use kaskade_bench::scenario::{
    Comparison, Placement, RunFigures, RunOptions, Scenario, SfuKind, SfuUnderTest, run,
};
use kaskade_tests::NetNs;
use kaskade_tests::netns::in_named_netns;

#[derive(Parser, Debug)]
#[command(
    name = "kaskade-bench",
    about = "Benchmark scenarios against Kaskade and Janus, side by side"
)]
struct Args {
    /// Scenarios: fanout-N (N = 100, 500, 1000 are the reference runs), meeting-N (10, 25),
    /// classroom (1000 students; classroom-N for fewer), classroom-2sites (2000 students over two
    /// sites; classroom-2sites-N), cascade-2.
    #[arg(required = true)]
    scenarios: Vec<Scenario>,
    /// Servers to run each scenario against, comma-separated: kaskade, janus.
    #[arg(long, default_value = "kaskade,janus", value_delimiter = ',')]
    against: Vec<String>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of traffic after the last subscription connected, before measuring.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Runs per server and scenario (alternating which server goes first).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Subscriptions started per second.
    #[arg(long, default_value_t = 50.0)]
    ramp_rate: f64,
    /// Negotiations in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Load-generator event loops (threads) for the subscriptions.
    #[arg(long, default_value_t = 1)]
    loops: usize,
    /// Janus's shared event-loop threads (fair against Kaskade: the machine's cores).
    #[arg(long)]
    janus_event_loops: Option<u32>,
    /// Folder for the JSON of the runs and the latency CDF plots.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Markdown file the tables are appended to.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"))]
    results: PathBuf,
    /// Do not append to the results file.
    #[arg(long)]
    no_append: bool,
    /// Run on 127.0.0.1 without a network namespace (Kaskade only).
    #[arg(long)]
    no_netns: bool,
    /// Copy the Kaskade nodes' logs here after each run.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    // `kaskade-bench node …` / `certs …`: this binary is the node the benchmark starts.
    if matches!(std::env::args().nth(1).as_deref(), Some("node" | "certs")) {
        return match kaskade_node::run_cli() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kaskade: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    match main_with(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaskade-bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_with(args: Args) -> anyhow::Result<()> {
    let mut kinds = Vec::new();
    for name in &args.against {
        let kind = SfuKind::parse(name.trim())
            .with_context(|| format!("--against: unknown server {name:?} (kaskade, janus)"))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    anyhow::ensure!(!kinds.is_empty(), "--against names no server");
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0 && args.ramp_rate > 0.0 && args.rounds > 0,
        "--duration, --ramp-rate and --rounds must be positive"
    );
    let ns = if args.no_netns {
        None
    } else {
        match NetNs::check_tooling() {
            Ok(()) => Some(NetNs::create()?),
            Err(e) if !kinds.contains(&SfuKind::Janus) => {
                eprintln!("no network namespace ({e}): running on 127.0.0.1");
                None
            }
            Err(e) => anyhow::bail!(
                "Janus runs in a network namespace, which cannot be made here: {e} \
                 (run as root, or use --against kaskade)"
            ),
        }
    };
    anyhow::ensure!(
        ns.is_some() || !kinds.contains(&SfuKind::Janus),
        "Janus needs a network namespace: drop --no-netns or use --against kaskade"
    );
    let work = || -> anyhow::Result<()> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(async {
                // On Ctrl-C or SIGTERM the run is dropped, which stops the servers; the namespace
                // goes when `ns` drops after this returns.
                tokio::select! {
                    result = bench(&args, &kinds, ns.as_ref()) => result,
                    signal = interrupted() => anyhow::bail!("interrupted by {signal}"),
                }
            })
    };
    match &ns {
        Some(ns) => in_named_netns(&ns.name, work),
        None => work(),
    }
}

async fn bench(args: &Args, kinds: &[SfuKind], ns: Option<&NetNs>) -> anyhow::Result<()> {
    let ip = match ns {
        Some(ns) => ns.ns_ip.parse()?,
        None => std::net::IpAddr::from([127, 0, 0, 1]),
    };
    let at = Placement { ip, ns };
    let exe = own_exe()?;
    let opts = RunOptions {
        duration_s: args.duration,
        warmup_s: args.warmup,
        ramp_rate: args.ramp_rate,
        concurrency: args.concurrency,
        loops: args.loops,
        bind_ip: ip,
        progress: !args.quiet,
    };
    let janus_loops = args
        .janus_event_loops
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let ctx = RunContext::here(format!(
        "cargo run --release -p kaskade-bench -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    ));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut comparisons = Vec::new();
    let mut files = Vec::new();
    for &scenario in &args.scenarios {
        eprintln!("{scenario}: {}", scenario.describe());
        let mine: Vec<SfuKind> = kinds
            .iter()
            .copied()
            .filter(|k| *k == SfuKind::Kaskade || scenario.janus_can_run())
            .collect();
        if mine.len() < kinds.len() {
            eprintln!("{scenario}: Janus cannot run it (no cascade), Kaskade only");
        }
        let mut runs: Vec<RunFigures> = Vec::new();
        let mut failed_runs: Vec<String> = Vec::new();
        for round in 0..args.rounds {
            let mut order = mine.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                let mut sfu = match kind {
                    SfuKind::Kaskade => {
                        SfuUnderTest::start_kaskade(&exe, &at, scenario.sites()).await?
                    }
                    SfuKind::Janus => SfuUnderTest::start_janus(&at, janus_loops).await?,
                };
                let result = run(scenario, &mut sfu, &opts, round).await;
                if let Some(dir) = &args.keep_logs {
                    sfu.keep_logs(&dir.join(format!("{scenario}-{}-{round}", kind.name())))?;
                }
                let figures = match result {
                    Ok(f) => f,
                    Err(e) => {
                        // A server that crashes or refuses is a result too: record it and go
                        // on with the other runs rather than lose the whole invocation.
                        let first_line = format!("{e:#}").lines().next().unwrap_or("").to_owned();
                        eprintln!(
                            "{scenario} {} #{} failed: {e:#}\n{}",
                            kind.name(),
                            round + 1,
                            sfu.diagnostics()
                        );
                        failed_runs.push(format!("{} #{}: {first_line}", kind.name(), round + 1));
                        continue;
                    }
                };
                eprintln!(
                    "{scenario} {} #{}: {}/{} connected, {:.0} pkt/s, {:.2} cores, {:.0} pkt/CPU-s, \
                     p99 {:.2} ms, loss {:.3} %",
                    kind.name(),
                    round + 1,
                    figures.connected,
                    figures.subscriptions,
                    figures.egress_pps,
                    figures.server_cpu_cores,
                    figures.packets_per_cpu_s,
                    figures.latency.p99_us.unwrap_or(f64::NAN) / 1000.0,
                    figures.loss_ratio() * 100.0
                );
                runs.push(figures);
            }
        }
        let mut comparison = Comparison::of(&scenario.to_string(), &runs);
        comparison.failed_runs = failed_runs;
        let json_path = args.out.join(format!("{scenario}.json"));
        let json = serde_json::json!({
            "context": ctx,
            "comparison": comparison,
            "runs": runs,
        });
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", json_path.display()))?;
        let svg_path = args.out.join(format!("{scenario}-latency-cdf.svg"));
        std::fs::write(&svg_path, report::cdf_svg(&scenario.to_string(), &runs))
            .with_context(|| format!("writing {}", svg_path.display()))?;
        for p in [&json_path, &svg_path] {
            files.push(display_path(p));
        }
        println!("\n{}", report::scenario_table(&comparison));
        comparisons.push(comparison);
    }
    if !args.no_append {
        report::append(
            &args.results,
            &report::results_section(&ctx, &comparisons, &files),
        )
        .with_context(|| format!("appending to {}", args.results.display()))?;
        eprintln!("appended to {}", args.results.display());
    }
    for c in &comparisons {
        println!("{}", c.ratio_line());
    }
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// `path` relative to the repository root when it is inside it.
fn display_path(path: &std::path::Path) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    abs.strip_prefix(&root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}
