//! `loadgen-probe`: one publisher (Opus-sized audio + 1 Mbit/s VP8) and N subscribers of real
//! WebRTC sessions against one Kaskade node that the probe starts itself — the seed of the
//! `fanout-N` scenario.
//!
//! The node (`target/release/kaskade`) runs on 127.0.0.1 with port 0 for HTTP and media. The
//! load generator ([`kaskade_bench::loadgen`]) runs its sessions on its own event-loop threads:
//! loop 0 carries the publisher, loops 1..=L the subscribers. The publisher publishes over WHIP;
//! once the node lists its tracks, subscribers connect over WHEP at `--ramp-rate` per second
//! (at most `--concurrency` negotiations at once). After `--warmup` seconds of traffic, the
//! measured window opens: for `--duration` seconds, packets sent in it count. At the end the
//! probe prints sessions connected/failed, the node's egress packets/s (its `/metrics`) and the
//! subscribers' receive rate, CPU-seconds and RSS of the node (from `/proc/<pid>`) and of the
//! load generator (its loop threads and the whole process), end-to-end latency p50/p99/p99.9,
//! loss and jitter per stream kind, and the node's in-node forwarding latency (histogram deltas
//! from `/metrics`) — as a table and one JSON line.
//!
//! `--client webrtc-rs` replaces the subscribers by webrtc-rs 0.21 async peer connections (one
//! per session, video only, default interceptors; `src/cascade_client.rs`) to compare the two
//! client designs: they do not parse markers, so only CPU, memory and the node's figures count.
//!
//! Only loopback addresses are used; the node is killed when the probe ends, fails or panics.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{Parser, ValueEnum};
use kaskade_bench::loadgen::client_loop::{ClientLoops, LoopReport, SessionHandle};
use kaskade_bench::loadgen::measure::{StreamReport, Window};
use kaskade_bench::loadgen::proc_stats::{self, ProcSample};
use kaskade_bench::loadgen::prom_text::{PromText, bucket_quantile};
use kaskade_bench::loadgen::session::{PublisherSpec, Role};
use kaskade_bench::loadgen::synthetic::{MediaClock, VideoConfig, VideoLayerSpec};
use kaskade_bench::loadgen::{KaskadeWhipWhep, SessionResource, SfuSignalling};
use kaskade_bench::node_process::{NodeProcess, ScratchDir, wait_until};
use serde_json::json;
use tokio::sync::Semaphore;

// webrtc-rs subscribers for `--client webrtc-rs`, compiled into this binary only (webrtc-rs
// pulls in `rkyv`; see `cascade_hop.rs`).
#[allow(dead_code)]
#[path = "../cascade_client.rs"]
mod cascade_client;
#[path = "../webrtc_peer.rs"]
mod webrtc_peer;

/// How long one subscriber may take from its POST to `connected`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// After the window closes, how long packets sent in it may still take to arrive.
const DRAIN: Duration = Duration::from_millis(500);
/// Stream id of the publisher's audio in the markers; video is +1.
const FIRST_STREAM: u32 = 1;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    /// Sans-I/O `rtc` sessions on the load generator's event loops.
    Sansio,
    /// webrtc-rs async peer connections (one per subscriber), for comparison.
    WebrtcRs,
}

#[derive(Parser, Debug)]
#[command(about = "1 publisher → N WebRTC subscribers on one Kaskade node, real ICE + DTLS-SRTP")]
struct Args {
    /// Path of the node binary.
    #[arg(long, default_value = "target/release/kaskade")]
    kaskade: PathBuf,
    /// Subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic after the last subscriber connected, before measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Subscribers started per second.
    #[arg(long, default_value_t = 50.0)]
    ramp_rate: f64,
    /// Negotiations in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Event loops (threads) for the subscribers; the publisher has its own.
    #[arg(long, default_value_t = 1)]
    loops: usize,
    /// Video bitrate, kbit/s (the top layer's with --simulcast); 0 = no video.
    #[arg(long, default_value_t = 1000)]
    video_kbps: u32,
    /// Audio bitrate, kbit/s; 0 = no audio.
    #[arg(long, default_value_t = 48)]
    audio_kbps: u32,
    /// Publish three simulcast layers q/h/f (video_kbps × 0.1 / 0.33 / 1).
    #[arg(long)]
    simulcast: bool,
    /// Which WebRTC client the subscribers use.
    #[arg(long, value_enum, default_value_t = ClientKind::Sansio)]
    client: ClientKind,
    /// Room used for WHIP/WHEP.
    #[arg(long, default_value = "fanout")]
    room: String,
    /// Copy the node's log here when the run ends.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // The runtime only signals and waits; the media runs on the load generator's own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if args.client == ClientKind::WebrtcRs {
            2
        } else {
            1
        })
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen-probe failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The subscribers, of either kind.
enum Subscribers {
    Sansio(Vec<(SessionHandle, SessionResource)>),
    WebrtcRs(Vec<cascade_client::Subscriber>),
}

