//! Gap detection and NACK scheduling for one stream arriving over a relay link.
//!
//! Owns [`UpstreamLossDetector`]: one per (relayed track, simulcast layer) on the receiving side
//! of a relay link. It is fed the RTP sequence number of every packet that arrives over the link,
//! keeps the set of sequence numbers that are missing, and says which of them to NACK towards the
//! upstream node (whose packet cache answers), so a lost relay datagram is re-fetched before the
//! local subscribers notice. It only decides; building and sending the NACK is the caller's job.
//!
//! Rules:
//! - sequence numbers are unwrapped to a 64-bit extended index (within ±2^15 of the highest seen);
//! - a forward jump opens a gap: every skipped number becomes missing, at most [`MAX_MISSING`] of
//!   them are kept (the oldest are dropped and counted as given up);
//! - a forward jump of more than [`RESYNC_THRESHOLD`] packets is a resync (stream restart, long
//!   outage): the missing set is cleared and nothing is NACKed for the skipped range;
//! - a packet behind the highest that fills a gap (late or retransmitted) removes it and counts as
//!   recovered; any other packet behind the highest (duplicate, very old, already given up) is
//!   ignored;
//! - a newly missing number is NACKed on the next poll, then re-NACKed up to `max_retries` more
//!   times, each at least `max(1.5 × rtt, 10 ms)` after the previous NACK of it; it is given up
//!   once that interval has passed after its last NACK, or once it has been missing for
//!   [`MAX_MISSING_AGE`].
//!
//! The missing set is allocated once (at construction) and then never grows past
//! [`MAX_MISSING`], so the per-packet path does not allocate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many times a missing packet is re-NACKed after its first NACK, by default.
pub const DEFAULT_MAX_NACK_RETRIES: u32 = 2;
/// Most missing sequence numbers tracked at once; older ones are dropped (given up) first.
pub const MAX_MISSING: usize = 256;
/// A forward jump of more than this many packets is a resync, not a gap to recover.
pub const RESYNC_THRESHOLD: u64 = 512;
/// Shortest spacing between two NACKs of the same sequence number, whatever the RTT.
pub const MIN_NACK_RETRY_INTERVAL: Duration = Duration::from_millis(10);
/// A sequence number missing for this long is given up (a retransmission would come too late to
/// be useful). Also the longest spacing between two NACKs of it.
pub const MAX_MISSING_AGE: Duration = Duration::from_secs(1);

/// Extended index given to the first packet: one sequence cycle in, so packets up to 2^15 before
/// the first one still unwrap to a non-negative index.
const FIRST_INDEX_BASE: u64 = 1 << 16;

/// What [`UpstreamLossDetector::on_packet`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamArrival {
    /// The first packet seen (since construction or [`UpstreamLossDetector::reset`]).
    First,
    /// The packet right after the highest seen.
    InOrder,
    /// A forward jump: `skipped` sequence numbers between the previous highest and this packet
    /// are missing (of which at most [`MAX_MISSING`] are tracked).
    Gap { skipped: u64 },
    /// A forward jump of more than [`RESYNC_THRESHOLD`]: the missing set was cleared.
    Resync,
    /// The packet filled a gap (late arrival or answered NACK).
    Recovered,
    /// A duplicate, or a packet older than anything still tracked as missing.
    Ignored,
}

/// One missing sequence number.
#[derive(Debug, Clone, Copy)]
struct Missing {
    index: u64,
    detected_at: Instant,
    last_nack: Option<Instant>,
    nacks: u32,
}

impl Missing {
    /// When this entry next needs the poller: its first NACK is due at once, later ones (or the
    /// final give-up) `retry_interval` after the last NACK, and never later than its expiry.
    fn deadline(&self, retry_interval: Duration) -> Instant {
        match self.last_nack {
            None => self.detected_at,
            Some(last) => (last + retry_interval).min(self.detected_at + MAX_MISSING_AGE),
        }
    }
}

