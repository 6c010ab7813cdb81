//! `impair`: a user-space UDP impairment proxy (delay, jitter, loss, rate limit) for tests and
//! benchmarks, because this machine's kernel has no netem.
//!
//! This module owns three layers:
//!
//! - [`ImpairmentSchedule`], a pure, sans-I/O decision core in the style of quinn-proto: it is
//!   given a datagram's size and the current [`Instant`] explicitly and answers
//!   [`Verdict::Drop`] or [`Verdict::DeliverAt`]. It owns its seeded RNG, so the same
//!   [`ImpairConfig`] and the same arrivals always give the same verdicts.
//! - [`ImpairProxy`] / [`run_proxy`], the tokio shell: a listen socket, one upstream socket per
//!   client source address (bound to the listen IP, port 0, connected to the target), and one
//!   delay queue (a binary heap driven by `sleep_until`) per direction. Each direction is one
//!   "link": all clients share its schedule, so the rate limit is per direction, not per client.
//! - [`main_from_args`], the command line of the `impair-proxy` binary (and of the end-to-end
//!   tests' `kaskade-e2e-impair` wrapper).
//!
//! Order of impairments for one datagram: the bottleneck queue (drop if it already holds
//! `queue_limit` datagrams), serialization at `rate_bps`, random loss on the wire (a lost
//! datagram still used its share of the link), then propagation delay `delay ± jitter`. Jitter is
//! drawn independently per datagram, so datagrams may be reordered by up to `2 × jitter`.
//!
//! The proxy sends only to the `--target` address and back to the clients that wrote to it.

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

/// Largest datagram the proxy receives whole (the UDP length field's limit).
pub const MAX_DATAGRAM: usize = 65_535;
/// Upper bound on `delay + jitter`; keeps every `Instant` addition far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Default bound of the rate limiter's queue, in datagrams.
pub const DEFAULT_QUEUE_LIMIT: usize = 256;
/// At most this many client flows (upstream sockets) are opened; later clients are dropped.
const MAX_FLOWS: usize = 4096;
/// Capacity of the hand-over channel from the socket readers to a direction's scheduler.
const CHANNEL_CAPACITY: usize = 8192;
/// Added to `--seed` for the downstream direction so the two directions draw different numbers.
const DOWN_SEED_OFFSET: u64 = 0x9E37_79B9_7F4A_7C15;

// ---------------------------------------------------------------------------------------------
// Configuration and errors
// ---------------------------------------------------------------------------------------------

/// Impairment of one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpairConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Uniform ± jitter added to `delay` per datagram (the sum is clamped at zero).
    pub jitter: Duration,
    /// Probability (0.0–1.0) of losing each datagram.
    pub loss: f64,
    /// Link rate in bits per second; 0 means unlimited (no queue, no serialization time).
    pub rate_bps: u64,
    /// Most datagrams waiting for (or in) serialization; later ones are dropped. Only used when
    /// `rate_bps > 0`.
    pub queue_limit: usize,
    /// Seed of this direction's RNG.
    pub seed: u64,
}

impl Default for ImpairConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: 0,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            seed: 0,
        }
    }
}

impl ImpairConfig {
    /// Checks the values a schedule relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(ConfigError::LossOutOfRange(self.loss));
        }
        if self.delay.saturating_add(self.jitter) > MAX_DELAY {
            return Err(ConfigError::DelayTooLarge(
                self.delay.saturating_add(self.jitter),
            ));
        }
        if self.rate_bps > 0 && self.queue_limit == 0 {
            return Err(ConfigError::ZeroQueueLimit);
        }
        Ok(())
    }
}

/// An [`ImpairConfig`] or address pair the proxy cannot use.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigError {
    /// `loss` is not a probability (or is NaN).
    LossOutOfRange(f64),
    /// `delay + jitter` exceeds [`MAX_DELAY`].
    DelayTooLarge(Duration),
    /// A rate limit with a queue that can hold nothing.
    ZeroQueueLimit,
    /// `rate_kbps × 1000` does not fit in a `u64`.
    RateTooLarge(u64),
    /// The listen and target addresses are of different IP families.
    AddressFamilyMismatch {
        /// The listen address.
        listen: SocketAddr,
        /// The target address.
        target: SocketAddr,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LossOutOfRange(loss) => write!(f, "loss {loss} is not within 0.0..=1.0"),
            Self::DelayTooLarge(d) => {
                write!(f, "delay + jitter {d:?} exceeds the maximum {MAX_DELAY:?}")
            }
            Self::ZeroQueueLimit => write!(f, "a rate limit needs a queue limit of at least 1"),
            Self::RateTooLarge(kbps) => write!(f, "rate {kbps} kbit/s is too large"),
            Self::AddressFamilyMismatch { listen, target } => write!(
                f,
                "listen address {listen} and target {target} are of different IP families"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for io::Error {
    fn from(e: ConfigError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Why [`main_from_args`] failed.
#[derive(Debug)]
pub enum ImpairError {
    /// Bad flag values.
    Config(ConfigError),
    /// Socket or runtime failure.
    Io(io::Error),
}

impl fmt::Display for ImpairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "impair-proxy: invalid configuration: {e}"),
            Self::Io(e) => write!(f, "impair-proxy: {e}"),
        }
    }
}

