//! `loadgen::client_loop`: the I/O shell around [`Session`]s — a few event-loop threads, each
//! owning many sessions and their UDP sockets, and the async handles the signalling side uses.
//!
//! Each loop is one OS thread with a `mio` poll (epoll) over its sessions' sockets, a timer heap
//! (one live entry per session: the earliest of the session's `poll_timeout`s, stale entries
//! skipped when popped) and a command queue woken by a `mio::Waker`. A readable socket is drained
//! until it would block, every datagram is handed to its session with `Instant::now()` as the
//! arrival time, and what the session then wants to send goes out on the same socket at once.
//! No task, channel or lock sits on the packet path; the loop's [`Recorder`] takes the
//! measurements of all its subscribers.
//!
//! [`ClientLoops`] starts the threads; [`ClientLoops::open`] makes a session on one of them and
//! returns a [`SessionHandle`], which implements [`Negotiator`] (offer, answer) and waits for the
//! connection. Dropping [`ClientLoops`] stops the threads.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{oneshot, watch};

use super::error::LoadgenError;
use super::measure::{Recorder, Report, Window};
use super::proc_stats;
use super::session::{Role, Session, SessionCounters, SessionState};
use super::signalling::Negotiator;
use super::synthetic::MediaClock;

const WAKER: Token = Token(usize::MAX);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// Figures of one loop.
#[derive(Debug, Clone, Default)]
pub struct LoopReport {
    pub measure: Report,
    /// Sessions open, and how many of them are connected.
    pub sessions: usize,
    pub connected: usize,
    /// Sessions that ended on their own (failed), since the start, and why.
    pub failed: usize,
    pub failed_reasons: std::collections::BTreeMap<String, usize>,
    /// Of those, sessions that had been connected.
    pub dropped_after_connect: usize,
    /// Summed counters of the sessions open now and of those closed.
    pub counters: SessionCounters,
    pub send_errors: u64,
    pub recv_errors: u64,
    /// Datagrams read, and readable events handled (datagrams per wake-up = batching).
    pub datagrams: u64,
    pub wakeups: u64,
    /// CPU time of the loop thread since it started.
    pub thread_cpu: Duration,
    /// Markers with a send time outside the window, payloads without marker.
    pub outside_window: u64,
    pub unmarked: u64,
}

impl LoopReport {
    /// Adds `other` to these figures.
    pub fn merge(&mut self, other: &LoopReport) {
        self.measure.merge(&other.measure);
        self.sessions += other.sessions;
        self.connected += other.connected;
        self.failed += other.failed;
        for (reason, n) in &other.failed_reasons {
            *self.failed_reasons.entry(reason.clone()).or_default() += n;
        }
        self.dropped_after_connect += other.dropped_after_connect;
        add_counters(&mut self.counters, &other.counters);
        self.send_errors += other.send_errors;
        self.recv_errors += other.recv_errors;
        self.datagrams += other.datagrams;
        self.wakeups += other.wakeups;
        self.thread_cpu += other.thread_cpu;
        self.outside_window += other.outside_window;
        self.unmarked += other.unmarked;
    }
}

fn add_counters(a: &mut SessionCounters, b: &SessionCounters) {
    a.datagrams_in += b.datagrams_in;
    a.refused_in += b.refused_in;
    a.rtp_in += b.rtp_in;
    a.rtcp_in += b.rtcp_in;
    a.rtp_out += b.rtp_out;
    a.keyframe_requests += b.keyframe_requests;
    a.write_errors += b.write_errors;
}

type Reply<T> = oneshot::Sender<Result<T, LoadgenError>>;

enum Command {
    Open {
        id: u64,
        bind: IpAddr,
        role: Role,
        state: watch::Sender<SessionState>,
        reply: Reply<SocketAddr>,
    },
    Offer {
        id: u64,
        reply: Reply<String>,
    },
    AcceptAnswer {
        id: u64,
        sdp: String,
        reply: Reply<()>,
    },
    AnswerOffer {
        id: u64,
        sdp: String,
        reply: Reply<String>,
    },
    Close {
        id: u64,
    },
    SetWindow {
        window: Window,
    },
    Report {
        reply: oneshot::Sender<LoopReport>,
    },
    Shutdown,
}

/// The sending side of one loop's command queue.
#[derive(Clone)]
struct LoopRef {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl LoopRef {
    fn send(&self, command: Command) -> Result<(), LoadgenError> {
        self.tx.send(command).map_err(|_| LoadgenError::LoopGone)?;
        self.waker.wake().map_err(LoadgenError::Io)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, LoadgenError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| LoadgenError::LoopGone)?
    }
}