/// Detects gaps in one relayed stream and schedules upstream NACKs for them.
#[derive(Debug, Clone)]
pub struct UpstreamLossDetector {
    max_retries: u32,
    /// Extended index of the highest sequence number seen.
    highest: Option<u64>,
    /// Missing entries in ascending index order (oldest first).
    missing: VecDeque<Missing>,
    /// Retry interval computed at the last poll, for [`Self::next_deadline`].
    retry_interval: Duration,
    nacked_total: u64,
    recovered_total: u64,
    given_up_total: u64,
    resyncs_total: u64,
    ignored_total: u64,
}

impl UpstreamLossDetector {
    /// A detector that NACKs a missing packet once and then re-NACKs it up to `max_retries` times.
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            highest: None,
            missing: VecDeque::with_capacity(MAX_MISSING),
            retry_interval: MIN_NACK_RETRY_INTERVAL,
            nacked_total: 0,
            recovered_total: 0,
            given_up_total: 0,
            resyncs_total: 0,
            ignored_total: 0,
        }
    }

    /// Records the arrival of the packet with RTP sequence number `seq` at `now`.
    pub fn on_packet(&mut self, seq: u16, now: Instant) -> UpstreamArrival {
        let Some(highest) = self.highest else {
            self.highest = Some(FIRST_INDEX_BASE + u64::from(seq));
            return UpstreamArrival::First;
        };
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        let index = highest.saturating_add_signed(delta);
        if index > highest {
            self.highest = Some(index);
            self.on_forward_jump(highest, index, now)
        } else {
            match self
                .missing
                .binary_search_by_key(&index, |entry| entry.index)
            {
                Ok(position) => {
                    self.missing.remove(position);
                    self.recovered_total += 1;
                    UpstreamArrival::Recovered
                }
                Err(_) => {
                    self.ignored_total += 1;
                    UpstreamArrival::Ignored
                }
            }
        }
    }

    /// Sequence numbers to NACK at `now`, oldest first, appended to `out` (which is not cleared,
    /// so a caller can reuse one buffer across polls without allocating). `rtt` is the current
    /// round-trip time of the link; the retry interval is `max(1.5 × rtt, 10 ms)`, capped at
    /// [`MAX_MISSING_AGE`]. Also gives up entries that are out of retries or too old.
    pub fn poll_nacks_into(&mut self, now: Instant, rtt: Duration, out: &mut Vec<u16>) {
        let interval = (rtt.saturating_mul(3) / 2).clamp(MIN_NACK_RETRY_INTERVAL, MAX_MISSING_AGE);
        self.retry_interval = interval;
        let max_nacks = self.max_retries.saturating_add(1);
        let mut nacked = 0;
        let mut given_up = 0;
        self.missing.retain_mut(|entry| {
            if now.saturating_duration_since(entry.detected_at) >= MAX_MISSING_AGE {
                given_up += 1;
                return false;
            }
            let due = entry
                .last_nack
                .is_none_or(|last| now.saturating_duration_since(last) >= interval);
            if !due {
                return true;
            }
            if entry.nacks >= max_nacks {
                given_up += 1;
                return false;
            }
            out.push(entry.index as u16);
            entry.nacks += 1;
            entry.last_nack = Some(now);
            nacked += 1;
            true
        });
        self.nacked_total += nacked;
        self.given_up_total += given_up;
    }

    /// Allocating convenience over [`Self::poll_nacks_into`].
    pub fn poll_nacks(&mut self, now: Instant, rtt: Duration) -> Vec<u16> {
        let mut out = Vec::new();
        self.poll_nacks_into(now, rtt, &mut out);
        out
    }

    /// When [`Self::poll_nacks_into`] next has something to do (a NACK or a give-up), or `None`
    /// if nothing is missing. Uses the retry interval of the last poll (the RTT is not known
    /// here); a deadline at or before the current time means "poll now".
    pub fn next_deadline(&self) -> Option<Instant> {
        self.missing
            .iter()
            .map(|entry| entry.deadline(self.retry_interval))
            .min()
    }

    /// Forgets the stream (highest sequence number and missing set) but keeps the counters. For a
    /// known restart of the upstream stream (e.g. a new SSRC), whose numbering would otherwise be
    /// misread as old packets.
    pub fn reset(&mut self) {
        self.highest = None;
        self.missing.clear();
    }

    /// How many sequence numbers are missing (and not yet given up) right now.
    pub fn missing_now(&self) -> usize {
        self.missing.len()
    }

    /// The highest sequence number seen, if any.
    pub fn highest_seq(&self) -> Option<u16> {
        self.highest.map(|index| index as u16)
    }

    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// NACKs requested so far, retries included (one per sequence number per poll).
    pub fn nacked_total(&self) -> u64 {
        self.nacked_total
    }

    /// Missing sequence numbers that arrived later (reordered or retransmitted), NACKed or not.
    pub fn recovered_total(&self) -> u64 {
        self.recovered_total
    }

    /// Missing sequence numbers abandoned: out of retries, older than [`MAX_MISSING_AGE`], pushed
    /// out by the [`MAX_MISSING`] cap, or cleared by a resync.
    pub fn given_up_total(&self) -> u64 {
        self.given_up_total
    }

    /// Forward jumps of more than [`RESYNC_THRESHOLD`] packets.
    pub fn resyncs_total(&self) -> u64 {
        self.resyncs_total
    }

    /// Duplicates and packets too old to matter.
    pub fn ignored_total(&self) -> u64 {
        self.ignored_total
    }

    fn on_forward_jump(&mut self, previous: u64, index: u64, now: Instant) -> UpstreamArrival {
        let jump = index - previous;
        if jump == 1 {
            return UpstreamArrival::InOrder;
        }
        if jump > RESYNC_THRESHOLD {
            self.given_up_total += self.missing.len() as u64;
            self.missing.clear();
            self.resyncs_total += 1;
            return UpstreamArrival::Resync;
        }
        let skipped = jump - 1;
        // Only the newest MAX_MISSING of the gap could be kept; the rest are dropped right away.
        let first_kept = index - skipped.min(MAX_MISSING as u64);
        self.given_up_total += first_kept - (previous + 1);
        for missing_index in first_kept..index {
            if self.missing.len() >= MAX_MISSING {
                self.missing.pop_front();
                self.given_up_total += 1;
            }
            self.missing.push_back(Missing {
                index: missing_index,
                detected_at: now,
                last_nack: None,
                nacks: 0,
            });
        }
        UpstreamArrival::Gap { skipped }
    }
}