impl std::error::Error for ImpairError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

impl From<ConfigError> for ImpairError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<io::Error> for ImpairError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Sans-I/O core
// ---------------------------------------------------------------------------------------------

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss.
    Loss,
    /// The rate limiter's queue was full.
    QueueFull,
}

/// What to do with one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Discard it.
    Drop(DropReason),
    /// Send it on at this instant.
    DeliverAt(Instant),
}

/// The deterministic impairment of one direction: no I/O, no clock, only explicit time.
#[derive(Debug)]
pub struct ImpairmentSchedule {
    cfg: ImpairConfig,
    rng: StdRng,
    /// When the link finishes serializing everything accepted so far.
    link_free_at: Option<Instant>,
    /// Serialization end times of the datagrams still queued or being serialized.
    queue: VecDeque<Instant>,
    /// Latest `now` seen; an earlier `now` is treated as this one.
    last_now: Option<Instant>,
}

impl ImpairmentSchedule {
    /// A schedule for `cfg`, seeded with `cfg.seed`.
    pub fn new(cfg: ImpairConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            link_free_at: None,
            queue: VecDeque::new(),
            last_now: None,
        })
    }

    /// The configuration this schedule applies.
    pub fn config(&self) -> &ImpairConfig {
        &self.cfg
    }

    /// Datagrams in the rate limiter's queue at the last call (including the one in service).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Decides the fate of a datagram of `len` bytes that arrives at `now`.
    ///
    /// Calls should come in non-decreasing `now` order; an earlier `now` is treated as the
    /// latest one seen.
    pub fn on_datagram(&mut self, now: Instant, len: usize) -> Verdict {
        let now = match self.last_now {
            Some(last) if last > now => last,
            _ => now,
        };
        self.last_now = Some(now);

        // Bottleneck queue and serialization.
        let mut departs = now;
        if self.cfg.rate_bps > 0 {
            while self.queue.front().is_some_and(|&end| end <= now) {
                self.queue.pop_front();
            }
            if self.queue.len() >= self.cfg.queue_limit {
                return Verdict::Drop(DropReason::QueueFull);
            }
            let start = self.link_free_at.map_or(now, |free| free.max(now));
            let Some(end) = start.checked_add(self.serialization_time(len)) else {
                return Verdict::Drop(DropReason::QueueFull);
            };
            self.link_free_at = Some(end);
            self.queue.push_back(end);
            departs = end;
        }

        // Loss on the wire.
        if self.cfg.loss > 0.0 && self.rng.random::<f64>() < self.cfg.loss {
            return Verdict::Drop(DropReason::Loss);
        }

        // Propagation delay ± jitter.
        let mut delay = self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            // Both fit in i64 nanoseconds: validate() bounds them by MAX_DELAY.
            let j = self.cfg.jitter.as_nanos() as i64;
            let d = self.cfg.delay.as_nanos() as i64;
            let offset = self.rng.random_range(-j..=j);
            delay = Duration::from_nanos(d.saturating_add(offset).max(0) as u64);
        }
        match departs.checked_add(delay) {
            Some(at) => Verdict::DeliverAt(at),
            None => Verdict::Drop(DropReason::QueueFull),
        }
    }

    /// Time to put `len` bytes on the link (rounded up to whole nanoseconds).
    fn serialization_time(&self, len: usize) -> Duration {
        let bits = len as u128 * 8 * 1_000_000_000;
        let rate = u128::from(self.cfg.rate_bps.max(1));
        let nanos = bits.div_ceil(rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

// ---------------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------------

/// Counters of one direction (client → target is "up", target → client is "down").
#[derive(Debug, Default)]
pub struct DirectionStats {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_overflow: AtomicU64,
    dropped_unroutable: AtomicU64,
    send_errors: AtomicU64,
}

/// A copy of [`DirectionStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionSnapshot {
    /// Datagrams read from the sockets.
    pub received: u64,
    /// Datagrams sent on successfully.
    pub forwarded: u64,
    /// Dropped by random loss.
    pub dropped_loss: u64,
    /// Dropped because the rate limiter's queue was full.
    pub dropped_queue: u64,
    /// Dropped because the hand-over channel to the scheduler was full.
    pub dropped_overflow: u64,
    /// Dropped because no upstream socket could be opened for the client.
    pub dropped_unroutable: u64,
    /// The final send failed (e.g. the target's port is closed).
    pub send_errors: u64,
}

impl DirectionSnapshot {
    /// All drops, whatever the reason (send errors excluded).
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_overflow + self.dropped_unroutable
    }

    /// Datagrams whose fate is decided and carried out: forwarded, dropped or failed.
    pub fn settled(&self) -> u64 {
        self.forwarded + self.dropped() + self.send_errors
    }
}

impl fmt::Display for DirectionSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} forwarded={} dropped={} (loss={} queue={} overflow={} unroutable={}) \
             send_errors={}",
            self.received,
            self.forwarded,
            self.dropped(),
            self.dropped_loss,
            self.dropped_queue,
            self.dropped_overflow,
            self.dropped_unroutable,
            self.send_errors
        )
    }
}