/// The load generator's event loops (see the module doc).
pub struct ClientLoops {
    loops: Vec<LoopRef>,
    threads: Vec<JoinHandle<()>>,
    next_loop: AtomicUsize,
    next_id: std::sync::atomic::AtomicU64,
    bind_ip: IpAddr,
}

impl ClientLoops {
    /// Starts `count` loop threads whose sessions bind UDP sockets on `bind_ip` (port 0) and
    /// stamp/measure on `clock`.
    pub fn start(count: usize, bind_ip: IpAddr, clock: MediaClock) -> Result<Self, LoadgenError> {
        let mut loops = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            let event_loop = EventLoop::new(poll, rx, clock);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("loadgen-{index}"))
                    .spawn(move || event_loop.run())?,
            );
            loops.push(LoopRef { tx, waker });
        }
        Ok(Self {
            loops,
            threads,
            next_loop: AtomicUsize::new(0),
            next_id: std::sync::atomic::AtomicU64::new(1),
            bind_ip,
        })
    }

    /// Number of loops.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
    }

    /// A new session on the next loop (round robin).
    pub async fn open(&self, role: Role) -> Result<SessionHandle, LoadgenError> {
        let index = self.next_loop.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.open_on(index, role).await
    }

    /// A new session on loop `index` (modulo the number of loops).
    pub async fn open_on(&self, index: usize, role: Role) -> Result<SessionHandle, LoadgenError> {
        let target = self.loops[index % self.loops.len()].clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (state_tx, state_rx) = watch::channel(SessionState::New);
        let local = target
            .call(|reply| Command::Open {
                id,
                bind: self.bind_ip,
                role,
                state: state_tx,
                reply,
            })
            .await?;
        Ok(SessionHandle {
            target,
            id,
            local,
            state: state_rx,
        })
    }

    /// From now on, every loop records only packets sent in `window`, starting from zero.
    pub fn set_window(&self, window: Window) -> Result<(), LoadgenError> {
        for l in &self.loops {
            l.send(Command::SetWindow { window })?;
        }
        Ok(())
    }

    /// Each loop's figures.
    pub async fn reports(&self) -> Result<Vec<LoopReport>, LoadgenError> {
        let mut out = Vec::new();
        for l in &self.loops {
            let (reply, rx) = oneshot::channel();
            l.send(Command::Report { reply })?;
            out.push(rx.await.map_err(|_| LoadgenError::LoopGone)?);
        }
        Ok(out)
    }
}

impl Drop for ClientLoops {
    fn drop(&mut self) {
        for l in &self.loops {
            let _ = l.send(Command::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The async side of one session.
pub struct SessionHandle {
    target: LoopRef,
    id: u64,
    local: SocketAddr,
    state: watch::Receiver<SessionState>,
}

impl SessionHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session's UDP socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn state(&self) -> SessionState {
        self.state.borrow().clone()
    }

    /// Waits until the session is connected; fails if it ends first or `timeout` passes.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<(), LoadgenError> {
        let id = self.id;
        let wait = self
            .state
            .wait_for(|s| matches!(s, SessionState::Connected | SessionState::Ended(_)));
        let state = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => Some(s.clone()),
            Ok(Err(_)) => return Err(LoadgenError::LoopGone),
            Err(_) => None,
        };
        let Some(state) = state else {
            return Err(LoadgenError::ConnectTimeout {
                id,
                after: timeout,
                state: format!("{:?}", *self.state.borrow()),
            });
        };
        match state {
            SessionState::Connected => Ok(()),
            other => Err(LoadgenError::ConnectionFailed {
                id,
                state: format!("{other:?}"),
            }),
        }
    }

    /// Closes the session (its loop sends the DTLS close and forgets it).
    pub fn close(&self) {
        let _ = self.target.send(Command::Close { id: self.id });
    }
}

#[async_trait::async_trait]
impl Negotiator for SessionHandle {
    async fn offer(&mut self) -> Result<String, LoadgenError> {
        let id = self.id;
        self.target.call(|reply| Command::Offer { id, reply }).await
    }

    async fn accept_answer(&mut self, sdp: String) -> Result<(), LoadgenError> {
        let id = self.id;
        self.target
            .call(|reply| Command::AcceptAnswer { id, sdp, reply })
            .await
    }

    async fn answer(&mut self, sdp: String) -> Result<String, LoadgenError> {
        let id = self.id;
        self.target
            .call(|reply| Command::AnswerOffer { id, sdp, reply })
            .await
    }
}

struct Slot {
    session: Session,
    socket: UdpSocket,
    state: watch::Sender<SessionState>,
    generation: u32,
    /// The time of this slot's live timer-heap entry.
    scheduled: Option<Instant>,
}

