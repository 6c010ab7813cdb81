//! Round-trip time, datagram loss and throughput of one relay link, for metrics.
//!
//! Owns [`LinkQuality`]: the node keeps one per relay link and exports what it measures.
//!
//! - **RTT**: each sample updates `latest`, `min` and the RFC 6298 smoothed estimate
//!   (`srtt`, `rttvar`; gains 1/8 and 1/4, the first sample sets `srtt = R`, `rttvar = R / 2`).
//! - **Loss**: the sender stamps each media datagram with a per-link `u32` sequence number (which
//!   wraps); the receiver reports every one it gets. Sequence numbers are unwrapped to 64 bits and
//!   marked in a fixed bitmap of the last [`LOSS_WINDOW`] numbers, so reordered datagrams are
//!   simply marked when they come and duplicates are recognised. A number is *judged* (received or
//!   lost) only once it can no longer be merely late: at a [`LinkQuality::roll`], every number at
//!   least [`REORDER_WINDOW`] behind the highest received is judged, and so is every number that
//!   was already at or below the highest at the previous roll (it had a whole interval to arrive).
//!   A datagram arriving after its number was judged lost is counted as late, not un-lost. A
//!   forward jump of more than [`MAX_LINK_SEQ_JUMP`] is taken as a sender restart: the skipped
//!   range is not counted as lost.
//! - **Throughput**: bytes sent and received are summed per interval.
//!
//! The caller closes an interval (typically every second) with [`LinkQuality::roll`], which
//! returns that interval's [`IntervalStats`]. The per-datagram methods do not allocate.

use std::time::{Duration, Instant};

/// How many link sequence numbers the reception bitmap covers. Datagrams are never judged while
/// more recent than this, and must be (reordering tolerance ends) once this far behind.
pub const LOSS_WINDOW: u64 = 1 << 14;
/// At a roll, datagrams at least this far behind the highest received are judged even if they
/// were not yet received at the previous roll.
pub const REORDER_WINDOW: u64 = 128;
/// A forward jump in link sequence numbers larger than this is a sender restart, not loss.
pub const MAX_LINK_SEQ_JUMP: u64 = 1 << 15;

const BITMAP_WORDS: usize = (LOSS_WINDOW / 64) as usize;
/// Extended index given to the first datagram: one `u32` cycle in, so earlier numbers unwrap to a
/// non-negative index.
const FIRST_INDEX_BASE: u64 = 1 << 32;

/// What one closed interval measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntervalStats {
    /// From the start of the interval (the previous roll, or the first event) to this roll.
    pub duration: Duration,
    /// Datagram sequence numbers judged during the interval.
    pub expected: u64,
    /// Of those, how many never arrived.
    pub lost: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl IntervalStats {
    /// `lost / expected`, or `None` if nothing was judged in the interval.
    pub fn loss_fraction(&self) -> Option<f64> {
        (self.expected > 0).then(|| self.lost as f64 / self.expected as f64)
    }

    /// Datagrams judged received during the interval.
    pub fn received(&self) -> u64 {
        self.expected - self.lost
    }

    /// Send rate over the interval in bits per second (0 for an empty interval).
    pub fn send_bps(&self) -> u64 {
        bits_per_second(self.bytes_sent, self.duration)
    }

    /// Receive rate over the interval in bits per second (0 for an empty interval).
    pub fn recv_bps(&self) -> u64 {
        bits_per_second(self.bytes_received, self.duration)
    }
}

fn bits_per_second(bytes: u64, duration: Duration) -> u64 {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return 0;
    }
    let bps = u128::from(bytes) * 8 * 1_000_000_000 / nanos;
    u64::try_from(bps).unwrap_or(u64::MAX)
}

/// Statistics of one relay link.
#[derive(Debug, Clone)]
pub struct LinkQuality {
    // RTT.
    latest_rtt: Option<Duration>,
    min_rtt: Option<Duration>,
    srtt: Option<Duration>,
    rttvar: Duration,
    rtt_samples: u64,

