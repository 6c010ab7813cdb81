//! `packet-hop`: measures what a hop costs on the per-packet forwarding path.
//!
//! One publisher's 1200-byte packets fan out to N subscribers under four designs:
//! `direct` (the socket loop calls `route()`), `mpsc` (one tokio mpsc hop to a
//! forwarder task), `actor` (one ractor message to a Forwarder actor) and
//! `actor/sub` (one ractor message per packet per Subscriber actor). It reports
//! per-copy and last-copy latency from hand-over to "queued", and copies per second,
//! under a paced load and under a burst limited only by an in-flight window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{Notify, mpsc};

const PAYLOAD_LEN: usize = 1200;
/// The stand-in send queue is flushed (cleared) when it holds this many copies.
const FLUSH_AT: usize = 64;

#[derive(Parser)]
#[command(about = "Mailbox hop vs direct call on the packet forwarding path")]
struct Args {
    /// Seconds of load per (design, N, load) case.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Comma-separated subscriber counts.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500")]
    fanout: Vec<u32>,
    /// Packets per second of the paced load.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Maximum packets in flight (handed over but not fully queued).
    #[arg(long, default_value_t = 64)]
    window: u64,
}

#[derive(Clone, Copy)]
enum Design {
    Direct,
    Mpsc,
    Actor,
    ActorPerSub,
}

impl Design {
    const ALL: [Design; 4] = [Self::Direct, Self::Mpsc, Self::Actor, Self::ActorPerSub];

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "(a) direct",
            Self::Mpsc => "(b) mpsc hop",
            Self::Actor => "(c) actor hop",
            Self::ActorPerSub => "(d) actor/sub",
        }
    }
}

#[derive(Clone, Copy)]
enum Load {
    Paced(u32),
    Burst,
}

/// A received RTP packet; `remaining` counts the subscriber copies still to queue.
struct Packet {
    seq: u16,
    ts: u32,
    payload: Bytes,
    arrived: Instant,
    remaining: AtomicU32,
}

/// Latencies in nanoseconds: every subscriber copy, and the last copy of each packet.
struct Stats {
    copy: Histogram<u64>,
    last: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        // 2 significant digits keep 1000 per-actor histograms small.
        let h = || Histogram::new_with_bounds(1, 10_000_000_000, 2).expect("histogram bounds");
        Self {
            copy: h(),
            last: h(),
        }
    }

    fn add(&mut self, other: &Stats) {
        self.copy.add(&other.copy).expect("same bounds");
        self.last.add(&other.last).expect("same bounds");
    }
}

/// Packets completed so far; wakes the publisher loop when its window opens.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    notify: Notify,
}

impl Progress {
    fn complete(&self) {
        self.done.fetch_add(1, Ordering::Release);
        self.notify.notify_one();
    }

    async fn wait_until(&self, done: u64) {
        loop {
            let notified = self.notify.notified();
            if self.done.load(Ordering::Acquire) >= done {
                return;
            }
            notified.await;
        }
    }
}

/// Per-subscriber forwarding state: header rewrite plus a stand-in send queue.
struct Subscriber {
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    queue: Vec<([u8; 12], Bytes)>,
}

impl Subscriber {
    fn new(i: u32) -> Self {
        Self {
            ssrc: 0x5eed_0000 + i,
            seq_offset: i as u16,
            ts_offset: i.wrapping_mul(90),
            queue: Vec::with_capacity(FLUSH_AT),
        }
    }