struct EventLoop {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    clock: MediaClock,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    generation: u32,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    recorder: Recorder,
    buf: Vec<u8>,
    /// Counters of sessions already closed.
    closed_counters: SessionCounters,
    failed: usize,
    failed_reasons: std::collections::BTreeMap<String, usize>,
    dropped_after_connect: usize,
    send_errors: u64,
    recv_errors: u64,
    datagrams: u64,
    wakeups: u64,
    due: Vec<(usize, u32)>,
}

impl EventLoop {
    fn new(poll: Poll, commands: mpsc::Receiver<Command>, clock: MediaClock) -> Self {
        Self {
            poll,
            commands,
            clock,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            generation: 0,
            timers: BinaryHeap::new(),
            recorder: Recorder::default(),
            buf: vec![0; MAX_DATAGRAM],
            closed_counters: SessionCounters::default(),
            failed: 0,
            failed_reasons: Default::default(),
            dropped_after_connect: 0,
            send_errors: 0,
            recv_errors: 0,
            datagrams: 0,
            wakeups: 0,
            due: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            self.fire_timers(Instant::now());
            let timeout = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    if !self.on_commands() {
                        return self.close_all();
                    }
                } else {
                    self.on_readable(event.token().0);
                }
            }
        }
        self.close_all();
    }

    fn close_all(&mut self) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Handles queued commands; false on shutdown.
    fn on_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            let now = Instant::now();
            match command {
                Command::Open {
                    id,
                    bind,
                    role,
                    state,
                    reply,
                } => {
                    let _ = reply.send(self.open(id, bind, role, state, now));
                }
                Command::Offer { id, reply } => {
                    let result = self.with_session(id, |s| s.create_offer(now));
                    let _ = reply.send(result);
                }
                Command::AcceptAnswer { id, sdp, reply } => {
                    let result = self.with_session(id, |s| s.apply_answer(sdp, now));
                    let _ = reply.send(result);
                }
                Command::AnswerOffer { id, sdp, reply } => {
                    let result = self.with_session(id, |s| s.answer_offer(sdp, now));
                    let _ = reply.send(result);
                }
                Command::Close { id } => self.close(id),
                Command::SetWindow { window } => self.recorder.reset(window),
                Command::Report { reply } => {
                    let _ = reply.send(self.report());
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn open(
        &mut self,
        id: u64,
        bind: IpAddr,
        role: Role,
        state: watch::Sender<SessionState>,
        now: Instant,
    ) -> Result<SocketAddr, LoadgenError> {
        let std_socket = std::net::UdpSocket::bind((bind, 0))?;
        std_socket.set_nonblocking(true)?;
        let local = std_socket.local_addr()?;
        let mut socket = UdpSocket::from_std(std_socket);
        let session = Session::new(id, role, local, self.clock, now)?;
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.poll
            .registry()
            .register(&mut socket, Token(index), Interest::READABLE)?;
        self.generation = self.generation.wrapping_add(1);
        self.slots[index] = Some(Slot {
            session,
            socket,
            state,
            generation: self.generation,
            scheduled: None,
        });
        self.by_id.insert(id, index);
        Ok(local)
    }

    /// Runs `f` on session `id`, then sends what it produced and re-arms its timer.
    fn with_session<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Session) -> Result<T, LoadgenError>,
    ) -> Result<T, LoadgenError> {
        let index = *self
            .by_id
            .get(&id)
            .ok_or(LoadgenError::UnknownSession(id))?;
        let slot = self.slots[index]
            .as_mut()
            .ok_or(LoadgenError::UnknownSession(id))?;
        let result = f(&mut slot.session);
        self.after_io(index);
        result
    }

    fn close(&mut self, id: u64) {
        let Some(index) = self.by_id.remove(&id) else {
            return;
        };
        let Some(mut slot) = self.slots[index].take() else {
            return;
        };
        slot.session.close();
        while let Some((data, to)) = slot.session.poll_transmit() {
            let _ = slot.socket.send_to(&data, to);
        }
        let _ = self.poll.registry().deregister(&mut slot.socket);
        slot.state.send_replace(slot.session.state().clone());
        add_counters(&mut self.closed_counters, &slot.session.counters);
        self.free.push(index);
    }

    fn on_readable(&mut self, index: usize) {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return;
        };
        self.wakeups += 1;
        loop {
            match slot.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    self.datagrams += 1;
                    let now = Instant::now();
                    slot.session
                        .handle_datagram(&self.buf[..n], from, now, &mut self.recorder);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.recv_errors += 1;
                    break;
                }
            }
        }
        self.after_io(index);
    }

    /// Sends what session `index` queued, publishes a state change, re-arms its timer, and
    /// drops it if it ended.
    fn after_io(&mut self, index: usize) {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return;
        };
        while let Some((data, to)) = slot.session.poll_transmit() {
            if slot.socket.send_to(&data, to).is_err() {
                self.send_errors += 1;
            }
        }
        let state = slot.session.state();
        let was_connected = *slot.state.borrow() == SessionState::Connected;
        if *slot.state.borrow() != *state {
            slot.state.send_replace(state.clone());
        }
        if let SessionState::Ended(reason) = state {
            self.failed += 1;
            *self.failed_reasons.entry(reason.clone()).or_default() += 1;
            self.dropped_after_connect += usize::from(was_connected);
            let id = slot.session.id();
            self.close(id);
            return;
        }
        if let Some(at) = slot.session.poll_timeout()
            && slot.scheduled.is_none_or(|s| at < s)
        {
            slot.scheduled = Some(at);
            self.timers.push(Reverse((at, index, slot.generation)));
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        self.due.clear();
        while let Some(Reverse((at, index, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            // Stale: the slot was reused, or this entry was superseded by an earlier one.
            if slot.generation != generation || slot.scheduled != Some(at) {
                continue;
            }
            slot.scheduled = None;
            self.due.push((index, generation));
        }
        for i in 0..self.due.len() {
            let (index, _) = self.due[i];
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.session.poll_timeout().is_some_and(|t| t <= now) {
                slot.session.handle_timeout(now, &mut self.recorder);
            }
            self.after_io(index);
        }
    }

    fn report(&self) -> LoopReport {
        let mut counters = self.closed_counters;
        let mut connected = 0;
        for slot in self.slots.iter().flatten() {
            add_counters(&mut counters, &slot.session.counters);
            if *slot.session.state() == SessionState::Connected {
                connected += 1;
            }
        }
        LoopReport {
            measure: self.recorder.report(),
            sessions: self.by_id.len(),
            connected,
            failed: self.failed,
            failed_reasons: self.failed_reasons.clone(),
            dropped_after_connect: self.dropped_after_connect,
            counters,
            send_errors: self.send_errors,
            recv_errors: self.recv_errors,
            datagrams: self.datagrams,
            wakeups: self.wakeups,
            thread_cpu: proc_stats::thread_cpu().unwrap_or_default(),
            outside_window: self.recorder.outside_window,
            unmarked: self.recorder.unmarked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::session::PublisherSpec;
    use crate::loadgen::synthetic::VideoConfig;

    /// Two loops on loopback: a publisher on one offers, a subscriber on the other answers;
    /// media flows through real sockets and the subscriber's loop measures it.
    #[tokio::test]
    async fn two_loops_carry_media_between_their_sessions_over_loopback() {
        let clock = MediaClock::new(Instant::now());
        let loops = ClientLoops::start(2, IpAddr::from([127, 0, 0, 1]), clock).unwrap();
        let spec = PublisherSpec {
            audio_bps: Some(32_000),
            video: Some(VideoConfig::single(500_000)),
            first_stream: 7,
        };
        let mut publisher = loops.open_on(0, Role::Publisher(spec)).await.unwrap();
        let mut subscriber = loops.open_on(1, Role::Subscriber).await.unwrap();
        assert!(publisher.local_addr().ip().is_loopback());
        let offer = publisher.offer().await.unwrap();
        let answer = subscriber.answer(offer).await.unwrap();
        publisher.accept_answer(answer).await.unwrap();
        publisher
            .wait_connected(Duration::from_secs(10))
            .await
            .unwrap();
        subscriber
            .wait_connected(Duration::from_secs(10))
            .await
            .unwrap();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let received = loop {
            tick.tick().await;
            let reports = loops.reports().await.unwrap();
            let video = reports[1].measure.streams.get(&8).map_or(0, |s| s.received);
            if video >= 60 || tokio::time::Instant::now() > deadline {
                break reports;
            }
        };
        let sub = &received[1];
        let video = &sub.measure.streams[&8];
        assert!(video.received >= 60, "{:?}", sub.counters);
        assert_eq!(video.lost, 0);
        assert!(sub.measure.streams[&7].received > 0, "audio arrives too");
        assert!(
            video.latency.value_at_quantile(0.5) < 50_000,
            "loopback latency in µs"
        );
        assert_eq!((received[0].connected, received[1].connected), (1, 1));
        assert!(received[1].thread_cpu > Duration::ZERO);

        subscriber.close();
        publisher.close();
        let reports = loops.reports().await.unwrap();
        assert_eq!(reports.iter().map(|r| r.sessions).sum::<usize>(), 0);
        assert_eq!(reports.iter().map(|r| r.failed).sum::<usize>(), 0);
        assert!(
            subscriber.offer().await.is_err(),
            "a closed session is gone"
        );
    }
}
