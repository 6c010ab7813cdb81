//! `cascade-hop`: the latency one cascade hop adds — from a packet's arrival at node n1 to its
//! send at node n3's subscriber, minus the link's own delay — measured with real node processes.
//!
//! The binary starts two `kaskade` nodes itself: n1 (site a) on 127.0.0.51 and n3 (site b) on
//! 127.0.0.53, with certificates from `kaskade certs` in a temporary directory and each other as
//! `--peer`. With `--link-delay-ms D` the user-space impairment proxy ([`kaskade_tests::impair`])
//! runs in-process on 127.0.0.55:7100 with D ms one-way delay per direction, and n1 (the lower
//! id, which dials) reaches n3 through it.
//!
//! One webrtc-rs WHIP publisher sends a VP8 track to n1, writing its own RTP packets at a fixed
//! rate; each carries an 8-byte id after a VP8 keyframe-start prefix (see
//! [`cascade_client`]). Two WHEP subscribers watch the same room, one on n1
//! (direct: publisher → n1 → subscriber) and one on n3 (cascaded: publisher → n1 → QUIC relay →
//! n3 → subscriber). Everything runs in this one process, so send and receive instants share one
//! monotonic clock. After a warm-up the run reports, for the packets sent in the measured window,
//! p50/p90/p99/max of receive − send per path, the hop's added latency per percentile
//! (cascaded − direct − D), and the distribution of the same difference taken per packet
//! (arrival at n3's subscriber − arrival at n1's subscriber − D). Output: a markdown table and
//! one JSON line.
//!
//! Only loopback addresses are used. The node processes are killed when the run ends, fails or
//! panics ([`NodeProcess`] kills on drop).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Parser;
use hdrhistogram::Histogram;
use kaskade_bench::node_process::{NodeProcess, ScratchDir, make_certs, wait_until};
use kaskade_tests::impair::{ImpairConfig, ImpairProxy, run_proxy};
use serde_json::json;

// The WebRTC client is compiled into this binary only, not into the `kaskade_bench` library:
// webrtc-rs pulls in `rkyv`, whose extra `PartialEq` impls for std types break type inference
// in code that merely links the library (e.g. `addr == "…".parse().unwrap()` in its tests).
#[path = "../cascade_client.rs"]
mod cascade_client;
#[path = "../webrtc_peer.rs"]
mod webrtc_peer;
use cascade_client::{Publisher, Subscriber, http_request, metric_value};

const N1_IP: &str = "127.0.0.51";
const N3_IP: &str = "127.0.0.53";
const PROXY_ADDR: &str = "127.0.0.55:7100";
const RELAY_PORT: u16 = 7100;

#[derive(Parser, Debug)]
#[command(about = "Added latency of one cascade hop (n1 → QUIC relay → n3), real node processes")]
struct Args {
    /// Path of the node binary.
    #[arg(long, default_value = "target/release/kaskade")]
    kaskade: PathBuf,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Seconds of traffic before measuring, once both subscribers receive.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// RTP packets per second the publisher sends.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// RTP payload size in bytes (VP8 prefix + id + filler).
    #[arg(long, default_value_t = 1000)]
    payload_bytes: usize,
    /// Put the impairment proxy between n1 and n3 with this one-way delay (ms, each direction);
    /// the reported hop latency subtracts it. Without the flag the nodes link directly.
    #[arg(long)]
    link_delay_ms: Option<u64>,
    /// Copy the nodes' logs (stderr) into this directory when the run ends.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Room name used for WHIP/WHEP.
    #[arg(long, default_value = "bench")]
    room: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cascade-hop failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    anyhow::ensure!(
        args.seconds > 0.0 && args.warmup >= 0.0,
        "--seconds must be positive"
    );
    let scratch = ScratchDir::new("cascade-hop")?;
    let certs = scratch.path().join("certs");
    make_certs(&args.kaskade, &certs, &["n1", "n3"])?;