    /// Rewrites seq/ts/ssrc in a copy of the 12-byte header and queues the copy;
    /// returns the nanoseconds since the packet arrived.
    fn forward(&mut self, p: &Packet) -> u64 {
        let mut header = [0u8; 12];
        header.copy_from_slice(&p.payload[..12]);
        header[2..4].copy_from_slice(&p.seq.wrapping_add(self.seq_offset).to_be_bytes());
        header[4..8].copy_from_slice(&p.ts.wrapping_add(self.ts_offset).to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        if self.queue.len() == FLUSH_AT {
            self.queue.clear();
        }
        self.queue.push((header, p.payload.clone()));
        p.arrived.elapsed().as_nanos() as u64
    }
}

/// A track's forwarding table, driven by designs (a), (b) and (c).
struct Table {
    subs: Vec<Subscriber>,
    stats: Stats,
    progress: Arc<Progress>,
}

impl Table {
    fn new(n: u32, progress: Arc<Progress>) -> Self {
        let subs = (0..n).map(Subscriber::new).collect();
        Self {
            subs,
            stats: Stats::new(),
            progress,
        }
    }

    fn route(&mut self, p: &Packet) {
        let mut ns = 0;
        for sub in &mut self.subs {
            ns = sub.forward(p);
            self.stats.copy.saturating_record(ns);
        }
        self.stats.last.saturating_record(ns);
        self.progress.complete();
    }
}

enum ForwarderMsg {
    Packet(Packet),
    Report(RpcReplyPort<Stats>),
}

/// Design (c): one actor owns the table.
struct ForwarderActor;

impl Actor for ForwarderActor {
    type Msg = ForwarderMsg;
    type State = Table;
    type Arguments = Table;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        table: Table,
    ) -> Result<Table, ActorProcessingErr> {
        Ok(table)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        table: &mut Table,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ForwarderMsg::Packet(p) => table.route(&p),
            ForwarderMsg::Report(port) => {
                let _ = port.send(std::mem::replace(&mut table.stats, Stats::new()));
            }
        }
        Ok(())
    }
}

enum SubscriberMsg {
    Packet(Arc<Packet>),
    Report(RpcReplyPort<Stats>),
}

/// Design (d): one actor per subscriber; whoever queues a packet's last copy completes it.
struct SubscriberActor;

struct SubscriberState {
    sub: Subscriber,
    stats: Stats,
    progress: Arc<Progress>,
}

impl Actor for SubscriberActor {
    type Msg = SubscriberMsg;
    type State = SubscriberState;
    type Arguments = SubscriberState;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: SubscriberState,
    ) -> Result<SubscriberState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut SubscriberState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubscriberMsg::Packet(p) => {
                let ns = s.sub.forward(&p);
                s.stats.copy.saturating_record(ns);
                if p.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    s.stats.last.saturating_record(ns);
                    s.progress.complete();
                }
            }
            SubscriberMsg::Report(port) => {
                let _ = port.send(std::mem::replace(&mut s.stats, Stats::new()));
            }
        }
        Ok(())
    }
}

/// One case's outcome.
struct Outcome {
    stats: Stats,
    copies: u64,
    elapsed: Duration,
}

/// The publisher's socket loop: builds packets for `seconds` and hands each to `handoff`,
/// keeping at most `window` in flight. Returns packets sent and the time all completed.
async fn publish(
    mut handoff: impl FnMut(Packet),
    n: u32,
    load: Load,
    args: &Args,
    progress: &Progress,
) -> (u64, Duration) {
    let template = [0x80u8; PAYLOAD_LEN];
    let mut ticker = match load {
        Load::Paced(rate) => Some(tokio::time::interval(Duration::from_secs(1) / rate)),
        Load::Burst => None,
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        if sent >= args.window {
            progress.wait_until(sent + 1 - args.window).await;
        }
        let packet = Packet {
            seq: sent as u16,
            ts: (sent as u32).wrapping_mul(3000),
            payload: Bytes::copy_from_slice(&template),
            arrived: Instant::now(),
            remaining: AtomicU32::new(n),
        };
        handoff(packet);
        sent += 1;
    }
    progress.wait_until(sent).await;
    (sent, start.elapsed())
}