impl DirectionStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> DirectionSnapshot {
        let r = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        DirectionSnapshot {
            received: r(&self.received),
            forwarded: r(&self.forwarded),
            dropped_loss: r(&self.dropped_loss),
            dropped_queue: r(&self.dropped_queue),
            dropped_overflow: r(&self.dropped_overflow),
            dropped_unroutable: r(&self.dropped_unroutable),
            send_errors: r(&self.send_errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, AtomicOrdering::Relaxed);
}

/// Counters of a running proxy, shared with whoever holds [`ImpairProxy::stats`].
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client → target.
    pub up: DirectionStats,
    /// Target → client.
    pub down: DirectionStats,
    flows: AtomicU64,
    changed: Notify,
}

/// A copy of [`ProxyStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Client → target.
    pub up: DirectionSnapshot,
    /// Target → client.
    pub down: DirectionSnapshot,
    /// Client flows (upstream sockets) opened.
    pub flows: u64,
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "up {}; down {}; flows={}",
            self.up, self.down, self.flows
        )
    }
}

impl ProxyStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            up: self.up.snapshot(),
            down: self.down.snapshot(),
            flows: self.flows.load(AtomicOrdering::Relaxed),
        }
    }

    /// Waits until `pred` holds for the counters (checked after every change), then returns
    /// the snapshot it held for. Pair it with a timeout: it waits forever otherwise.
    pub async fn wait_until(&self, mut pred: impl FnMut(&StatsSnapshot) -> bool) -> StatsSnapshot {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking so that no change between check and wait is missed.
            notified.as_mut().enable();
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            notified.await;
        }
    }

    fn notify(&self) {
        self.changed.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------------------
// Async shell
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Direction {
    Up,
    Down,
}

impl Direction {
    fn stats(self, stats: &ProxyStats) -> &DirectionStats {
        match self {
            Self::Up => &stats.up,
            Self::Down => &stats.down,
        }
    }
}

/// Where a datagram goes once its delivery time has come.
#[derive(Debug)]
enum Egress {
    /// Upstream: the client's own socket, connected to the target.
    Connected(Arc<UdpSocket>),
    /// Downstream: the listen socket, to the client's address.
    To(Arc<UdpSocket>, SocketAddr),
}

/// A datagram handed from a socket reader to a direction's scheduler.
#[derive(Debug)]
struct Inbound {
    arrived: Instant,
    data: Vec<u8>,
    egress: Egress,
}

/// A datagram waiting in the delay queue; ordered by delivery time, then arrival order.
#[derive(Debug)]
struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    egress: Egress,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Receive errors after which a socket is still usable (ICMP errors reported on UDP sockets).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Hands a datagram to a scheduler; counts it as received (and as an overflow drop if the
/// channel is full). Returns false when the scheduler is gone.
fn hand_over(
    tx: &mpsc::Sender<Inbound>,
    stats: &ProxyStats,
    dir: Direction,
    item: Inbound,
) -> bool {
    let counters = dir.stats(stats);
    bump(&counters.received);
    let alive = match tx.try_send(item) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            bump(&counters.dropped_overflow);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    };
    stats.notify();
    alive
}

/// One direction's scheduler: applies the schedule and delivers from a delay queue.
async fn run_direction(
    mut schedule: ImpairmentSchedule,
    mut rx: mpsc::Receiver<Inbound>,
    stats: Arc<ProxyStats>,
    dir: Direction,
) {
    let counters = dir.stats(&stats);
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut accept = |item: Inbound, heap: &mut BinaryHeap<Reverse<Pending>>| match schedule
        .on_datagram(item.arrived, item.data.len())
    {
        Verdict::Drop(DropReason::Loss) => bump(&counters.dropped_loss),
        Verdict::Drop(DropReason::QueueFull) => bump(&counters.dropped_queue),
        Verdict::DeliverAt(at) => {
            seq += 1;
            heap.push(Reverse(Pending {
                at,
                seq,
                data: item.data,
                egress: item.egress,
            }));
        }
    };
    loop {
        let next = heap.peek().map(|Reverse(p)| p.at);
        tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => accept(item, &mut heap),
                None => return,
            },
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into()),
                if next.is_some() => {}
        }
        // Take what else is waiting, but bounded so deliveries are never starved.
        for _ in 0..256 {
            match rx.try_recv() {
                Ok(item) => accept(item, &mut heap),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = heap.pop() else { break };
            let sent = match &p.egress {
                Egress::Connected(sock) => sock.send(&p.data).await,
                Egress::To(sock, addr) => sock.send_to(&p.data, *addr).await,
            };
            match sent {
                Ok(_) => bump(&counters.forwarded),
                Err(_) => bump(&counters.send_errors),
            }
        }
        stats.notify();
    }
}

/// Reads the target's replies for one client and hands them to the downstream scheduler.
async fn run_flow(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<ProxyStats>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(n) => {
                let item = Inbound {
                    arrived: Instant::now(),
                    data: buf[..n].to_vec(),
                    egress: Egress::To(Arc::clone(&listen), client),
                };
                if !hand_over(&tx, &stats, Direction::Down, item) {
                    return;
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                eprintln!("impair-proxy: flow {client}: receive failed, closing it: {e}");
                return;
            }
        }
    }
}