    // Loss.
    /// Bit `index % LOSS_WINDOW` is set when datagram `index` (not yet judged) was received.
    received_bits: Box<[u64]>,
    /// Extended index of the highest link sequence number received.
    highest: Option<u64>,
    /// Every index below this has been judged; bits of judged indexes are clear.
    judged_up_to: u64,
    /// `highest + 1` as it was at the previous roll.
    roll_boundary: u64,
    /// Whether anything was judged since the first datagram (until then, a datagram numbered
    /// before the first one is a reordered start, not a late arrival).
    judged_any: bool,
    datagrams_received_total: u64,
    datagrams_lost_total: u64,
    duplicates_total: u64,
    late_total: u64,
    restarts_total: u64,

    // Throughput.
    bytes_sent_total: u64,
    bytes_received_total: u64,
    last_sent_at: Option<Instant>,
    last_received_at: Option<Instant>,

    // Current interval.
    interval_start: Option<Instant>,
    interval: IntervalStats,
    last_interval: Option<IntervalStats>,
}

impl LinkQuality {
    pub fn new() -> Self {
        Self {
            latest_rtt: None,
            min_rtt: None,
            srtt: None,
            rttvar: Duration::ZERO,
            rtt_samples: 0,
            received_bits: vec![0; BITMAP_WORDS].into_boxed_slice(),
            highest: None,
            judged_up_to: 0,
            roll_boundary: 0,
            judged_any: false,
            datagrams_received_total: 0,
            datagrams_lost_total: 0,
            duplicates_total: 0,
            late_total: 0,
            restarts_total: 0,
            bytes_sent_total: 0,
            bytes_received_total: 0,
            last_sent_at: None,
            last_received_at: None,
            interval_start: None,
            interval: IntervalStats::default(),
            last_interval: None,
        }
    }

    // ---- RTT ----