impl Subscribers {
    fn len(&self) -> usize {
        match self {
            Self::Sansio(v) => v.len(),
            Self::WebrtcRs(v) => v.len(),
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0,
        "--duration must be positive"
    );
    anyhow::ensure!(args.ramp_rate > 0.0, "--ramp-rate must be positive");
    anyhow::ensure!(
        args.video_kbps > 0 || args.audio_kbps > 0,
        "nothing to publish: --video-kbps and --audio-kbps are both 0"
    );
    let scratch = ScratchDir::new("loadgen-probe")?;
    let node_args: Vec<String> = [
        "--node-id",
        "n1",
        "--http",
        "127.0.0.1:0",
        "--rtc",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut node = NodeProcess::start(
        &args.kaskade,
        "n1",
        &node_args,
        scratch.path().join("n1.log"),
    )?;
    let node_pid = match proc_stats::child_pids("kaskade").as_slice() {
        [pid] => *pid,
        other => anyhow::bail!("expected one kaskade child process, found {other:?}"),
    };
    let result = probe(&args, &mut node, node_pid).await;
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        std::fs::copy(&node.log, dir.join("n1.log"))?;
    }
    if result.is_err() {
        eprintln!(
            "--- last lines of the node's log ---\n{}",
            node.log_tail(15)
        );
    }
    result
}

/// What is read before and after the window.
struct Snapshot {
    at: Instant,
    udp: proc_stats::UdpCounters,
    /// Datagrams dropped at the node's media socket and at the subscribers' sockets.
    node_socket_drops: u64,
    client_socket_drops: u64,
    node: ProcSample,
    me: ProcSample,
    metrics: PromText,
    loops: Vec<LoopReport>,
}

async fn snapshot(
    node_pid: u32,
    node_media_port: u16,
    client_ports: &std::collections::HashSet<u16>,
    kaskade: &KaskadeWhipWhep,
    loops: &ClientLoops,
) -> anyhow::Result<Snapshot> {
    let metrics = kaskade.http().get_text(&kaskade.url("/metrics")).await?;
    let drops = proc_stats::udp_socket_drops()?;
    let node_socket_drops = drops
        .iter()
        .filter(|(p, _)| *p == node_media_port)
        .map(|(_, d)| d)
        .sum();
    let client_socket_drops = drops
        .iter()
        .filter(|(p, _)| client_ports.contains(p))
        .map(|(_, d)| d)
        .sum();
    Ok(Snapshot {
        at: Instant::now(),
        udp: proc_stats::udp_counters()?,
        node_socket_drops,
        client_socket_drops,
        node: proc_stats::sample(node_pid).context("reading the node's /proc")?,
        me: proc_stats::sample(std::process::id())?,
        metrics: PromText::parse(&metrics),
        loops: loops.reports().await?,
    })
}

async fn probe(args: &Args, node: &mut NodeProcess, node_pid: u32) -> anyhow::Result<()> {
    let kaskade = Arc::new(KaskadeWhipWhep::new(&format!("http://{}", node.http))?);
    let clock = MediaClock::new(Instant::now());
    let loops = Arc::new(ClientLoops::start(
        1 + args.loops.max(1),
        IpAddr::from([127, 0, 0, 1]),
        clock,
    )?);
    let idle = proc_stats::sample(std::process::id())?;

    // The publisher, on loop 0.
    let video = (args.video_kbps > 0).then(|| {
        let bps = args.video_kbps * 1000;
        if args.simulcast {
            VideoConfig {
                layers: VideoLayerSpec::simulcast(bps / 10, bps / 3, bps),
                ..VideoConfig::single(bps)
            }
        } else {
            VideoConfig::single(bps)
        }
    });
    let spec = PublisherSpec {
        audio_bps: (args.audio_kbps > 0).then_some(args.audio_kbps * 1000),
        video,
        first_stream: FIRST_STREAM,
    };
    let mut publisher = loops.open_on(0, Role::Publisher(spec)).await?;
    let published = kaskade
        .publish(&args.room, &mut publisher)
        .await
        .context("WHIP publish")?;
    publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .context("publisher")?;
    let room_url = kaskade.url(&format!("/api/rooms/{}", args.room));
    let expected_tracks = usize::from(args.audio_kbps > 0) + usize::from(args.video_kbps > 0);
    wait_until(
        "the node lists the published tracks",
        Duration::from_secs(10),
        || {
            let (kaskade, url) = (Arc::clone(&kaskade), room_url.clone());
            async move {
                let text = kaskade.http().get_text(&url).await?;
                let v: serde_json::Value = serde_json::from_str(&text)?;
                Ok(v["tracks"]
                    .as_array()
                    .is_some_and(|t| t.len() >= expected_tracks))
            }
        },
    )
    .await?;

    // The subscribers, ramped.
    let ramp_start = Instant::now();
    let (subscribers, failures) = match args.client {
        ClientKind::Sansio => {
            let (ok, failed) = ramp_sansio(args, &loops, &kaskade).await;
            (Subscribers::Sansio(ok), failed)
        }
        ClientKind::WebrtcRs => {
            let (ok, failed) = ramp_webrtc_rs(args, node.http).await;
            (Subscribers::WebrtcRs(ok), failed)
        }
    };
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let connected = subscribers.len();
    eprintln!(
        "ramp: {connected} connected, {} failed in {ramp_secs:.1} s{}",
        failures.len(),
        failures
            .first()
            .map(|e| format!(" (first failure: {e})"))
            .unwrap_or_default()
    );
    anyhow::ensure!(connected > 0, "no subscriber connected");
    let ramped = proc_stats::sample(std::process::id())?;
    let client_ports: std::collections::HashSet<u16> = match &subscribers {
        Subscribers::Sansio(subs) => subs.iter().map(|(h, _)| h.local_addr().port()).collect(),
        Subscribers::WebrtcRs(_) => Default::default(),
    };

    // Warm-up, then the measured window (by send time on the media clock).
    progress("warm-up", args.warmup, &loops).await;
    node.check_alive()?;
    let window_start = Instant::now();
    let window_end = window_start + Duration::from_secs_f64(args.duration);
    loops.set_window(Window {
        start_ns: clock.ns(window_start),
        end_ns: clock.ns(window_end),
    })?;
    let before = snapshot(node_pid, node.media.port(), &client_ports, &kaskade, &loops).await?;
    progress("measuring", args.duration, &loops).await;
    let after = snapshot(node_pid, node.media.port(), &client_ports, &kaskade, &loops).await?;
    // Packets sent just before the end are still on their way.
    tokio::time::sleep(DRAIN).await;
    let final_loops = loops.reports().await?;
    node.check_alive()?;

    // Close everything.
    match subscribers {
        Subscribers::Sansio(subs) => {
            let mut closing = tokio::task::JoinSet::new();
            let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
            for (handle, resource) in subs {
                let (kaskade, limit) = (Arc::clone(&kaskade), Arc::clone(&limit));
                closing.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let _ = kaskade.close(&resource).await;
                    handle.close();
                });
            }
            while closing.join_next().await.is_some() {}
        }
        Subscribers::WebrtcRs(subs) => {
            for s in subs {
                s.close(node.http).await;
            }
        }
    }
    let _ = kaskade.close(&published).await;
    publisher.close();

    // Figures.
    let secs = after.at.duration_since(before.at).as_secs_f64();
    let egress_pkts = delta(&before.metrics, &after.metrics, "kaskade_packets_out");
    let ingress_pkts = delta(&before.metrics, &after.metrics, "kaskade_packets_in");
    let node_cpu = after.node.cpu.saturating_sub(before.node.cpu).as_secs_f64();
    let me_cpu = after.me.cpu.saturating_sub(before.me.cpu).as_secs_f64();
    let sub_loops = |r: &[LoopReport]| -> LoopReport {
        let mut all = LoopReport::default();
        for l in r.iter().skip(1) {
            all.merge(l);
        }
        all
    };
    let (sub_before, sub_after, sub_final) = (
        sub_loops(&before.loops),
        sub_loops(&after.loops),
        sub_loops(&final_loops),
    );
    let loop_cpu = sub_after
        .thread_cpu
        .saturating_sub(sub_before.thread_cpu)
        .as_secs_f64();
    let pub_cpu = after.loops[0]
        .thread_cpu
        .saturating_sub(before.loops[0].thread_cpu)
        .as_secs_f64();
    let rx_datagrams = sub_after.datagrams.saturating_sub(sub_before.datagrams);
    let rx_rtp = sub_after
        .counters
        .rtp_in
        .saturating_sub(sub_before.counters.rtp_in);
    let wakeups = sub_after.wakeups.saturating_sub(sub_before.wakeups);
    // Per received packet: the node's egress is what the subscribers receive on loopback.
    let received_pkts = if args.client == ClientKind::Sansio {
        rx_datagrams as f64
    } else {
        egress_pkts
    };
    let client_cpu = if args.client == ClientKind::Sansio {
        loop_cpu
    } else {
        me_cpu - pub_cpu
    };
    let per_session_kb =
        (ramped.rss_bytes.saturating_sub(idle.rss_bytes)) as f64 / connected as f64 / 1024.0;
    let udp = after.udp.since(&before.udp);
    // Sockets closed in between take their counts with them: a lower bound for the clients.
    let node_socket_drops = after
        .node_socket_drops
        .saturating_sub(before.node_socket_drops);
    let client_socket_drops = after
        .client_socket_drops
        .saturating_sub(before.client_socket_drops);
    let node_drops = |reason: &str| {
        after
            .metrics
            .sum("kaskade_dropped_datagrams", &[("reason", reason)])
            .unwrap_or(0.0)
            - before
                .metrics
                .sum("kaskade_dropped_datagrams", &[("reason", reason)])
                .unwrap_or(0.0)
    };
    let fwd_before = before.metrics.buckets("kaskade_forward_latency_seconds");
    let fwd_after = after.metrics.buckets("kaskade_forward_latency_seconds");
    let fwd_us = |q: f64| {
        bucket_quantile(&fwd_before, &fwd_after, q).map(|s| (s * 1e6 * 10.0).round() / 10.0)
    };

    let audio = sub_final.measure.streams.get(&FIRST_STREAM);
    let video_total = {
        let mut v = StreamReport::default();
        for (id, s) in &sub_final.measure.streams {
            if *id != FIRST_STREAM {
                v.merge(s);
            }
        }
        v
    };
    let q = |s: &StreamReport, q: f64| {
        if s.latency.is_empty() {
            f64::NAN
        } else {
            s.latency.value_at_quantile(q) as f64
        }
    };
    let stream_json = |s: &StreamReport| {
        json!({
            "subscribers": s.subscribers,
            "received": s.received,
            "lost": s.lost,
            "loss_ratio": s.loss_ratio(),
            "late": s.late,
            "duplicates": s.duplicates,
            "jitter_mean_us": s.jitter_mean_us(),
            "jitter_max_us": s.jitter_max_us,
            "latency_us": {"p50": q(s, 0.5), "p99": q(s, 0.99), "p999": q(s, 0.999), "max": s.latency.max()},
        })
    };

    println!(
        "\nloadgen-probe: 1 publisher (audio {} kbit/s, video {} kbit/s{}) → {} subscribers ({:?} client, {} loop(s)), \
         {:.0} s measured after {:.0} s warm-up\n",
        args.audio_kbps,
        args.video_kbps,
        if args.simulcast {
            ", simulcast q/h/f"
        } else {
            ""
        },
        args.subscribers,
        args.client,
        args.loops,
        args.duration,
        args.warmup
    );
    println!("| figure | value |\n|---|---:|");
    let row = |k: &str, v: String| println!("| {k} | {v} |");
    row(
        "sessions connected / failed",
        format!("{connected} / {}", failures.len()),
    );
    row("ramp", format!("{ramp_secs:.1} s"));
    row(
        "subscribers connected at the window's start / end",
        format!("{} / {}", sub_before.connected, sub_after.connected),
    );
    row(
        "subscriber sessions ended by the stack (after connecting), by reason",
        format!(
            "{} ({}) {:?}",
            sub_final.failed, sub_final.dropped_after_connect, sub_final.failed_reasons
        ),
    );
    row(
        "machine load average (1 min, at the end)",
        load_average().map_or("-".into(), |l| format!("{l:.2}")),
    );
    row(
        "node egress packets/s (/metrics)",
        format!("{:.0}", egress_pkts / secs),
    );
    row(
        "node ingress packets/s",
        format!("{:.0}", ingress_pkts / secs),
    );
    row(
        "subscribers' datagrams/s / RTP packets/s",
        format!(
            "{:.0} / {:.0}",
            rx_datagrams as f64 / secs,
            rx_rtp as f64 / secs
        ),
    );
    row(
        "node CPU (s in window, % of a core)",
        format!("{node_cpu:.2} s, {:.0} %", node_cpu / secs * 100.0),
    );
    row(
        "node egress packets per CPU-second",
        format!("{:.0}", egress_pkts / node_cpu.max(1e-9)),
    );
    row(
        "node RSS (MB)",
        format!("{:.1}", after.node.rss_bytes as f64 / 1048576.0),
    );
    row(
        "load generator CPU: subscriber loops / publisher loop / process",
        format!(
            "{loop_cpu:.2} s / {pub_cpu:.2} s / {me_cpu:.2} s ({:.0} % of a core)",
            me_cpu / secs * 100.0
        ),
    );
    row(
        "client CPU per received packet",
        format!("{:.2} µs", client_cpu / received_pkts.max(1.0) * 1e6),
    );
    row(
        "datagrams per socket wake-up",
        format!("{:.2}", rx_datagrams as f64 / wakeups.max(1) as f64),
    );
    row(
        "load generator RSS (MB), per subscriber session (KB)",
        format!(
            "{:.1}, {per_session_kb:.0}",
            after.me.rss_bytes as f64 / 1048576.0
        ),
    );
    for (name, s) in [("video", Some(&video_total)), ("audio", audio)] {
        let Some(s) = s else { continue };
        row(
            &format!("{name} latency p50 / p99 / p99.9 / max (µs)"),
            format!(
                "{:.0} / {:.0} / {:.0} / {}",
                q(s, 0.5),
                q(s, 0.99),
                q(s, 0.999),
                s.latency.max()
            ),
        );
        row(
            &format!("{name} received / lost (loss %)"),
            format!(
                "{} / {} ({:.3} %)",
                s.received,
                s.lost,
                s.loss_ratio() * 100.0
            ),
        );
        row(
            &format!("{name} jitter mean / max (µs)"),
            format!("{:.0} / {:.0}", s.jitter_mean_us(), s.jitter_max_us),
        );
    }
    row(
        "kernel UDP drops: receive buffer full / send buffer full",
        format!("{} / {}", udp.rcvbuf_errors, udp.sndbuf_errors),
    );
    row(
        "socket drops: node's media socket / subscribers' sockets",
        format!("{node_socket_drops} / {client_socket_drops}"),
    );
    row(
        "node drops: send failed",
        format!("{:.0}", node_drops("send_failed")),
    );
    row(
        "node forwarding latency p50 / p99 (µs, /metrics buckets)",
        format!(
            "{} / {}",
            fwd_us(0.5).map_or("-".into(), |v| v.to_string()),
            fwd_us(0.99).map_or("-".into(), |v| v.to_string())
        ),
    );
    let line = json!({
        "bench": "loadgen-probe",
        "client": format!("{:?}", args.client).to_lowercase(),
        "subscribers": args.subscribers,
        "loops": args.loops,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "audio_kbps": args.audio_kbps,
        "video_kbps": args.video_kbps,
        "simulcast": args.simulcast,
        "connected": connected,
        "failed": failures.len(),
        "connected_at_window_start": sub_before.connected,
        "connected_at_window_end": sub_after.connected,
        "ended_by_stack": sub_final.failed,
        "ended_after_connect": sub_final.dropped_after_connect,
        "ended_reasons": sub_final.failed_reasons,
        "ramp_s": ramp_secs,
        "node": {
            "egress_pps": egress_pkts / secs,
            "ingress_pps": ingress_pkts / secs,
            "cpu_s": node_cpu,
            "cpu_core_fraction": node_cpu / secs,
            "egress_packets_per_cpu_s": egress_pkts / node_cpu.max(1e-9),
            "rss_bytes": after.node.rss_bytes,
            "dropped_send_failed": node_drops("send_failed"),
            "forward_latency_us": {"p50": fwd_us(0.5), "p99": fwd_us(0.99)},
        },
        "loadgen": {
            "subscriber_loops_cpu_s": loop_cpu,
            "publisher_loop_cpu_s": pub_cpu,
            "process_cpu_s": me_cpu,
            "client_cpu_us_per_packet": client_cpu / received_pkts.max(1.0) * 1e6,
            "rx_datagrams_per_s": rx_datagrams as f64 / secs,
            "rx_rtp_per_s": rx_rtp as f64 / secs,
            "datagrams_per_wakeup": rx_datagrams as f64 / wakeups.max(1) as f64,
            "rss_bytes": after.me.rss_bytes,
            "rss_per_session_bytes": per_session_kb * 1024.0,
            "refused_datagrams": sub_final.counters.refused_in,
            "send_errors": sub_final.send_errors,
        },
        "publisher": {
            "rtp_out": final_loops[0].counters.rtp_out,
            "rtcp_in": final_loops[0].counters.rtcp_in,
            "keyframe_requests": final_loops[0].counters.keyframe_requests,
            "write_errors": final_loops[0].counters.write_errors,
            "node_keyframe_requests_sent": after.metrics.sum("kaskade_keyframe_requests_sent", &[]),
        },
        "kernel_udp": {
            "rcvbuf_errors": udp.rcvbuf_errors,
            "sndbuf_errors": udp.sndbuf_errors,
            "node_socket_drops": node_socket_drops,
            "loadgen_socket_drops": client_socket_drops,
        },
        "load_average_1m": load_average(),
        "video": stream_json(&video_total),
        "audio": audio.map(stream_json),
    });
    println!("\n{line}");
    Ok(())
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