    // The proxy task is aborted when `_proxy` drops, after the nodes.
    let n3_relay = format!("{N3_IP}:{RELAY_PORT}");
    let (n3_seen_by_n1, _proxy, probe_cfg) = match args.link_delay_ms {
        Some(ms) => {
            let listen =
                UdpSocket::bind(PROXY_ADDR).with_context(|| format!("binding {PROXY_ADDR}"))?;
            let cfg = ImpairConfig {
                delay: Duration::from_millis(ms),
                ..ImpairConfig::default()
            };
            let target: SocketAddr = n3_relay.parse()?;
            let (up, down) = (cfg.clone(), cfg.clone());
            let task = tokio::spawn(async move {
                if let Err(e) = run_proxy(listen, target, up, down).await {
                    eprintln!("impairment proxy stopped: {e}");
                }
            });
            (PROXY_ADDR.to_owned(), Some(AbortOnDrop(task)), Some(cfg))
        }
        None => (n3_relay, None, None),
    };

    let node_args = |id: &str, site: &str, ip: &str, peer: String| -> Vec<String> {
        [
            "--node-id",
            id,
            "--site",
            site,
            "--http",
            &format!("{ip}:0"),
            "--rtc",
            &format!("{ip}:0"),
            "--relay",
            &format!("{ip}:{RELAY_PORT}"),
            "--certs",
            &certs.display().to_string(),
            "--peer",
            &peer,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let mut n1 = NodeProcess::start(
        &args.kaskade,
        "n1",
        &node_args("n1", "a", N1_IP, format!("n3@b@{n3_seen_by_n1}")),
        scratch.path().join("n1.log"),
    )?;
    let mut n3 = NodeProcess::start(
        &args.kaskade,
        "n3",
        &node_args("n3", "b", N3_IP, format!("n1@a@{N1_IP}:{RELAY_PORT}")),
        scratch.path().join("n3.log"),
    )?;
    let result = measure(&args, &mut n1, &mut n3, probe_cfg).await;
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir)?;
        for node in [&n1, &n3] {
            std::fs::copy(&node.log, dir.join(format!("{}.log", node.id)))?;
        }
    }
    if result.is_err() {
        for node in [&n1, &n3] {
            eprintln!(
                "--- last lines of {}'s log ---\n{}",
                node.id,
                node.log_tail(15)
            );
        }
    }
    result
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn metrics_text(node: SocketAddr) -> anyhow::Result<String> {
    let r = http_request(node, "GET", "/metrics", None, b"").await?;
    anyhow::ensure!(r.status == 200, "GET /metrics: status {}", r.status);
    Ok(r.text())
}

async fn measure(
    args: &Args,
    n1: &mut NodeProcess,
    n3: &mut NodeProcess,
    probe_cfg: Option<ImpairConfig>,
) -> anyhow::Result<()> {
    let (n1_http, n3_http) = (n1.http, n3.http);
    wait_until(
        "relay link n1 → n3 up",
        Duration::from_secs(30),
        || async move {
            let up =
                |text: &str, peer| metric_value(text, "kaskade_relay_link_up", &[("peer", peer)]);
            let (a, b) = (metrics_text(n1_http).await?, metrics_text(n3_http).await?);
            Ok(up(&a, "n3") == Some(1.0) && up(&b, "n1") == Some(1.0))
        },
    )
    .await?;

    let mut publisher = Publisher::connect(n1.http, &args.room).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        let (rate, payload) = (args.rate, args.payload_bytes);
        tokio::spawn(async move {
            let mut sent: Vec<Instant> = Vec::with_capacity(rate as usize * 60);
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let ts_step = 90_000 / rate;
            let mut result = Ok(());
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                let id = sent.len() as u64;
                sent.push(Instant::now());
                if let Err(e) = publisher
                    .send(id, (id as u32).wrapping_mul(ts_step), payload)
                    .await
                {
                    result = Err(e);
                    break;
                }
            }
            (publisher, sent, result)
        })
    };

    let room_path = format!("/api/rooms/{}", args.room);
    wait_until(
        "n1 lists the published track",
        Duration::from_secs(10),
        || {
            let path = room_path.clone();
            async move {
                let r = http_request(n1_http, "GET", &path, None, b"").await?;
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                Ok(r.status == 200 && v["tracks"].as_array().is_some_and(|t| !t.is_empty()))
            }
        },
    )
    .await?;
    let direct = Subscriber::connect(n1.http, &args.room).await?;
    let cascaded = Subscriber::connect(n3.http, &args.room).await?;
    wait_until("both subscribers receive", Duration::from_secs(15), || {
        let ok = direct.received() > 0 && cascaded.received() > 0;
        async move { Ok(ok) }
    })
    .await?;

    let window_start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let window_end = window_start + Duration::from_secs_f64(args.seconds);
    let probe = probe_cfg.map(|cfg| {
        tokio::spawn(probe_link(
            cfg,
            args.rate,
            args.payload_bytes,
            window_start,
            window_end,
        ))
    });
    tokio::time::sleep_until(window_end.into()).await;
    stop.store(true, Ordering::Relaxed);
    let (publisher, sent, send_result) = sender.await.context("sender task")?;
    send_result.context("publisher write")?;
    // Let the last packets of the window arrive (twice the link delay plus slack).
    let delay = Duration::from_millis(args.link_delay_ms.unwrap_or(0));
    tokio::time::sleep(Duration::from_millis(500) + 2 * delay).await;
    n1.check_alive()?;
    n3.check_alive()?;
    let probe = match probe {
        Some(task) => Some(task.await.context("link probe task")??),
        None => None,
    };
    let (m1, m3) = (metrics_text(n1.http).await?, metrics_text(n3.http).await?);
    publisher.close(n1.http).await;
    direct.close(n1.http).await;
    cascaded.close(n3.http).await;

    let in_window: Vec<(u64, Instant)> = sent
        .iter()
        .enumerate()
        .filter(|(_, t)| **t >= window_start && **t < window_end)
        .map(|(id, t)| (id as u64, *t))
        .collect();
    anyhow::ensure!(!in_window.is_empty(), "no packet was sent in the window");
    let first_arrivals = |s: &Subscriber| -> HashMap<u64, Instant> {
        let mut first = HashMap::new();
        for (id, at) in s.arrivals.lock().expect("arrivals lock").iter() {
            first.entry(*id).or_insert(*at);
        }
        first
    };
    let (d_arr, c_arr) = (first_arrivals(&direct), first_arrivals(&cascaded));
    let direct_stats = PathStats::new(&in_window, &d_arr)?;
    let cascaded_stats = PathStats::new(&in_window, &c_arr)?;
    let link_us = delay.as_secs_f64() * 1e6;
    let mut per_packet: Vec<f64> = in_window
        .iter()
        .filter_map(|(id, _)| {
            let (d, c) = (d_arr.get(id)?, c_arr.get(id)?);
            let us = if c >= d {
                (*c - *d).as_secs_f64() * 1e6
            } else {
                -((*d - *c).as_secs_f64() * 1e6)
            };
            Some(((us - link_us) * 10.0).round() / 10.0)
        })
        .collect();
    per_packet.sort_by(f64::total_cmp);
    anyhow::ensure!(!per_packet.is_empty(), "no packet reached both subscribers");
    let pct = |q: f64| per_packet[((per_packet.len() - 1) as f64 * q).round() as usize];
    let per_packet_q = [
        pct(0.5),
        pct(0.9),
        pct(0.99),
        *per_packet.last().expect("non-empty"),
    ];
    let hop_q: Vec<f64> = cascaded_stats
        .quantiles()
        .iter()
        .zip(direct_stats.quantiles())
        .take(3)
        .map(|(c, d)| c - d - link_us)
        .collect();

    let relay = |text: &str, name: &str, peer: &str| {
        metric_value(text, name, &[("peer", peer)]).unwrap_or(f64::NAN)
    };
    let relay_sent = relay(&m1, "kaskade_relay_media_packets_sent", "n3");
    let relay_received = relay(&m3, "kaskade_relay_media_packets_received", "n1");
    let relay_dropped = relay(&m1, "kaskade_relay_media_dropped", "n3");
    let relay_fallbacks = relay(&m1, "kaskade_relay_stream_fallbacks", "n3");
    let relay_rtt_us = relay(&m1, "kaskade_relay_rtt_seconds", "n3") * 1e6;

    let link = match args.link_delay_ms {
        Some(ms) => format!("impairment proxy, {ms} ms one-way"),
        None => "direct loopback (no proxy)".to_owned(),
    };
    println!(
        "\ncascade-hop: {} s measured after {} s warm-up, {} pkt/s asked ({:.0} sent), {} B payload, \
         link: {link}, {} packets in the window\n",
        args.seconds,
        args.warmup,
        args.rate,
        in_window.len() as f64 / args.seconds,
        args.payload_bytes,
        in_window.len()
    );
    println!("| path | received / lost | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, s) in [
        ("direct: publisher → n1 → subscriber", &direct_stats),
        (
            "cascaded: publisher → n1 → relay → n3 → subscriber",
            &cascaded_stats,
        ),
    ] {
        let q = s.quantiles();
        println!(
            "| {name} | {} / {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s.received, s.lost, q[0], q[1], q[2], q[3]
        );
    }
    // The difference of two maxima says nothing about any packet, so that cell stays empty.
    println!(
        "| hop added, per percentile (cascaded − direct − link delay) | | {:.0} | {:.0} | {:.0} | — |",
        hop_q[0], hop_q[1], hop_q[2]
    );
    println!(
        "| hop added, per packet (arrival at n3's sub − at n1's sub − link delay) | {} packets | {:.0} | {:.0} | {:.0} | {:.0} |",
        per_packet.len(),
        per_packet_q[0],
        per_packet_q[1],
        per_packet_q[2],
        per_packet_q[3]
    );
    if let Some(p) = &probe {
        let q = p.quantiles();
        println!(
            "| link alone: twin proxy probe, one way (not subtracted) | {} / {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.received, p.lost, q[0], q[1], q[2], q[3]
        );
    }
    let dq = direct_stats.quantiles();
    let cq = cascaded_stats.quantiles();
    println!(
        "\nratio cascaded / direct: p50 {:.2}, p99 {:.2}; relay n1 → n3: {relay_sent} packets sent, \
         {relay_received} received, {relay_dropped} dropped, {relay_fallbacks} stream fallbacks, \
         RTT {relay_rtt_us:.0} µs (n1's metrics at the end of the run)",
        cq[0] / dq[0],
        cq[2] / dq[2]
    );
    let q_json = |q: &[f64]| json!({"p50": q[0], "p90": q[1], "p99": q[2], "max": q[3]});
    let line = json!({
        "bench": "cascade-hop",
        "seconds": args.seconds,
        "warmup": args.warmup,
        "rate": args.rate,
        "payload_bytes": args.payload_bytes,
        "link_delay_ms": args.link_delay_ms,
        "unit": "us",
        "packets": in_window.len(),
        "sent_per_second": in_window.len() as f64 / args.seconds,
        "direct": {"received": direct_stats.received, "lost": direct_stats.lost, "latency": q_json(&dq)},
        "cascaded": {"received": cascaded_stats.received, "lost": cascaded_stats.lost, "latency": q_json(&cq)},
        "hop_added_per_percentile": {"p50": hop_q[0], "p90": hop_q[1], "p99": hop_q[2]},
        "hop_added_per_packet": q_json(&per_packet_q),
        "link_probe": probe.as_ref().map(|p| json!({
            "received": p.received, "lost": p.lost, "latency": q_json(&p.quantiles()),
        })),
        "ratio_p50": cq[0] / dq[0],
        "ratio_p99": cq[2] / dq[2],
        "relay": {
            "packets_sent": relay_sent,
            "packets_received": relay_received,
            "dropped": relay_dropped,
            "stream_fallbacks": relay_fallbacks,
            "rtt_us": relay_rtt_us,
        },
    });
    println!("\n{line}");
    Ok(())
}

