//! `scenario::runner`: one run of one scenario against one server — [`run`] publishes, ramps the
//! subscriptions, warms up, measures a fixed window and closes everything, and returns
//! [`RunFigures`].
//!
//! The load generator's sessions live on its own event-loop threads (loop 0: publishers; loops
//! 1..: subscriptions). The window is set by send time on the media clock: every packet sent in
//! it counts, including those still on their way when it closes (the run waits [`DRAIN`]).
//! Egress packets are what the subscribers' sockets received in the window — the same count for
//! every server, whether or not it exports metrics — and CPU-seconds are the server processes'
//! user + system time over the window, from `/proc`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::figures::{LatencySummary, RunFigures, ServerFigures, StreamFigures};
use super::spec::{Plan, Scenario};
use super::target::SfuUnderTest;
use crate::loadgen::client_loop::{ClientLoops, LoopReport, SessionHandle};
use crate::loadgen::measure::{StreamReport, Window};
use crate::loadgen::proc_stats::{self, ProcSample};
use crate::loadgen::prom_text::{PromText, bucket_quantile};
use crate::loadgen::session::Role;
use crate::loadgen::synthetic::MediaClock;
use crate::loadgen::{LayerCap, SessionResource, SfuSignalling};

/// How long one session may take from its offer to `connected`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the published tracks may take to be listed on every site.
const TRACKS_TIMEOUT: Duration = Duration::from_secs(15);
/// After the window closes, how long packets sent in it may still take to arrive.
pub const DRAIN: Duration = Duration::from_millis(500);
/// The room every scenario runs in.
const ROOM: &str = "bench";

/// How to run.
#[derive(Clone, Debug, Serialize)]
pub struct RunOptions {
    /// Seconds measured.
    pub duration_s: f64,
    /// Seconds of traffic after the last subscription connected, before measuring.
    pub warmup_s: f64,
    /// Subscriptions started per second, and negotiations in flight at most.
    pub ramp_rate: f64,
    pub concurrency: usize,
    /// Event loops (threads) for the subscriptions.
    pub loops: usize,
    /// Address the load generator's sockets bind.
    #[serde(skip)]
    pub bind_ip: IpAddr,
    /// Draw progress bars (stderr).
    #[serde(skip)]
    pub progress: bool,
}

/// A session the run holds open.
struct Open {
    handle: SessionHandle,
    resource: SessionResource,
    site: usize,
}

/// Runs `scenario` against `sfu` once.
pub async fn run(
    scenario: Scenario,
    sfu: &mut SfuUnderTest,
    opts: &RunOptions,
    round: usize,
) -> anyhow::Result<RunFigures> {
    let plan = scenario.plan();
    let clock = MediaClock::new(Instant::now());
    let loops = Arc::new(ClientLoops::start(
        1 + opts.loops.max(1),
        opts.bind_ip,
        clock,
    )?);
    let label = format!("{scenario} {} #{}", sfu.kind.name(), round + 1);

    // Publishers, on loop 0.
    let mut publishers = Vec::new();
    for p in &plan.publishers {
        let mut handle = loops.open_on(0, Role::Publisher(p.spec.clone())).await?;
        let signalling = &sfu.sites[p.site];
        let resource = signalling
            .publish(ROOM, &mut handle)
            .await
            .with_context(|| format!("{label}: publish"))?;
        handle
            .wait_connected(CONNECT_TIMEOUT)
            .await
            .with_context(|| format!("{label}: publisher"))?;
        publishers.push(Open {
            handle,
            resource,
            site: p.site,
        });
    }
    let tracks: usize = (0..plan.publishers.len()).map(|p| plan.tracks_of(p)).sum();
    // Other sites learn of the room when a subscription asks for it there.
    let mut publishing_sites: Vec<usize> = plan.publishers.iter().map(|p| p.site).collect();
    publishing_sites.dedup();
    for site in publishing_sites {
        sfu.sites[site]
            .wait_tracks(ROOM, tracks, TRACKS_TIMEOUT)
            .await
            .with_context(|| format!("{label}: tracks listed"))?;
    }

    // Subscriptions, ramped.
    let ramp_start = Instant::now();
    let (subscriptions, failures) = ramp(&plan, sfu, &loops, &publishers, opts, &label).await;
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    anyhow::ensure!(
        !subscriptions.is_empty(),
        "{label}: no subscription connected ({})",
        failures.first().map(String::as_str).unwrap_or("no error")
    );

    wait(&format!("{label} warm-up"), opts.warmup_s, opts.progress).await;
    sfu.check_alive()?;
    let window_start = Instant::now();
    let window_end = window_start + Duration::from_secs_f64(opts.duration_s);
    loops.set_window(Window {
        start_ns: clock.ns(window_start),
        end_ns: clock.ns(window_end),
    })?;
    let before = Snapshot::take(sfu, &loops).await?;
    wait(
        &format!("{label} measuring"),
        opts.duration_s,
        opts.progress,
    )
    .await;
    let after = Snapshot::take(sfu, &loops).await?;
    tokio::time::sleep(DRAIN).await;
    let last = loops.reports().await?;
    sfu.check_alive()?;

    close_all(sfu, subscriptions, opts.concurrency).await;
    for p in publishers {
        let _ = sfu.sites[p.site].close(&p.resource).await;
        p.handle.close();
    }

    Ok(figures(
        scenario, &plan, sfu, opts, round, ramp_s, &failures, &before, &after, &last,
    ))
}