fn delta(before: &PromText, after: &PromText, name: &str) -> f64 {
    after.sum(name, &[]).unwrap_or(0.0) - before.sum(name, &[]).unwrap_or(0.0)
}

/// Waits `secs` seconds, printing progress (connected sessions, receive rate) every 2 s.
async fn progress(phase: &str, secs: f64, loops: &ClientLoops) {
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut last: Option<(Instant, u64)> = None;
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        let step = (end - now).min(Duration::from_secs(2));
        tokio::time::sleep(step).await;
        let Ok(reports) = loops.reports().await else {
            break;
        };
        let (connected, datagrams) = reports
            .iter()
            .skip(1)
            .fold((0, 0), |(c, d), r| (c + r.connected, d + r.datagrams));
        let rate = last
            .map(|(t, d)| {
                format!(
                    ", {:.0} datagrams/s in",
                    (datagrams - d) as f64 / t.elapsed().as_secs_f64()
                )
            })
            .unwrap_or_default();
        last = Some((Instant::now(), datagrams));
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        eprintln!(
            "{phase}: {:>4.0} s left, {connected} subscribers connected{rate}",
            left.as_secs_f64()
        );
    }
}

/// Starts `--subscribers` sessions with `start(i)` at `--ramp-rate`, at most `--concurrency`
/// connecting at once; returns the connected ones and the errors of the others.
async fn ramp<T, F, Fut>(args: &Args, start: F) -> (Vec<T>, Vec<String>)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.ramp_rate));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.subscribers {
        ticker.tick().await;
        let permit = Arc::clone(&limit)
            .acquire_owned()
            .await
            .expect("semaphore open");
        let session = start(i);
        tasks.spawn(async move {
            let _permit = permit;
            session.await
        });
        if (i + 1) % 100 == 0 {
            eprintln!("ramp: {} subscribers started", i + 1);
        }
    }
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(s)) => ok.push(s),
            Ok(Err(e)) => failed.push(format!("{e:#}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    (ok, failed)
}

/// The ramp with sans-I/O subscribers, on loops 1.. (loop 0 is the publisher's).
async fn ramp_sansio(
    args: &Args,
    loops: &Arc<ClientLoops>,
    kaskade: &Arc<KaskadeWhipWhep>,
) -> (Vec<(SessionHandle, SessionResource)>, Vec<String>) {
    let sub_loops = loops.len() - 1;
    ramp(args, |i| {
        let (loops, kaskade, room) = (Arc::clone(loops), Arc::clone(kaskade), args.room.clone());
        async move {
            let mut handle = loops.open_on(1 + i % sub_loops, Role::Subscriber).await?;
            let resource = match kaskade.subscribe(&room, None, &mut handle).await {
                Ok(r) => r,
                Err(e) => {
                    handle.close();
                    return Err(anyhow!(e).context("WHEP subscribe"));
                }
            };
            if let Err(e) = handle.wait_connected(CONNECT_TIMEOUT).await {
                let _ = kaskade.close(&resource).await;
                handle.close();
                return Err(anyhow!(e));
            }
            Ok((handle, resource))
        }
    })
    .await
}

/// The same ramp with webrtc-rs subscribers (one async peer connection each).
async fn ramp_webrtc_rs(
    args: &Args,
    node: std::net::SocketAddr,
) -> (Vec<cascade_client::Subscriber>, Vec<String>) {
    ramp(args, |_| {
        let room = args.room.clone();
        async move { cascade_client::Subscriber::connect(node, &room).await }
    })
    .await
}