/// The proxy, bound and validated but not yet running.
#[derive(Debug)]
pub struct ImpairProxy {
    listen: Arc<UdpSocket>,
    local: SocketAddr,
    target: SocketAddr,
    up: ImpairmentSchedule,
    down: ImpairmentSchedule,
    stats: Arc<ProxyStats>,
}

impl ImpairProxy {
    /// Takes over `listen` (already bound) in front of `target`. Must be called inside a tokio
    /// runtime.
    pub fn new(
        listen: std::net::UdpSocket,
        target: SocketAddr,
        cfg_up: ImpairConfig,
        cfg_down: ImpairConfig,
    ) -> io::Result<Self> {
        let local = listen.local_addr()?;
        if local.is_ipv4() != target.is_ipv4() {
            return Err(ConfigError::AddressFamilyMismatch {
                listen: local,
                target,
            }
            .into());
        }
        let up = ImpairmentSchedule::new(cfg_up)?;
        let down = ImpairmentSchedule::new(cfg_down)?;
        listen.set_nonblocking(true)?;
        let listen = Arc::new(UdpSocket::from_std(listen)?);
        Ok(Self {
            listen,
            local,
            target,
            up,
            down,
            stats: Arc::default(),
        })
    }

    /// Binds `listen` (port 0 picks one) in front of `target`.
    pub async fn bind(
        listen: SocketAddr,
        target: SocketAddr,
        cfg_up: ImpairConfig,
        cfg_down: ImpairConfig,
    ) -> io::Result<Self> {
        let sock = UdpSocket::bind(listen).await?.into_std()?;
        Self::new(sock, target, cfg_up, cfg_down)
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address datagrams are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The proxy's counters, live while it runs.
    pub fn stats(&self) -> Arc<ProxyStats> {
        Arc::clone(&self.stats)
    }

    /// Relays until an unrecoverable socket error. Dropping the future stops every task.
    pub async fn run(self) -> io::Result<()> {
        let Self {
            listen,
            local,
            target,
            up,
            down,
            stats,
        } = self;
        let mut tasks = JoinSet::new();
        let (up_tx, up_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (down_tx, down_rx) = mpsc::channel(CHANNEL_CAPACITY);
        tasks.spawn(run_direction(up, up_rx, Arc::clone(&stats), Direction::Up));
        tasks.spawn(run_direction(
            down,
            down_rx,
            Arc::clone(&stats),
            Direction::Down,
        ));

        let upstream_bind = SocketAddr::new(local.ip(), 0);
        let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, client) = tokio::select! {
                received = listen.recv_from(&mut buf) => match received {
                    Ok(r) => r,
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => return Err(e),
                },
                Some(joined) = tasks.join_next() => {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        return Err(io::Error::other("impair-proxy: a task panicked"));
                    }
                    continue;
                }
            };
            let arrived = Instant::now();
            let upstream = match flows.entry(client) {
                Entry::Occupied(o) => Arc::clone(o.get()),
                Entry::Vacant(v) => {
                    let opened = if v.key().is_ipv4() != target.is_ipv4() {
                        Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "address family",
                        ))
                    } else if flows_len_exceeded(stats.flows.load(AtomicOrdering::Relaxed)) {
                        Err(io::Error::other("too many client flows"))
                    } else {
                        open_upstream(upstream_bind, target).await
                    };
                    match opened {
                        Ok(sock) => {
                            let sock = Arc::new(sock);
                            stats.flows.fetch_add(1, AtomicOrdering::Relaxed);
                            tasks.spawn(run_flow(
                                Arc::clone(&sock),
                                Arc::clone(&listen),
                                client,
                                down_tx.clone(),
                                Arc::clone(&stats),
                            ));
                            v.insert(Arc::clone(&sock));
                            sock
                        }
                        Err(e) => {
                            eprintln!("impair-proxy: cannot open a flow for {client}: {e}");
                            bump(&stats.up.received);
                            bump(&stats.up.dropped_unroutable);
                            stats.notify();
                            continue;
                        }
                    }
                }
            };
            let item = Inbound {
                arrived,
                data: buf[..n].to_vec(),
                egress: Egress::Connected(upstream),
            };
            if !hand_over(&up_tx, &stats, Direction::Up, item) {
                return Err(io::Error::other("impair-proxy: upstream scheduler stopped"));
            }
        }
    }
}

fn flows_len_exceeded(flows: u64) -> bool {
    flows >= MAX_FLOWS as u64
}

async fn open_upstream(bind: SocketAddr, target: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(target).await?;
    Ok(sock)
}