async fn run_case(design: Design, n: u32, load: Load, args: &Args) -> Outcome {
    let progress = Arc::new(Progress::default());
    let (sent, elapsed, stats) = match design {
        Design::Direct => {
            let mut table = Table::new(n, progress.clone());
            let (sent, elapsed) = publish(|p| table.route(&p), n, load, args, &progress).await;
            (sent, elapsed, table.stats)
        }
        Design::Mpsc => {
            let (tx, mut rx) = mpsc::unbounded_channel::<Packet>();
            let mut table = Table::new(n, progress.clone());
            let forwarder = tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    table.route(&p);
                }
                table.stats
            });
            let handoff = |p| assert!(tx.send(p).is_ok(), "forwarder gone");
            let (sent, elapsed) = publish(handoff, n, load, args, &progress).await;
            drop(tx);
            (sent, elapsed, forwarder.await.expect("forwarder task"))
        }
        Design::Actor => {
            let table = Table::new(n, progress.clone());
            let (actor, handle) = Actor::spawn(None, ForwarderActor, table)
                .await
                .expect("spawn");
            let handoff = |p| {
                assert!(
                    actor.send_message(ForwarderMsg::Packet(p)).is_ok(),
                    "actor gone"
                )
            };
            let (sent, elapsed) = publish(handoff, n, load, args, &progress).await;
            let stats = report(&actor, ForwarderMsg::Report).await;
            actor.stop(None);
            handle.await.expect("forwarder actor");
            (sent, elapsed, stats)
        }
        Design::ActorPerSub => {
            let mut subs = Vec::with_capacity(n as usize);
            for i in 0..n {
                let state = SubscriberState {
                    sub: Subscriber::new(i),
                    stats: Stats::new(),
                    progress: progress.clone(),
                };
                subs.push(
                    Actor::spawn(None, SubscriberActor, state)
                        .await
                        .expect("spawn"),
                );
            }
            let handoff = |p: Packet| {
                let p = Arc::new(p);
                for (sub, _) in &subs {
                    let sent = sub.send_message(SubscriberMsg::Packet(p.clone()));
                    assert!(sent.is_ok(), "subscriber gone");
                }
            };
            let (sent, elapsed) = publish(handoff, n, load, args, &progress).await;
            let mut stats = Stats::new();
            for (sub, handle) in subs {
                stats.add(&report(&sub, SubscriberMsg::Report).await);
                sub.stop(None);
                handle.await.expect("subscriber actor");
            }
            (sent, elapsed, stats)
        }
    };
    Outcome {
        stats,
        copies: sent * u64::from(n),
        elapsed,
    }
}

async fn report<M: ractor::Message>(
    actor: &ActorRef<M>,
    msg: fn(RpcReplyPort<Stats>) -> M,
) -> Stats {
    match actor.call(msg, None).await {
        Ok(ractor::rpc::CallResult::Success(stats)) => stats,
        _ => panic!("actor did not report"),
    }
}

fn quantiles(h: &Histogram<u64>) -> String {
    let us = |q| h.value_at_quantile(q) as f64 / 1000.0;
    format!("{:.1} / {:.1} / {:.1}", us(0.5), us(0.99), us(0.999))
}

async fn bench(args: Args) {
    println!(
        "| design | N | load | copy p50 / p99 / p99.9 µs | last p50 / p99 / p99.9 µs | M copies/s |"
    );
    println!("|---|---:|---|---|---|---:|");
    for &n in &args.fanout {
        for load in [Load::Paced(args.rate), Load::Burst] {
            for design in Design::ALL {
                let o = run_case(design, n, load, &args).await;
                let load_name = match load {
                    Load::Paced(rate) => format!("{rate} pkt/s"),
                    Load::Burst => "burst".to_owned(),
                };
                println!(
                    "| {} | {n} | {load_name} | {} | {} | {:.3} |",
                    design.name(),
                    quantiles(&o.stats.copy),
                    quantiles(&o.stats.last),
                    o.copies as f64 / o.elapsed.as_secs_f64() / 1e6,
                );
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Run on a worker, as a socket loop would, not on the main thread.
    runtime.block_on(async { tokio::spawn(bench(args)).await.expect("bench task") });
}