impl Default for UpstreamLossDetector {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_NACK_RETRIES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `seqs` in order, all at `now`.
    fn feed(detector: &mut UpstreamLossDetector, seqs: &[u16], now: Instant) {
        for &seq in seqs {
            detector.on_packet(seq, now);
        }
    }

    #[test]
    fn in_order_stream_has_nothing_to_nack() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        assert_eq!(detector.on_packet(100, t0), UpstreamArrival::First);
        assert_eq!(detector.on_packet(101, t0), UpstreamArrival::InOrder);
        assert_eq!(detector.on_packet(102, t0), UpstreamArrival::InOrder);
        assert_eq!(detector.missing_now(), 0);
        assert_eq!(detector.next_deadline(), None);
        assert!(detector.poll_nacks(t0, ms(20)).is_empty());
        assert_eq!(detector.highest_seq(), Some(102));
        assert_eq!(detector.nacked_total(), 0);
    }

    #[test]
    fn gap_is_nacked_on_next_poll() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 2], t0);
        assert_eq!(
            detector.on_packet(5, t0),
            UpstreamArrival::Gap { skipped: 2 }
        );
        assert_eq!(detector.missing_now(), 2);
        assert_eq!(detector.next_deadline(), Some(t0));
        assert_eq!(detector.poll_nacks(t0, ms(20)), vec![3, 4]);
        assert_eq!(detector.nacked_total(), 2);
        // Not again before the retry interval.
        assert!(detector.poll_nacks(t0 + ms(1), ms(20)).is_empty());
        assert_eq!(detector.missing_now(), 2);
    }

    #[test]
    fn gap_across_wrap_around() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[65533, 65534], t0);
        assert_eq!(
            detector.on_packet(1, t0),
            UpstreamArrival::Gap { skipped: 2 }
        );
        assert_eq!(detector.poll_nacks(t0, ms(20)), vec![65535, 0]);
        assert_eq!(detector.highest_seq(), Some(1));
        assert_eq!(detector.on_packet(0, t0), UpstreamArrival::Recovered);
        assert_eq!(detector.on_packet(65535, t0), UpstreamArrival::Recovered);
        assert_eq!(detector.missing_now(), 0);
        assert_eq!(detector.recovered_total(), 2);
    }

    #[test]
    fn in_order_across_wrap_around_and_old_packet_after_wrap() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[65534, 65535], t0);
        assert_eq!(detector.on_packet(0, t0), UpstreamArrival::InOrder);
        assert_eq!(detector.on_packet(1, t0), UpstreamArrival::InOrder);
        // A straggler from before the wrap is old, not a jump forward.
        assert_eq!(detector.on_packet(65530, t0), UpstreamArrival::Ignored);
        assert_eq!(detector.missing_now(), 0);
        assert_eq!(detector.highest_seq(), Some(1));
        // Many wraps in a row keep working.
        let mut seq = 1u16;
        for _ in 0..3 * 65536 {
            seq = seq.wrapping_add(1);
            assert_eq!(detector.on_packet(seq, t0), UpstreamArrival::InOrder);
        }
        assert_eq!(detector.missing_now(), 0);
    }

    #[test]
    fn late_packet_fills_gap_and_is_not_nacked_again() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[10, 13], t0);
        assert_eq!(detector.poll_nacks(t0, ms(20)), vec![11, 12]);
        assert_eq!(
            detector.on_packet(12, t0 + ms(5)),
            UpstreamArrival::Recovered
        );
        assert_eq!(detector.missing_now(), 1);
        assert_eq!(detector.poll_nacks(t0 + ms(30), ms(20)), vec![11]);
        assert_eq!(detector.recovered_total(), 1);
    }

    #[test]
    fn reordered_packet_fills_gap_before_any_nack() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.on_packet(2, t0), UpstreamArrival::Recovered);
        assert!(detector.poll_nacks(t0, ms(20)).is_empty());
        assert_eq!(detector.nacked_total(), 0);
        assert_eq!(detector.recovered_total(), 1);
        assert_eq!(detector.next_deadline(), None);
    }

    #[test]
    fn duplicates_and_old_packets_are_ignored() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[100, 101, 103], t0);
        assert_eq!(detector.on_packet(103, t0), UpstreamArrival::Ignored); // duplicate of the highest
        assert_eq!(detector.on_packet(101, t0), UpstreamArrival::Ignored); // duplicate
        assert_eq!(detector.on_packet(50, t0), UpstreamArrival::Ignored); // very old
        assert_eq!(detector.on_packet(99, t0), UpstreamArrival::Ignored); // before the first packet
        assert_eq!(detector.missing_now(), 1);
        assert_eq!(detector.on_packet(102, t0), UpstreamArrival::Recovered);
        assert_eq!(detector.on_packet(102, t0), UpstreamArrival::Ignored); // duplicate retransmission
        assert_eq!(detector.ignored_total(), 5);
        assert_eq!(detector.recovered_total(), 1);
        assert_eq!(detector.highest_seq(), Some(103));
    }

    #[test]
    fn retries_follow_rtt_then_give_up() {
        let t0 = Instant::now();
        let rtt = ms(20); // retry interval 30 ms
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0, rtt), vec![2]);
        assert_eq!(detector.next_deadline(), Some(t0 + ms(30)));
        assert!(detector.poll_nacks(t0 + ms(29), rtt).is_empty());
        assert_eq!(detector.poll_nacks(t0 + ms(30), rtt), vec![2]); // retry 1
        assert_eq!(detector.next_deadline(), Some(t0 + ms(60)));
        assert!(detector.poll_nacks(t0 + ms(59), rtt).is_empty());
        assert_eq!(detector.poll_nacks(t0 + ms(60), rtt), vec![2]); // retry 2
        assert_eq!(detector.next_deadline(), Some(t0 + ms(90)));
        // Out of retries: still waited for until one more interval has passed, then given up.
        assert!(detector.poll_nacks(t0 + ms(89), rtt).is_empty());
        assert_eq!(detector.missing_now(), 1);
        assert!(detector.poll_nacks(t0 + ms(90), rtt).is_empty());
        assert_eq!(detector.missing_now(), 0);
        assert_eq!(detector.next_deadline(), None);
        assert_eq!(detector.nacked_total(), 3);
        assert_eq!(detector.given_up_total(), 1);
        // A retransmission arriving after giving up is just ignored.
        assert_eq!(detector.on_packet(2, t0 + ms(95)), UpstreamArrival::Ignored);
        assert_eq!(detector.recovered_total(), 0);
    }

    #[test]
    fn retry_interval_is_measured_from_the_last_nack_not_the_last_poll() {
        let t0 = Instant::now();
        let rtt = ms(20);
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0 + ms(5), rtt), vec![2]);
        for step in 0..6 {
            assert!(detector.poll_nacks(t0 + ms(6 + step * 5), rtt).is_empty());
        }
        assert!(detector.poll_nacks(t0 + ms(34), rtt).is_empty());
        assert_eq!(detector.poll_nacks(t0 + ms(35), rtt), vec![2]);
    }

    #[test]
    fn retry_interval_has_a_floor_of_ten_milliseconds() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0, Duration::ZERO), vec![2]);
        assert_eq!(detector.next_deadline(), Some(t0 + ms(10)));
        assert!(detector.poll_nacks(t0 + ms(9), ms(2)).is_empty());
        assert_eq!(detector.poll_nacks(t0 + ms(10), ms(2)), vec![2]);
    }

    #[test]
    fn latest_rtt_is_used_for_the_next_retry() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0, ms(100)), vec![2]);
        assert_eq!(detector.next_deadline(), Some(t0 + ms(150)));
        // The RTT dropped: the retry comes earlier.
        assert_eq!(detector.poll_nacks(t0 + ms(30), ms(20)), vec![2]);
    }

    #[test]
    fn missing_packets_expire_after_one_second() {
        let t0 = Instant::now();
        let rtt = ms(500); // retry interval 750 ms
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0, rtt), vec![2]);
        assert_eq!(detector.poll_nacks(t0 + ms(750), rtt), vec![2]);
        // The next retry would be at 1500 ms, but the entry expires at 1000 ms.
        assert_eq!(detector.next_deadline(), Some(t0 + ms(1000)));
        assert!(detector.poll_nacks(t0 + ms(999), rtt).is_empty());
        assert_eq!(detector.missing_now(), 1);
        assert!(detector.poll_nacks(t0 + ms(1000), rtt).is_empty());
        assert_eq!(detector.missing_now(), 0);
        assert_eq!(detector.nacked_total(), 2);
        assert_eq!(detector.given_up_total(), 1);
    }

    #[test]
    fn never_polled_entry_expires_without_a_nack() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert!(detector.poll_nacks(t0 + ms(1000), ms(20)).is_empty());
        assert_eq!(detector.given_up_total(), 1);
        assert_eq!(detector.nacked_total(), 0);
    }

    #[test]
    fn custom_retry_count() {
        let t0 = Instant::now();
        let rtt = ms(20);
        let mut detector = UpstreamLossDetector::new(0);
        assert_eq!(detector.max_retries(), 0);
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0, rtt), vec![2]);
        assert!(detector.poll_nacks(t0 + ms(30), rtt).is_empty());
        assert_eq!(detector.missing_now(), 0);
        assert_eq!((detector.nacked_total(), detector.given_up_total()), (1, 1));

        let mut detector = UpstreamLossDetector::new(5);
        feed(&mut detector, &[1, 3], t0);
        let sent = (0..10)
            .map(|step| detector.poll_nacks(t0 + ms(30 * step), rtt).len())
            .sum::<usize>();
        assert_eq!(sent, 6);
    }

    #[test]
    fn several_gaps_are_nacked_oldest_first_with_their_own_timers() {
        let t0 = Instant::now();
        let rtt = ms(20);
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0, rtt), vec![2]);
        detector.on_packet(6, t0 + ms(10));
        assert_eq!(detector.poll_nacks(t0 + ms(10), rtt), vec![4, 5]);
        assert_eq!(detector.next_deadline(), Some(t0 + ms(30)));
        assert_eq!(detector.poll_nacks(t0 + ms(30), rtt), vec![2]);
        assert_eq!(detector.poll_nacks(t0 + ms(40), rtt), vec![4, 5]);
    }

    #[test]
    fn jump_over_threshold_is_a_resync() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.missing_now(), 1);
        assert_eq!(detector.on_packet(3 + 513, t0), UpstreamArrival::Resync);
        assert_eq!(detector.missing_now(), 0);
        assert!(detector.poll_nacks(t0, ms(20)).is_empty());
        assert_eq!(detector.resyncs_total(), 1);
        assert_eq!(detector.given_up_total(), 1);
        assert_eq!(detector.highest_seq(), Some(516));
        assert_eq!(detector.on_packet(517, t0), UpstreamArrival::InOrder);
    }

    #[test]
    fn resync_across_wrap_around() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        detector.on_packet(65000, t0);
        assert_eq!(detector.on_packet(1000, t0), UpstreamArrival::Resync); // 1536 ahead
        assert_eq!(detector.highest_seq(), Some(1000));
    }

    #[test]
    fn jump_at_threshold_is_a_gap_capped_to_the_newest_entries() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        detector.on_packet(0, t0);
        assert_eq!(
            detector.on_packet(512, t0),
            UpstreamArrival::Gap { skipped: 511 }
        );
        assert_eq!(detector.missing_now(), MAX_MISSING);
        assert_eq!(detector.given_up_total(), 511 - 256);
        let nacks = detector.poll_nacks(t0, ms(20));
        assert_eq!(nacks.len(), MAX_MISSING);
        assert_eq!(nacks.first(), Some(&256));
        assert_eq!(nacks.last(), Some(&511));
        // A dropped one arriving late is merely ignored.
        assert_eq!(detector.on_packet(100, t0), UpstreamArrival::Ignored);
    }

    #[test]
    fn cap_drops_the_oldest_entries_across_gaps() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        detector.on_packet(0, t0);
        detector.on_packet(201, t0); // 1..=200 missing
        detector.on_packet(302, t0); // 202..=301 missing: 300 in all, 44 oldest dropped
        assert_eq!(detector.missing_now(), MAX_MISSING);
        assert_eq!(detector.given_up_total(), 44);
        let nacks = detector.poll_nacks(t0, ms(20));
        assert_eq!(nacks.first(), Some(&45));
        assert_eq!(nacks.last(), Some(&301));
        assert!(!nacks.contains(&201));
        assert_eq!(detector.on_packet(44, t0), UpstreamArrival::Ignored);
        assert_eq!(detector.on_packet(45, t0), UpstreamArrival::Recovered);
    }

    #[test]
    fn missing_entry_far_behind_the_highest_can_still_be_recovered() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[0, 2], t0);
        for seq in 3..1000 {
            detector.on_packet(seq, t0 + ms(1));
        }
        assert_eq!(detector.missing_now(), 1);
        assert_eq!(
            detector.on_packet(1, t0 + ms(100)),
            UpstreamArrival::Recovered
        );
        assert_eq!(detector.missing_now(), 0);
    }

    #[test]
    fn reset_forgets_the_stream_but_keeps_counters() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        detector.poll_nacks(t0, ms(20));
        detector.reset();
        assert_eq!(detector.missing_now(), 0);
        assert_eq!(detector.highest_seq(), None);
        assert_eq!(detector.nacked_total(), 1);
        // The restarted stream's numbering is taken as is, even though it is "behind".
        assert_eq!(detector.on_packet(60000, t0), UpstreamArrival::First);
        assert_eq!(detector.on_packet(60001, t0), UpstreamArrival::InOrder);
    }

    #[test]
    fn poll_into_appends_without_clearing() {
        let t0 = Instant::now();
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 4], t0);
        let mut out = vec![999];
        detector.poll_nacks_into(t0, ms(20), &mut out);
        assert_eq!(out, vec![999, 2, 3]);
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_renack_early() {
        let t0 = Instant::now() + ms(100);
        let mut detector = UpstreamLossDetector::default();
        feed(&mut detector, &[1, 3], t0);
        assert_eq!(detector.poll_nacks(t0, ms(20)), vec![2]);
        assert!(detector.poll_nacks(t0 - ms(50), ms(20)).is_empty());
        assert_eq!(detector.missing_now(), 1);
    }
}