/// Runs a proxy on `listen` in front of `target` until an unrecoverable socket error.
pub async fn run_proxy(
    listen: std::net::UdpSocket,
    target: SocketAddr,
    cfg_up: ImpairConfig,
    cfg_down: ImpairConfig,
) -> io::Result<()> {
    ImpairProxy::new(listen, target, cfg_up, cfg_down)?
        .run()
        .await
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// User-space UDP impairment proxy: delay, jitter, loss and a rate limit, per direction.
#[derive(Parser, Debug)]
#[command(name = "impair-proxy")]
struct Args {
    /// UDP address to listen on (port 0 picks one; the ready line shows it).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// UDP address to forward to.
    #[arg(long)]
    target: SocketAddr,
    /// One-way delay in milliseconds, applied to each direction.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Uniform ± jitter in milliseconds added to the delay (may reorder datagrams).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability (0.0–1.0) of dropping each datagram, per direction.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Link rate per direction in kbit/s; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    rate_kbps: u64,
    /// Rate limiter queue bound in datagrams per direction; excess is dropped and counted.
    #[arg(long, default_value_t = DEFAULT_QUEUE_LIMIT)]
    queue_packets: usize,
    /// RNG seed (the downstream direction uses a fixed derivation of it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Args {
    fn configs(&self) -> Result<(ImpairConfig, ImpairConfig), ConfigError> {
        let rate_bps = self
            .rate_kbps
            .checked_mul(1000)
            .ok_or(ConfigError::RateTooLarge(self.rate_kbps))?;
        let up = ImpairConfig {
            delay: Duration::from_millis(self.delay_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            loss: self.loss,
            rate_bps,
            queue_limit: self.queue_packets,
            seed: self.seed,
        };
        up.validate()?;
        let down = ImpairConfig {
            seed: self.seed.wrapping_add(DOWN_SEED_OFFSET),
            ..up.clone()
        };
        Ok((up, down))
    }
}

/// The `impair-proxy` command line: parses flags (exiting with usage on bad syntax), prints
/// `impair-proxy ready: listen <addr> target <addr>` to stdout once bound, relays until SIGTERM
/// or ctrl-c, then prints a summary of the counters to stderr.
pub fn main_from_args() -> Result<(), ImpairError> {
    let args = Args::parse();
    let (up, down) = args.configs()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let proxy = ImpairProxy::bind(args.listen, args.target, up, down).await?;
        let stats = proxy.stats();
        {
            let mut out = io::stdout().lock();
            writeln!(
                out,
                "impair-proxy ready: listen {} target {}",
                proxy.local_addr(),
                args.target
            )?;
            out.flush()?;
        }
        let result = tokio::select! {
            r = proxy.run() => r,
            r = shutdown_signal() => r,
        };
        eprintln!("impair-proxy summary: {}", stats.snapshot());
        result.map_err(ImpairError::from)
    })
}