/// Starts every subscription of `plan` at `opts.ramp_rate`, at most `opts.concurrency`
/// negotiating at once; returns the connected ones and the errors of the others.
async fn ramp(
    plan: &Plan,
    sfu: &SfuUnderTest,
    loops: &Arc<ClientLoops>,
    publishers: &[Open],
    opts: &RunOptions,
    label: &str,
) -> (Vec<Open>, Vec<String>) {
    let bar = bar(
        opts.progress,
        plan.subscriptions.len() as u64,
        label,
        "ramp",
    );
    let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.ramp_rate));
    let mut tasks = tokio::task::JoinSet::new();
    let sub_loops = loops.len() - 1;
    for (i, s) in plan.subscriptions.iter().enumerate() {
        ticker.tick().await;
        let permit = Arc::clone(&limit)
            .acquire_owned()
            .await
            .expect("semaphore open");
        let signalling: Arc<dyn SfuSignalling> = Arc::clone(&sfu.sites[s.site]);
        // With one publisher the room's tracks are its tracks: no need to name it (a site that
        // has not seen the room yet learns it from the subscription).
        let publisher = (publishers.len() > 1)
            .then(|| publishers[s.publisher].resource.publisher.clone())
            .flatten();
        let (loops, site, layer, bar) = (Arc::clone(loops), s.site, s.layer, bar.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let result = subscribe(&loops, 1 + i % sub_loops, &*signalling, publisher, layer).await;
            bar.inc(1);
            result.map(|(handle, resource)| Open {
                handle,
                resource,
                site,
            })
        });
    }
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(s)) => ok.push(s),
            Ok(Err(e)) => failed.push(format!("{e:#}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    bar.finish_and_clear();
    (ok, failed)
}

/// One subscription on loop `index`: negotiated, connected, or closed again.
async fn subscribe(
    loops: &ClientLoops,
    index: usize,
    signalling: &dyn SfuSignalling,
    publisher: Option<String>,
    layer: Option<LayerCap>,
) -> anyhow::Result<(SessionHandle, SessionResource)> {
    let mut handle = loops.open_on(index, Role::Subscriber).await?;
    let resource = match signalling
        .subscribe(ROOM, publisher.as_deref(), layer, &mut handle)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            handle.close();
            return Err(anyhow!(e).context("subscribe"));
        }
    };
    if let Err(e) = handle.wait_connected(CONNECT_TIMEOUT).await {
        let _ = signalling.close(&resource).await;
        handle.close();
        return Err(anyhow!(e));
    }
    Ok((handle, resource))
}

async fn close_all(sfu: &SfuUnderTest, sessions: Vec<Open>, concurrency: usize) {
    let mut closing = tokio::task::JoinSet::new();
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    for s in sessions {
        let (signalling, limit) = (Arc::clone(&sfu.sites[s.site]), Arc::clone(&limit));
        closing.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let _ = signalling.close(&s.resource).await;
            s.handle.close();
        });
    }
    while closing.join_next().await.is_some() {}
}

fn bar(show: bool, len: u64, label: &str, phase: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(format!("{label} {phase}"));
    bar
}

/// Waits `secs`, with a progress bar.
async fn wait(label: &str, secs: f64, progress: bool) {
    let steps = (secs * 10.0).ceil().max(1.0) as u64;
    let bar = bar(progress, steps, label, "");
    let start = tokio::time::Instant::now();
    for i in 1..=steps {
        tokio::time::sleep_until(start + Duration::from_secs_f64(secs * i as f64 / steps as f64))
            .await;
        bar.set_position(i);
    }
    bar.finish_and_clear();
}