/// Measures what the impairment proxy itself imposes, one way: a twin proxy with the same
/// configuration, on the proxy's address with port 0 in front of a sink socket, carries
/// numbered datagrams of the benchmark's size and rate through the measured window (its delay
/// queue runs on tokio's millisecond timer, so it holds each datagram a little longer than D).
async fn probe_link(
    cfg: ImpairConfig,
    rate: u32,
    size: usize,
    start: Instant,
    end: Instant,
) -> anyhow::Result<PathStats> {
    let ip = PROXY_ADDR.split(':').next().expect("ip:port");
    let sink = tokio::net::UdpSocket::bind((ip, 0)).await?;
    let delay = cfg.delay;
    let proxy = ImpairProxy::new(
        UdpSocket::bind((ip, 0))?,
        sink.local_addr()?,
        cfg.clone(),
        cfg,
    )?;
    let proxy_addr = proxy.local_addr();
    let _proxy = AbortOnDrop(tokio::spawn(async move {
        let _ = proxy.run().await;
    }));
    let client = tokio::net::UdpSocket::bind((ip, 0)).await?;
    client.connect(proxy_addr).await?;
    let last_arrival = end + delay + Duration::from_millis(500);
    let reader = tokio::spawn(async move {
        let mut arrivals = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(Ok(n)) =
            tokio::time::timeout_at(last_arrival.into(), sink.recv(&mut buf)).await
        {
            let at = Instant::now();
            if let Some(id) = buf.get(..8).filter(|_| n >= 8) {
                let id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
                arrivals.entry(id).or_insert(at);
            }
        }
        arrivals
    });
    tokio::time::sleep_until(start.into()).await;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut data = vec![0u8; size.max(8)];
    let mut sent = Vec::new();
    while Instant::now() < end {
        ticker.tick().await;
        let id = sent.len() as u64;
        data[..8].copy_from_slice(&id.to_be_bytes());
        sent.push((id, Instant::now()));
        client.send(&data).await?;
    }
    let arrivals = reader.await?;
    PathStats::new(&sent, &arrivals)
}

/// Receive − send latencies of one path, in µs.
struct PathStats {
    hist: Histogram<u64>,
    received: u64,
    lost: u64,
}

impl PathStats {
    fn new(window: &[(u64, Instant)], arrivals: &HashMap<u64, Instant>) -> anyhow::Result<Self> {
        let mut hist = Histogram::new_with_bounds(1, 60_000_000, 3)?;
        let (mut received, mut lost) = (0, 0);
        for (id, sent) in window {
            match arrivals.get(id) {
                Some(at) => {
                    let us = at.saturating_duration_since(*sent).as_micros() as u64;
                    hist.saturating_record(us.max(1));
                    received += 1;
                }
                None => lost += 1,
            }
        }
        if received == 0 {
            return Err(anyhow!("no packet of the window arrived"));
        }
        Ok(Self {
            hist,
            received,
            lost,
        })
    }

    /// p50, p90, p99, max in µs.
    fn quantiles(&self) -> [f64; 4] {
        [0.5, 0.9, 0.99]
            .map(|q| self.hist.value_at_quantile(q) as f64)
            .into_iter()
            .chain([self.hist.max() as f64])
            .collect::<Vec<_>>()
            .try_into()
            .expect("four values")
    }
}