/// Completes on SIGTERM or ctrl-c (SIGINT).
async fn shutdown_signal() -> io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn schedule(cfg: ImpairConfig) -> ImpairmentSchedule {
        ImpairmentSchedule::new(cfg).expect("valid config")
    }

    fn deliver_at(v: Verdict) -> Instant {
        match v {
            Verdict::DeliverAt(at) => at,
            Verdict::Drop(r) => panic!("unexpected drop: {r:?}"),
        }
    }

    #[test]
    fn passthrough_delivers_immediately() {
        let mut s = schedule(ImpairConfig::default());
        let t0 = Instant::now();
        for i in 0..100 {
            let now = t0 + i * MS;
            assert_eq!(s.on_datagram(now, 1200), Verdict::DeliverAt(now));
        }
    }

    #[test]
    fn loss_fraction_matches_probability() {
        for (loss, seed) in [(0.1, 7), (0.5, 42), (0.9, 1)] {
            let mut s = schedule(ImpairConfig {
                loss,
                seed,
                ..ImpairConfig::default()
            });
            let t0 = Instant::now();
            let n = 10_000;
            let lost = (0..n)
                .filter(|_| s.on_datagram(t0, 100) == Verdict::Drop(DropReason::Loss))
                .count();
            let frac = lost as f64 / f64::from(n);
            assert!(
                (frac - loss).abs() < 0.02,
                "loss {loss}: dropped fraction {frac}"
            );
        }
    }

    #[test]
    fn loss_extremes() {
        let t0 = Instant::now();
        let mut all = schedule(ImpairConfig {
            loss: 1.0,
            ..ImpairConfig::default()
        });
        let mut none = schedule(ImpairConfig {
            loss: 0.0,
            ..ImpairConfig::default()
        });
        for _ in 0..1000 {
            assert_eq!(all.on_datagram(t0, 10), Verdict::Drop(DropReason::Loss));
            assert_eq!(none.on_datagram(t0, 10), Verdict::DeliverAt(t0));
        }
    }

    #[test]
    fn same_seed_same_verdicts_other_seed_differs() {
        let cfg = ImpairConfig {
            loss: 0.3,
            jitter: 5 * MS,
            delay: 10 * MS,
            ..Default::default()
        };
        let t0 = Instant::now();
        let run = |seed| {
            let mut s = schedule(ImpairConfig {
                seed,
                ..cfg.clone()
            });
            (0..1000)
                .map(|i| s.on_datagram(t0 + i * MS, 500))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn delay_is_exact_without_jitter() {
        let mut s = schedule(ImpairConfig {
            delay: 20 * MS,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        for i in 0..1000 {
            let now = t0 + i * Duration::from_micros(137);
            assert_eq!(s.on_datagram(now, 1200), Verdict::DeliverAt(now + 20 * MS));
        }
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let mut s = schedule(ImpairConfig {
            delay: 50 * MS,
            jitter: 10 * MS,
            seed: 9,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..10_000)
            .map(|_| deliver_at(s.on_datagram(t0, 100)) - t0)
            .collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min >= 40 * MS && max <= 60 * MS, "range {min:?}..{max:?}");
        assert!(
            min < 41 * MS && max > 59 * MS,
            "jitter did not spread: {min:?}..{max:?}"
        );
        let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
        assert!(mean > 49 * MS && mean < 51 * MS, "mean {mean:?}");
    }

    #[test]
    fn jitter_larger_than_delay_never_delivers_early() {
        let mut s = schedule(ImpairConfig {
            delay: 2 * MS,
            jitter: 10 * MS,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..10_000 {
            let at = deliver_at(s.on_datagram(t0, 100));
            assert!(at >= t0 && at <= t0 + 12 * MS);
        }
    }

    #[test]
    fn rate_limit_spaces_a_burst() {
        // 100 × 1000 bytes at 800 kbit/s: 10 ms each, 1 s in all.
        let mut s = schedule(ImpairConfig {
            rate_bps: 800_000,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        let times: Vec<Instant> = (0..100)
            .map(|_| deliver_at(s.on_datagram(t0, 1000)))
            .collect();
        assert_eq!(times[0], t0 + 10 * MS);
        for w in times.windows(2) {
            assert_eq!(w[1] - w[0], 10 * MS);
        }
        assert_eq!(*times.last().unwrap() - t0, Duration::from_secs(1));
    }

    #[test]
    fn rate_limit_adds_delay_after_serialization() {
        let mut s = schedule(ImpairConfig {
            rate_bps: 800_000,
            delay: 30 * MS,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        assert_eq!(s.on_datagram(t0, 1000), Verdict::DeliverAt(t0 + 40 * MS));
        assert_eq!(s.on_datagram(t0, 1000), Verdict::DeliverAt(t0 + 50 * MS));
    }

    #[test]
    fn paced_below_rate_does_not_queue() {
        let mut s = schedule(ImpairConfig {
            rate_bps: 800_000,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        for i in 0..100 {
            let now = t0 + i * 20 * MS; // 1000 bytes every 20 ms = 400 kbit/s
            assert_eq!(s.on_datagram(now, 1000), Verdict::DeliverAt(now + 10 * MS));
            assert_eq!(s.queued(), 1);
        }
    }

    #[test]
    fn queue_bound_drops_the_excess_then_recovers() {
        let mut s = schedule(ImpairConfig {
            rate_bps: 800_000,
            queue_limit: 256,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..300).map(|_| s.on_datagram(t0, 1000)).collect();
        let delivered = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::DeliverAt(_)))
            .count();
        let full = verdicts
            .iter()
            .filter(|v| **v == Verdict::Drop(DropReason::QueueFull))
            .count();
        assert_eq!((delivered, full), (256, 44));
        assert!(
            verdicts[..256]
                .iter()
                .all(|v| matches!(v, Verdict::DeliverAt(_)))
        );
        // 25 ms later two datagrams have left: room for exactly two more, queued behind the rest.
        let t1 = t0 + 25 * MS;
        assert_eq!(s.on_datagram(t1, 1000), Verdict::DeliverAt(t0 + 2570 * MS));
        assert_eq!(s.on_datagram(t1, 1000), Verdict::DeliverAt(t0 + 2580 * MS));
        assert_eq!(
            s.on_datagram(t1, 1000),
            Verdict::Drop(DropReason::QueueFull)
        );
        // Once drained the link is idle again.
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(s.on_datagram(t2, 1000), Verdict::DeliverAt(t2 + 10 * MS));
        assert_eq!(s.queued(), 1);
    }

    #[test]
    fn lost_datagrams_still_use_the_link() {
        let mut s = schedule(ImpairConfig {
            rate_bps: 800_000,
            loss: 0.5,
            seed: 5,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..100).map(|_| s.on_datagram(t0, 1000)).collect();
        for (i, v) in verdicts.iter().enumerate() {
            if let Verdict::DeliverAt(at) = v {
                assert_eq!(*at, t0 + (i as u32 + 1) * 10 * MS);
            }
        }
    }

    #[test]
    fn time_going_backwards_and_extreme_sizes_do_not_panic() {
        let mut s = schedule(ImpairConfig {
            rate_bps: 1,
            delay: MAX_DELAY,
            queue_limit: 10,
            ..ImpairConfig::default()
        });
        let t0 = Instant::now() + Duration::from_secs(10);
        let _ = s.on_datagram(t0, MAX_DATAGRAM);
        let _ = s.on_datagram(t0 - Duration::from_secs(5), MAX_DATAGRAM);
        let _ = s.on_datagram(t0, usize::MAX);
        let _ = s.on_datagram(t0, 0);
        let mut plain = schedule(ImpairConfig {
            delay: 5 * MS,
            ..ImpairConfig::default()
        });
        assert_eq!(plain.on_datagram(t0, 0), Verdict::DeliverAt(t0 + 5 * MS));
        // An earlier `now` is treated as the latest seen.
        assert_eq!(
            plain.on_datagram(t0 - Duration::from_secs(1), 0),
            Verdict::DeliverAt(t0 + 5 * MS)
        );
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = [
            (
                ImpairConfig {
                    loss: 1.5,
                    ..Default::default()
                },
                "loss",
            ),
            (
                ImpairConfig {
                    loss: -0.1,
                    ..Default::default()
                },
                "loss",
            ),
            (
                ImpairConfig {
                    loss: f64::NAN,
                    ..Default::default()
                },
                "loss",
            ),
            (
                ImpairConfig {
                    rate_bps: 1000,
                    queue_limit: 0,
                    ..Default::default()
                },
                "queue",
            ),
            (
                ImpairConfig {
                    delay: MAX_DELAY,
                    jitter: MS,
                    ..Default::default()
                },
                "delay",
            ),
        ];
        for (cfg, what) in bad {
            let err = ImpairmentSchedule::new(cfg.clone()).expect_err(what);
            assert!(err.to_string().contains(what), "{cfg:?}: {err}");
        }
        // A zero queue is fine without a rate limit.
        assert!(
            ImpairConfig {
                queue_limit: 0,
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn cli_flags_build_both_directions() {
        let args = Args::try_parse_from([
            "impair-proxy",
            "--target",
            "127.0.0.1:9",
            "--delay-ms",
            "20",
            "--jitter-ms",
            "3",
            "--loss",
            "0.25",
            "--rate-kbps",
            "800",
            "--queue-packets",
            "64",
            "--seed",
            "11",
        ])
        .expect("valid flags");
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        let (up, down) = args.configs().expect("valid configs");
        assert_eq!(up.delay, 20 * MS);
        assert_eq!(up.jitter, 3 * MS);
        assert_eq!(up.loss, 0.25);
        assert_eq!(up.rate_bps, 800_000);
        assert_eq!(up.queue_limit, 64);
        assert_eq!(up.seed, 11);
        assert_eq!(
            ImpairConfig {
                seed: up.seed,
                ..down.clone()
            },
            up
        );
        assert_ne!(down.seed, up.seed);

        let args = Args::try_parse_from(["impair-proxy", "--target", "127.0.0.1:9", "--loss", "2"])
            .expect("syntactically valid");
        assert!(matches!(
            args.configs(),
            Err(ConfigError::LossOutOfRange(_))
        ));
        let args = Args::try_parse_from([
            "impair-proxy",
            "--target",
            "127.0.0.1:9",
            "--rate-kbps",
            &u64::MAX.to_string(),
        ])
        .expect("syntactically valid");
        assert!(matches!(args.configs(), Err(ConfigError::RateTooLarge(_))));
        assert!(
            Args::try_parse_from(["impair-proxy"]).is_err(),
            "--target is required"
        );
    }

    // --- Through real sockets (loopback only) ---------------------------------------------

    const DEADLINE: Duration = Duration::from_secs(20);

    /// A UDP echo server on 127.0.0.1; returns its address.
    async fn echo_server(tasks: &mut JoinSet<()>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tasks.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    /// Starts a proxy on 127.0.0.1:0; returns its address and counters.
    async fn start_proxy(
        tasks: &mut JoinSet<()>,
        target: SocketAddr,
        up: ImpairConfig,
        down: ImpairConfig,
    ) -> (SocketAddr, Arc<ProxyStats>) {
        let listen = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let proxy = ImpairProxy::new(listen, target, up, down).unwrap();
        let (addr, stats) = (proxy.local_addr(), proxy.stats());
        assert_ne!(addr.port(), 0);
        tasks.spawn(async move {
            proxy.run().await.expect("proxy failed");
        });
        (addr, stats)
    }

    /// A client connected to `proxy`; its echoes (sequence number, arrival time) come out of the
    /// returned channel.
    async fn client(
        tasks: &mut JoinSet<()>,
        proxy: SocketAddr,
    ) -> (Arc<UdpSocket>, mpsc::UnboundedReceiver<(u32, Instant)>) {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        sock.connect(proxy).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = Arc::clone(&sock);
        tasks.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok(n) = reader.recv(&mut buf).await {
                let at = Instant::now();
                if n >= 4 {
                    let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    if tx.send((seq, at)).is_err() {
                        return;
                    }
                }
            }
        });
        (sock, rx)
    }

    /// Sends `n` numbered datagrams, `window` at a time, waiting after each window until the
    /// proxy has read them all (so no socket buffer overflows); returns the send instants.
    async fn send_numbered(
        sock: &UdpSocket,
        stats: &ProxyStats,
        n: u32,
        window: u32,
        payload: usize,
    ) -> Vec<Instant> {
        let mut sent = Vec::with_capacity(n as usize);
        let mut data = vec![0xA5u8; payload.max(4)];
        for seq in 0..n {
            data[..4].copy_from_slice(&seq.to_be_bytes());
            sent.push(Instant::now());
            sock.send(&data).await.unwrap();
            if (seq + 1) % window == 0 || seq + 1 == n {
                let base = u64::from(seq + 1);
                stats.wait_until(|s| s.up.received >= base).await;
            }
        }
        sent
    }

    #[tokio::test]
    async fn proxy_echo_delay_without_loss() {
        let mut tasks = JoinSet::new();
        let echo = echo_server(&mut tasks).await;
        let cfg = ImpairConfig {
            delay: 20 * MS,
            ..ImpairConfig::default()
        };
        let (proxy, stats) = start_proxy(&mut tasks, echo, cfg.clone(), cfg).await;
        let (sock, mut echoes) = client(&mut tasks, proxy).await;

        tokio::time::timeout(DEADLINE, async {
            let n = 200;
            let sent = send_numbered(&sock, &stats, n, 20, 100).await;
            let mut seen = vec![false; n as usize];
            for _ in 0..n {
                let (seq, at) = echoes.recv().await.expect("client reader stopped");
                let rtt = at - sent[seq as usize];
                assert!(rtt >= 40 * MS, "datagram {seq}: RTT {rtt:?} < 40 ms");
                assert!(
                    !std::mem::replace(&mut seen[seq as usize], true),
                    "duplicate {seq}"
                );
            }
            let snap = stats.wait_until(|s| s.down.settled() == u64::from(n)).await;
            assert_eq!(snap.up.forwarded, u64::from(n));
            assert_eq!(snap.down.forwarded, u64::from(n));
            assert_eq!(snap.up.dropped() + snap.down.dropped(), 0);
            assert_eq!(snap.flows, 1);
        })
        .await
        .expect("timed out");
        tasks.abort_all();
    }

    #[tokio::test]
    async fn proxy_loss_applies_per_direction() {
        let mut tasks = JoinSet::new();
        let echo = echo_server(&mut tasks).await;
        let up = ImpairConfig {
            loss: 0.5,
            seed: 1234,
            ..ImpairConfig::default()
        };
        let down = ImpairConfig {
            seed: 5678,
            ..up.clone()
        };
        let (proxy, stats) = start_proxy(&mut tasks, echo, up, down).await;
        let (sock, mut echoes) = client(&mut tasks, proxy).await;

        tokio::time::timeout(DEADLINE, async {
            let n: u64 = 2000;
            send_numbered(&sock, &stats, n as u32, 50, 64).await;
            // Every datagram settled in both directions: each that went up came back to the
            // proxy, and every one of those was forwarded or dropped.
            let snap = stats
                .wait_until(|s| {
                    s.up.settled() == n
                        && s.down.received == s.up.forwarded
                        && s.down.settled() == s.down.received
                })
                .await;
            for _ in 0..snap.down.forwarded {
                echoes.recv().await.expect("client reader stopped");
            }
            let up_frac = snap.up.forwarded as f64 / n as f64;
            let down_frac = snap.down.forwarded as f64 / snap.up.forwarded as f64;
            let back_frac = snap.down.forwarded as f64 / n as f64;
            assert!(
                (up_frac - 0.5).abs() < 0.05,
                "up delivered {up_frac}: {snap}"
            );
            assert!(
                (down_frac - 0.5).abs() < 0.07,
                "down delivered {down_frac}: {snap}"
            );
            assert!(
                (back_frac - 0.25).abs() < 0.05,
                "returned {back_frac}: {snap}"
            );
            assert_eq!(snap.up.dropped_loss + snap.up.forwarded, n);
            assert_eq!(snap.up.send_errors + snap.down.send_errors, 0);
        })
        .await
        .expect("timed out");
        tasks.abort_all();
    }

    #[tokio::test]
    async fn proxy_keeps_clients_apart_and_carries_max_size_datagrams() {
        let mut tasks = JoinSet::new();
        let echo = echo_server(&mut tasks).await;
        let cfg = ImpairConfig {
            delay: MS,
            ..ImpairConfig::default()
        };
        let (proxy, stats) = start_proxy(&mut tasks, echo, cfg.clone(), cfg).await;
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.connect(proxy).await.unwrap();
        b.connect(proxy).await.unwrap();

        tokio::time::timeout(DEADLINE, async {
            // Largest UDP payload over IPv4.
            let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
            a.send(&big).await.unwrap();
            b.send(b"from b").await.unwrap();
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let n = a.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &big[..]);
            let n = b.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"from b");
            let snap = stats.wait_until(|s| s.down.settled() == 2).await;
            assert_eq!(snap.flows, 2);
        })
        .await
        .expect("timed out");
        tasks.abort_all();
    }

    #[tokio::test]
    async fn proxy_rejects_mismatched_families_and_bad_configs() {
        let listen = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = ImpairProxy::new(
            listen,
            "[::1]:9".parse().unwrap(),
            ImpairConfig::default(),
            ImpairConfig::default(),
        )
        .expect_err("family mismatch");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let listen = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bad = ImpairConfig {
            loss: 3.0,
            ..ImpairConfig::default()
        };
        let err = run_proxy(
            listen,
            "127.0.0.1:9".parse().unwrap(),
            bad,
            ImpairConfig::default(),
        )
        .await
        .expect_err("bad loss");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