    /// Records one round-trip time measurement.
    pub fn on_rtt_sample(&mut self, rtt: Duration) {
        self.latest_rtt = Some(rtt);
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |min| min.min(rtt)));
        self.rtt_samples += 1;
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                self.rttvar = self.rttvar * 3 / 4 + srtt.abs_diff(rtt) / 4;
                self.srtt = Some(srtt * 7 / 8 + rtt / 8);
            }
        }
    }

    /// The most recent RTT sample.
    pub fn latest_rtt(&self) -> Option<Duration> {
        self.latest_rtt
    }

    /// The smallest RTT sample seen.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Smoothed RTT (RFC 6298 `SRTT`).
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTT variation (RFC 6298 `RTTVAR`).
    pub fn rttvar(&self) -> Option<Duration> {
        self.srtt.map(|_| self.rttvar)
    }

    pub fn rtt_samples(&self) -> u64 {
        self.rtt_samples
    }

    // ---- Loss ----

    /// Records the arrival of the media datagram stamped with `link_seq`.
    pub fn on_datagram_received(&mut self, link_seq: u32) {
        let Some(highest) = self.highest else {
            self.start_at(FIRST_INDEX_BASE + u64::from(link_seq));
            return;
        };
        let delta = i64::from(link_seq.wrapping_sub(highest as u32) as i32);
        let index = highest.saturating_add_signed(delta);
        if index > highest {
            if index - highest > MAX_LINK_SEQ_JUMP {
                self.judge_up_to(highest + 1);
                self.restarts_total += 1;
                self.start_at(index);
                return;
            }
            if index - self.judged_up_to >= LOSS_WINDOW {
                self.judge_up_to(index + 1 - LOSS_WINDOW);
            }
            self.highest = Some(index);
            self.set_bit(index);
            self.datagrams_received_total += 1;
        } else if index < self.judged_up_to {
            if !self.judged_any && highest - index < LOSS_WINDOW {
                // Reordered at the very start: the window simply starts earlier.
                self.judged_up_to = index;
                self.set_bit(index);
                self.datagrams_received_total += 1;
            } else {
                self.late_total += 1;
            }
        } else if self.bit(index) {
            self.duplicates_total += 1;
        } else {
            self.set_bit(index);
            self.datagrams_received_total += 1;
        }
    }

    /// Distinct datagrams received so far (duplicates not counted, late ones counted).
    pub fn datagrams_received_total(&self) -> u64 {
        self.datagrams_received_total
    }

    /// Datagrams judged lost so far.
    pub fn datagrams_lost_total(&self) -> u64 {
        self.datagrams_lost_total
    }

    /// Datagrams received more than once.
    pub fn duplicates_total(&self) -> u64 {
        self.duplicates_total
    }

    /// Datagrams that arrived after having been judged lost (they stay counted as lost).
    pub fn late_total(&self) -> u64 {
        self.late_total
    }

    /// Forward jumps of more than [`MAX_LINK_SEQ_JUMP`] (sender restarts).
    pub fn restarts_total(&self) -> u64 {
        self.restarts_total
    }

    // ---- Throughput ----

    /// Records `bytes` sent on the link at `now`.
    pub fn on_bytes_sent(&mut self, bytes: usize, now: Instant) {
        self.interval_start.get_or_insert(now);
        self.interval.bytes_sent += bytes as u64;
        self.bytes_sent_total += bytes as u64;
        self.last_sent_at = Some(now);
    }

    /// Records `bytes` received on the link at `now`.
    pub fn on_bytes_received(&mut self, bytes: usize, now: Instant) {
        self.interval_start.get_or_insert(now);
        self.interval.bytes_received += bytes as u64;
        self.bytes_received_total += bytes as u64;
        self.last_received_at = Some(now);
    }

    pub fn bytes_sent_total(&self) -> u64 {
        self.bytes_sent_total
    }

    pub fn bytes_received_total(&self) -> u64 {
        self.bytes_received_total
    }

    /// When bytes were last sent, if ever.
    pub fn last_sent_at(&self) -> Option<Instant> {
        self.last_sent_at
    }

    /// When bytes were last received, if ever (for liveness checks).
    pub fn last_received_at(&self) -> Option<Instant> {
        self.last_received_at
    }

    // ---- Intervals ----

    /// Closes the current interval at `now`, judges the datagrams that are due (see the module
    /// documentation) and returns the interval's statistics, which also become
    /// [`Self::last_interval`]. The next interval starts at `now`. The first interval starts at
    /// the first `now` passed to any method; a roll before that has a zero duration.
    pub fn roll(&mut self, now: Instant) -> IntervalStats {
        if let Some(highest) = self.highest {
            let settled = (highest + 1).saturating_sub(REORDER_WINDOW);
            self.judge_up_to(self.roll_boundary.max(settled));
            self.roll_boundary = highest + 1;
        }
        let start = self.interval_start.unwrap_or(now);
        self.interval.duration = now.saturating_duration_since(start);
        let stats = std::mem::take(&mut self.interval);
        self.interval_start = Some(now);
        self.last_interval = Some(stats);
        stats
    }

    /// Statistics of the last closed interval.
    pub fn last_interval(&self) -> Option<&IntervalStats> {
        self.last_interval.as_ref()
    }

    /// Loss fraction of the last closed interval (`None` if none, or nothing was judged in it).
    pub fn loss_fraction(&self) -> Option<f64> {
        self.last_interval.and_then(|stats| stats.loss_fraction())
    }

    /// Send rate of the last closed interval in bits per second (0 if none).
    pub fn send_bps(&self) -> u64 {
        self.last_interval.map_or(0, |stats| stats.send_bps())
    }

    /// Receive rate of the last closed interval in bits per second (0 if none).
    pub fn recv_bps(&self) -> u64 {
        self.last_interval.map_or(0, |stats| stats.recv_bps())
    }

    fn start_at(&mut self, index: u64) {
        self.highest = Some(index);
        self.judged_up_to = index;
        self.roll_boundary = index;
        self.judged_any = false;
        self.set_bit(index);
        self.datagrams_received_total += 1;
    }

    /// Judges every index in `judged_up_to..to`: set bits are received, the rest lost. Only
    /// indexes up to the highest can have a bit set, and those all lie within one bitmap lap.
    fn judge_up_to(&mut self, to: u64) {
        let from = self.judged_up_to;
        if to <= from {
            return;
        }
        let known_end = self.highest.map_or(from, |highest| to.min(highest + 1));
        let mut received = 0;
        for index in from..known_end {
            if self.take_bit(index) {
                received += 1;
            }
        }
        let expected = to - from;
        let lost = expected - received;
        self.interval.expected += expected;
        self.interval.lost += lost;
        self.datagrams_lost_total += lost;
        self.judged_up_to = to;
        self.judged_any = true;
    }

    fn slot(index: u64) -> (usize, u64) {
        let position = index % LOSS_WINDOW;
        ((position / 64) as usize, 1 << (position % 64))
    }

    fn bit(&self, index: u64) -> bool {
        let (word, mask) = Self::slot(index);
        self.received_bits
            .get(word)
            .is_some_and(|bits| bits & mask != 0)
    }

    fn set_bit(&mut self, index: u64) {
        let (word, mask) = Self::slot(index);
        if let Some(bits) = self.received_bits.get_mut(word) {
            *bits |= mask;
        }
    }

    /// Clears the bit of `index`, returning whether it was set.
    fn take_bit(&mut self, index: u64) -> bool {
        let (word, mask) = Self::slot(index);
        self.received_bits.get_mut(word).is_some_and(|bits| {
            let was_set = *bits & mask != 0;
            *bits &= !mask;
            was_set
        })
    }
}