/// What is read when the window opens and when it closes.
struct Snapshot {
    at: Instant,
    server: ProcSample,
    me: ProcSample,
    udp: proc_stats::UdpCounters,
    metrics: Vec<PromText>,
    loops: Vec<LoopReport>,
}

impl Snapshot {
    async fn take(sfu: &mut SfuUnderTest, loops: &ClientLoops) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: sfu.sample()?,
            me: proc_stats::sample(std::process::id())?,
            udp: proc_stats::udp_counters()?,
            metrics: sfu.metrics().await?,
            loops: loops.reports().await?,
        })
    }
}

/// The subscription loops' figures merged (loop 0 is the publishers').
fn subscriber_loops(reports: &[LoopReport]) -> LoopReport {
    let mut all = LoopReport::default();
    for r in reports.iter().skip(1) {
        all.merge(r);
    }
    all
}

fn metric_delta(before: &[PromText], after: &[PromText], name: &str) -> f64 {
    let sum = |m: &[PromText]| m.iter().filter_map(|t| t.sum(name, &[])).sum::<f64>();
    sum(after) - sum(before)
}

#[allow(clippy::too_many_arguments)]
fn figures(
    scenario: Scenario,
    plan: &Plan,
    sfu: &SfuUnderTest,
    opts: &RunOptions,
    round: usize,
    ramp_s: f64,
    failures: &[String],
    before: &Snapshot,
    after: &Snapshot,
    last: &[LoopReport],
) -> RunFigures {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    let (sub_before, sub_after, sub_last) = (
        subscriber_loops(&before.loops),
        subscriber_loops(&after.loops),
        subscriber_loops(last),
    );
    let received = sub_after.datagrams.saturating_sub(sub_before.datagrams) as f64;
    let cpu = after
        .server
        .cpu
        .saturating_sub(before.server.cpu)
        .as_secs_f64();
    let (mut audio, mut video) = (StreamReport::default(), StreamReport::default());
    for (id, s) in &sub_last.measure.streams {
        if plan.is_audio_stream(*id) {
            audio.merge(s);
        } else {
            video.merge(s);
        }
    }
    let mut all = audio.clone();
    all.merge(&video);
    let udp = after.udp.since(&before.udp);
    let kaskade = (!after.metrics.is_empty()).then(|| {
        let merge = |m: &[PromText]| {
            let mut out: Vec<(f64, f64)> = Vec::new();
            for t in m {
                for (le, c) in t.buckets("kaskade_forward_latency_seconds") {
                    match out.iter_mut().find(|(l, _)| *l == le) {
                        Some(slot) => slot.1 += c,
                        None => out.push((le, c)),
                    }
                }
            }
            out
        };
        let (fb, fa) = (merge(&before.metrics), merge(&after.metrics));
        let us = |q| bucket_quantile(&fb, &fa, q).map(|s| s * 1e6);
        ServerFigures {
            egress_pps: metric_delta(&before.metrics, &after.metrics, "kaskade_packets_out") / secs,
            ingress_pps: metric_delta(&before.metrics, &after.metrics, "kaskade_packets_in") / secs,
            forward_latency_p50_us: us(0.5),
            forward_latency_p99_us: us(0.99),
        }
    });
    RunFigures {
        sfu: sfu.kind.name().to_owned(),
        scenario: scenario.to_string(),
        round,
        options: opts.clone(),
        publishers: plan.publishers.len(),
        subscriptions: plan.subscriptions.len(),
        connected: sub_after.connected,
        failed: failures.len(),
        first_failure: failures.first().cloned(),
        ended_by_stack: sub_last.failed,
        ramp_s,
        window_s: secs,
        egress_pps: received / secs,
        server_cpu_s: cpu,
        server_cpu_cores: cpu / secs,
        packets_per_cpu_s: received / cpu.max(1e-9),
        server_rss_bytes: after.server.rss_bytes,
        server_peak_rss_bytes: after.server.peak_rss_bytes,
        loadgen_cpu_s: after.me.cpu.saturating_sub(before.me.cpu).as_secs_f64(),
        kernel_rcvbuf_drops: udp.rcvbuf_errors,
        kernel_sndbuf_drops: udp.sndbuf_errors,
        latency: LatencySummary::of(&all),
        audio: StreamFigures::of(&audio),
        video: StreamFigures::of(&video),
        kaskade,
        cdf: super::figures::cdf_points(&all.latency),
        load_average_1m: load_average(),
    }
}

/// The 1-minute load average (other work on the machine skews every figure).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