impl Default for LinkQuality {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn receive(link: &mut LinkQuality, seqs: impl IntoIterator<Item = u32>) {
        for seq in seqs {
            link.on_datagram_received(seq);
        }
    }

    /// Rolls twice, so everything received so far is judged; returns (expected, lost) summed.
    fn settle(link: &mut LinkQuality, now: Instant) -> (u64, u64) {
        let first = link.roll(now);
        let second = link.roll(now);
        (first.expected + second.expected, first.lost + second.lost)
    }

    #[test]
    fn first_rtt_sample_initialises_the_estimate() {
        let mut link = LinkQuality::new();
        assert_eq!(link.srtt(), None);
        assert_eq!(link.rttvar(), None);
        link.on_rtt_sample(ms(100));
        assert_eq!(link.srtt(), Some(ms(100)));
        assert_eq!(link.rttvar(), Some(ms(50)));
        assert_eq!(link.latest_rtt(), Some(ms(100)));
        assert_eq!(link.min_rtt(), Some(ms(100)));
    }

    #[test]
    fn rtt_smoothing_follows_rfc_6298() {
        let mut link = LinkQuality::new();
        link.on_rtt_sample(ms(100));
        link.on_rtt_sample(ms(200));
        // rttvar = 3/4 · 50 + 1/4 · |100 − 200| = 62.5; srtt = 7/8 · 100 + 1/8 · 200 = 112.5
        assert_eq!(link.rttvar(), Some(Duration::from_micros(62_500)));
        assert_eq!(link.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(link.latest_rtt(), Some(ms(200)));
        link.on_rtt_sample(ms(40));
        assert_eq!(link.min_rtt(), Some(ms(40)));
        assert_eq!(link.latest_rtt(), Some(ms(40)));
        assert_eq!(link.rtt_samples(), 3);
        // Converges on a steady RTT.
        for _ in 0..200 {
            link.on_rtt_sample(ms(30));
        }
        let srtt = link.srtt().unwrap();
        assert!(
            srtt.abs_diff(ms(30)) < Duration::from_micros(10),
            "{srtt:?}"
        );
        assert!(link.rttvar().unwrap() < Duration::from_micros(10));
    }

    #[test]
    fn no_loss_without_gaps() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, 0..1000);
        assert_eq!(settle(&mut link, t0), (1000, 0));
        assert_eq!(link.loss_fraction(), Some(0.0));
        assert_eq!(link.datagrams_received_total(), 1000);
        assert_eq!(link.datagrams_lost_total(), 0);
    }

    #[test]
    fn loss_fraction_of_an_interval() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        link.roll(t0);
        // Interval 1: 0..1000 with every tenth datagram missing.
        receive(&mut link, (0..1000).filter(|seq| seq % 10 != 5));
        let first = link.roll(t0 + ms(1000));
        // Everything but the last REORDER_WINDOW numbers is judged at once.
        assert_eq!(first.expected, 1000 - REORDER_WINDOW);
        assert_eq!(first.lost, 87);
        // Interval 2: 1000..2000 all received; the tail of interval 1 is judged now.
        receive(&mut link, 1000..2000);
        let second = link.roll(t0 + ms(2000));
        assert_eq!(second.expected, 1000);
        assert_eq!(second.lost, 13);
        assert_eq!(link.datagrams_lost_total(), 100);
        assert_eq!(link.loss_fraction(), Some(0.013));
        assert_eq!(link.last_interval(), Some(&second));
    }

    #[test]
    fn low_rate_link_is_judged_one_interval_later() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, [0, 1, 3, 4]);
        let first = link.roll(t0);
        assert_eq!(first.expected, 0);
        assert_eq!(first.loss_fraction(), None);
        receive(&mut link, [5, 6]);
        let second = link.roll(t0 + ms(1000));
        assert_eq!((second.expected, second.lost), (5, 1));
        assert_eq!(second.loss_fraction(), Some(0.2));
        let third = link.roll(t0 + ms(2000));
        assert_eq!((third.expected, third.lost), (2, 0));
        let idle = link.roll(t0 + ms(3000));
        assert_eq!(idle.expected, 0);
    }

    #[test]
    fn reordering_within_the_window_is_not_loss() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        // Each block of 8 arrives reversed.
        for block in 0..50u32 {
            receive(&mut link, (block * 8..block * 8 + 8).rev());
        }
        assert_eq!(settle(&mut link, t0), (400, 0));
        assert_eq!(link.duplicates_total(), 0);
        assert_eq!(link.late_total(), 0);
    }

    #[test]
    fn datagram_late_by_less_than_an_interval_is_not_loss() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, (0..300).filter(|&seq| seq != 250));
        let first = link.roll(t0);
        assert_eq!((first.expected, first.lost), (300 - REORDER_WINDOW, 0));
        link.on_datagram_received(250);
        receive(&mut link, 300..310);
        assert_eq!(link.roll(t0 + ms(1000)).lost, 0);
        assert_eq!(link.late_total(), 0);
    }

    #[test]
    fn datagram_after_being_judged_lost_is_late() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, (0..300).filter(|&seq| seq != 5));
        assert_eq!(link.roll(t0).lost, 1);
        link.on_datagram_received(5);
        assert_eq!(link.late_total(), 1);
        assert_eq!(link.datagrams_lost_total(), 1);
        assert_eq!(settle(&mut link, t0), (REORDER_WINDOW, 0));
    }

    #[test]
    fn reordered_start_extends_the_window_backwards() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, [3, 1, 4, 5]);
        assert_eq!(settle(&mut link, t0), (5, 1)); // 1..=5, 2 missing; 0 never known
        assert_eq!(link.late_total(), 0);
        // Once judging started, earlier numbers are late.
        link.on_datagram_received(0);
        assert_eq!(link.late_total(), 1);
    }

    #[test]
    fn duplicates_are_counted_once() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, [0, 1, 1, 2, 0, 2, 3]);
        assert_eq!(link.duplicates_total(), 3);
        assert_eq!(link.datagrams_received_total(), 4);
        assert_eq!(settle(&mut link, t0), (4, 0));
    }

    #[test]
    fn u32_wrap_around() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        let start = u32::MAX - 99;
        let seqs = (0..200u32)
            .map(|offset| start.wrapping_add(offset))
            .filter(|&seq| seq != u32::MAX && seq != 0 && seq != 50);
        receive(&mut link, seqs);
        assert_eq!(settle(&mut link, t0), (200, 3));
        // A straggler from before the wrap is late, not a huge jump.
        link.on_datagram_received(u32::MAX);
        assert_eq!(link.late_total(), 1);
        assert_eq!(link.restarts_total(), 0);
    }

    #[test]
    fn reordering_across_u32_wrap() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, [u32::MAX - 1, 1, 0, u32::MAX, 2]);
        assert_eq!(settle(&mut link, t0), (5, 0));
    }

    #[test]
    fn burst_loss_larger_than_the_bitmap() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, [0, 1]);
        let jump = 20_000u32;
        receive(&mut link, jump..jump + 10);
        assert_eq!(link.restarts_total(), 0);
        let (expected, lost) = settle(&mut link, t0);
        assert_eq!(expected, u64::from(jump) + 10);
        assert_eq!(lost, u64::from(jump) - 2);
    }

    #[test]
    fn huge_forward_jump_is_a_restart_not_loss() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        receive(&mut link, [10, 12]);
        receive(&mut link, 1_000_000..1_000_010);
        assert_eq!(link.restarts_total(), 1);
        assert_eq!(settle(&mut link, t0), (3 + 10, 1));
    }

    #[test]
    fn throughput_over_the_last_interval() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        link.roll(t0);
        for step in 0..100 {
            link.on_bytes_sent(1250, t0 + ms(step * 10));
            link.on_bytes_received(625, t0 + ms(step * 10));
        }
        let stats = link.roll(t0 + ms(1000));
        assert_eq!(stats.duration, ms(1000));
        assert_eq!((stats.bytes_sent, stats.bytes_received), (125_000, 62_500));
        assert_eq!(stats.send_bps(), 1_000_000);
        assert_eq!(stats.recv_bps(), 500_000);
        assert_eq!(link.send_bps(), 1_000_000);
        assert_eq!(link.recv_bps(), 500_000);
        assert_eq!(link.last_received_at(), Some(t0 + ms(990)));
        assert_eq!(link.last_sent_at(), Some(t0 + ms(990)));
        // Half a second later, nothing moved.
        let idle = link.roll(t0 + ms(1500));
        assert_eq!(
            (idle.duration, idle.send_bps(), idle.recv_bps()),
            (ms(500), 0, 0)
        );
        assert_eq!(link.bytes_sent_total(), 125_000);
        assert_eq!(link.bytes_received_total(), 62_500);
    }

    #[test]
    fn first_interval_starts_at_the_first_event() {
        let t0 = Instant::now();
        let mut link = LinkQuality::new();
        assert_eq!(link.send_bps(), 0);
        assert_eq!(link.loss_fraction(), None);
        link.on_bytes_sent(1000, t0 + ms(500));
        let stats = link.roll(t0 + ms(1000));
        assert_eq!(stats.duration, ms(500));
        assert_eq!(stats.send_bps(), 16_000);
        // A roll with no earlier event has zero duration and zero rate.
        let mut fresh = LinkQuality::new();
        let stats = fresh.roll(t0);
        assert_eq!((stats.duration, stats.send_bps()), (Duration::ZERO, 0));
    }

    #[test]
    fn roll_with_time_going_backwards_does_not_panic() {
        let t0 = Instant::now() + ms(100);
        let mut link = LinkQuality::new();
        link.on_bytes_received(100, t0);
        let stats = link.roll(t0 - ms(50));
        assert_eq!((stats.duration, stats.recv_bps()), (Duration::ZERO, 0));
    }
}
