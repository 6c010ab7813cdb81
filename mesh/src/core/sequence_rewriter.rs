//! RTP sequence-number and timestamp rewriting for one forwarded stream.
//!
//! Owns [`SequenceRewriter`]: one per (subscriber, outgoing track). The forwarded source may
//! change (a simulcast layer switch brings a different SSRC with its own sequence and timestamp
//! spaces); the output stays one continuous RTP stream. Each run of packets from one source is an
//! *epoch*; a small bounded history of epochs lets NACKed output sequence numbers be mapped back
//! to the source packet.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many epochs (the current one included) are remembered for [`SequenceRewriter::original_of`].
pub const EPOCH_HISTORY: usize = 4;

/// A packet of an earlier source that is not newer than what was forwarded from it, arriving
/// within this long after that source's last forwarded packet, is a late straggler and dropped.
/// Past this window the same SSRC is taken as a legitimate switch back (its sequence numbers may
/// have wrapped meanwhile, so "not newer" could no longer be judged).
pub const STALE_SOURCE_WINDOW: Duration = Duration::from_secs(2);

/// Sequence number and timestamp to put in the outgoing RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RewrittenHeader {
    pub seq: u16,
    pub timestamp: u32,
}

/// One run of forwarded packets from a single source.
#[derive(Debug, Clone)]
struct Epoch {
    source_ssrc: u32,
    /// Source sequence number of the epoch's first packet (the switch point).
    first_source_seq: u16,
    /// Output sequence number given to the epoch's first packet.
    first_output_seq: u16,
    /// Added (wrapping) to source timestamps to get output timestamps.
    timestamp_offset: u32,
    /// Distance, in packets, from the switch point to the highest source seq seen.
    highest_index: u64,
    /// Output timestamp of the highest packet forwarded.
    highest_output_timestamp: u32,
    /// When the highest packet was forwarded.
    highest_forwarded_at: Instant,
}

impl Epoch {
    fn highest_source_seq(&self) -> u16 {
        self.first_source_seq
            .wrapping_add(self.highest_index as u16)
    }

    fn highest_output_seq(&self) -> u16 {
        self.first_output_seq
            .wrapping_add(self.highest_index as u16)
    }

    /// Index of `seq` (in the same sequence space as `reference`, which sits at
    /// `highest_index`) relative to the epoch start, or `None` if it precedes the start.
    /// `seq` is unwrapped to within ±2^15 of `reference`.
    fn index_of(&self, seq: u16, reference: u16) -> Option<u64> {
        let delta = i64::from(seq.wrapping_sub(reference) as i16);
        let index = i64::try_from(self.highest_index).ok()?.checked_add(delta)?;
        u64::try_from(index).ok()
    }
}

/// Keeps one subscriber's view of a track a single continuous RTP stream across source changes.
#[derive(Debug, Clone)]
pub struct SequenceRewriter {
    clock_rate: u32,
    /// Newest epoch last; the back is the current epoch.
    epochs: VecDeque<Epoch>,
    /// Set by [`Self::restart_at_next_packet`]: the next packet starts an epoch even if its SSRC
    /// is the current one.
    restart_pending: bool,
}

impl SequenceRewriter {
    /// `clock_rate` is the RTP clock rate of the track (90 000 for video, 48 000 for Opus).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            epochs: VecDeque::with_capacity(EPOCH_HISTORY + 1),
            restart_pending: false,
        }
    }

    /// The source's numbering broke without its SSRC changing (it now arrives over another
    /// path — its relay node died — and what was sent in between is lost for good): the next
    /// packet newer than the last one forwarded starts a new epoch that continues the output
    /// numbering, so the subscriber sees no gap it would wait for or NACK in vain.
    pub fn restart_at_next_packet(&mut self) {
        self.restart_pending = true;
    }

    /// Rewrites one source packet. A `source_ssrc` different from the current source starts a new
    /// epoch with this packet (the caller switches only on a keyframe start). Returns `None` for
    /// packets that must not be forwarded: current-source packets from before the switch point,
    /// and late packets of an earlier source (not newer than the last one forwarded from it, within
    /// [`STALE_SOURCE_WINDOW`]). A newer packet of an earlier source is a switch back to it.
    pub fn rewrite(
        &mut self,
        source_ssrc: u32,
        seq: u16,
        ts: u32,
        now: Instant,
    ) -> Option<RewrittenHeader> {
        let is_current = self
            .epochs
            .back()
            .is_some_and(|epoch| epoch.source_ssrc == source_ssrc);
        if !is_current || self.restart_pending {
            if self.is_stale_packet_of_earlier_source(source_ssrc, seq, now) {
                return None;
            }
            self.restart_pending = false;
            self.start_epoch(source_ssrc, seq, ts, now);
        }
        let epoch = self.epochs.back_mut()?;
        let index = epoch.index_of(seq, epoch.highest_source_seq())?;
        let header = RewrittenHeader {
            seq: epoch.first_output_seq.wrapping_add(index as u16),
            timestamp: ts.wrapping_add(epoch.timestamp_offset),
        };
        if index > epoch.highest_index {
            epoch.highest_index = index;
            epoch.highest_output_timestamp = header.timestamp;
            epoch.highest_forwarded_at = now;
        }
        Some(header)
    }

    /// Maps an output sequence number (e.g. from a subscriber's NACK) back to the source SSRC and
    /// source sequence number, searching the current epoch and the remembered earlier ones.
    /// Returns `None` for numbers not yet sent or older than the remembered history.
    pub fn original_of(&self, out_seq: u16) -> Option<(u32, u16)> {
        self.epochs.iter().rev().find_map(|epoch| {
            let index = epoch.index_of(out_seq, epoch.highest_output_seq())?;
            (index <= epoch.highest_index).then(|| {
                let source_seq = epoch.first_source_seq.wrapping_add(index as u16);
                (epoch.source_ssrc, source_seq)
            })
        })
    }

    /// The output header a source packet was (or would have been) forwarded with, for
    /// retransmitting it: found in the newest remembered epoch of `source_ssrc` whose range holds
    /// `seq`. Does not change any state. `None` if no remembered epoch covers the packet.
    pub fn retransmission_header(
        &self,
        source_ssrc: u32,
        seq: u16,
        ts: u32,
    ) -> Option<RewrittenHeader> {
        self.epochs
            .iter()
            .rev()
            .filter(|epoch| epoch.source_ssrc == source_ssrc)
            .find_map(|epoch| {
                let index = epoch.index_of(seq, epoch.highest_source_seq())?;
                (index <= epoch.highest_index).then(|| RewrittenHeader {
                    seq: epoch.first_output_seq.wrapping_add(index as u16),
                    timestamp: ts.wrapping_add(epoch.timestamp_offset),
                })
            })
    }

    /// SSRC of the source currently being forwarded, if any.
    pub fn current_source(&self) -> Option<u32> {
        self.epochs.back().map(|epoch| epoch.source_ssrc)
    }

    /// The highest output sequence number produced so far, if any.
    pub fn last_output_seq(&self) -> Option<u16> {
        self.epochs.back().map(Epoch::highest_output_seq)
    }

    /// The output timestamp of the highest packet produced so far, if any.
    pub fn last_output_timestamp(&self) -> Option<u32> {
        self.epochs
            .back()
            .map(|epoch| epoch.highest_output_timestamp)
    }

    fn is_stale_packet_of_earlier_source(&self, source_ssrc: u32, seq: u16, now: Instant) -> bool {
        self.epochs
            .iter()
            .rev()
            .find(|epoch| epoch.source_ssrc == source_ssrc)
            .is_some_and(|epoch| {
                let recent =
                    now.saturating_duration_since(epoch.highest_forwarded_at) < STALE_SOURCE_WINDOW;
                let not_newer = seq.wrapping_sub(epoch.highest_source_seq()) as i16 <= 0;
                recent && not_newer
            })
    }

    fn start_epoch(&mut self, source_ssrc: u32, seq: u16, ts: u32, now: Instant) {
        let (first_output_seq, first_output_timestamp) = match self.epochs.back() {
            // The very first source passes through unchanged.
            None => (seq, ts),
            Some(previous) => {
                let elapsed = now.saturating_duration_since(previous.highest_forwarded_at);
                let ticks = self.elapsed_ticks(elapsed);
                (
                    previous.highest_output_seq().wrapping_add(1),
                    previous.highest_output_timestamp.wrapping_add(ticks),
                )
            }
        };
        self.epochs.push_back(Epoch {
            source_ssrc,
            first_source_seq: seq,
            first_output_seq,
            timestamp_offset: first_output_timestamp.wrapping_sub(ts),
            highest_index: 0,
            highest_output_timestamp: first_output_timestamp,
            highest_forwarded_at: now,
        });
        while self.epochs.len() > EPOCH_HISTORY {
            self.epochs.pop_front();
        }
    }

    /// Media-clock ticks for `elapsed`, at least 1 so timestamps always advance across a switch.
    fn elapsed_ticks(&self, elapsed: Duration) -> u32 {
        let ticks = elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO_CLOCK: u32 = 90_000;

    fn header(seq: u16, timestamp: u32) -> Option<RewrittenHeader> {
        Some(RewrittenHeader { seq, timestamp })
    }

    #[test]
    fn a_restart_continues_the_numbering_across_a_gap_of_the_same_source() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        assert_eq!(r.rewrite(1, 100, 5000, t0), header(100, 5000));
        assert_eq!(r.rewrite(1, 101, 8000, t0), header(101, 8000));
        r.restart_at_next_packet();
        // Late packets from before the break are still refused.
        assert_eq!(r.rewrite(1, 101, 8000, t0), None);
        // 30 packets were lost on the dead path: the output goes on at 102, not 131.
        let t1 = t0 + Duration::from_millis(200);
        let h = r.rewrite(1, 131, 26000, t1).unwrap();
        assert_eq!(h.seq, 102);
        assert!(h.timestamp > 8000, "timestamps keep advancing");
        assert_eq!(r.rewrite(1, 132, 26000, t1).unwrap().seq, 103);
        // NACKs of the new numbering map back to the source's.
        assert_eq!(r.original_of(103), Some((1, 132)));
    }

    #[test]
    fn first_source_passes_through() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        assert_eq!(r.rewrite(1, 100, 5000, t0), header(100, 5000));
        assert_eq!(r.rewrite(1, 101, 5000, t0), header(101, 5000));
        assert_eq!(r.rewrite(1, 102, 8000, t0), header(102, 8000));
        assert_eq!(r.current_source(), Some(1));
        assert_eq!(r.last_output_seq(), Some(102));
        assert_eq!(r.last_output_timestamp(), Some(8000));
    }

    #[test]
    fn wraps_at_65535() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        assert_eq!(
            r.rewrite(1, 65534, u32::MAX - 1, t0),
            header(65534, u32::MAX - 1)
        );
        assert_eq!(r.rewrite(1, 65535, u32::MAX, t0), header(65535, u32::MAX));
        assert_eq!(r.rewrite(1, 0, 2, t0), header(0, 2));
        assert_eq!(r.rewrite(1, 1, 3, t0), header(1, 3));
        // Reordered packet from before the wrap is still in the epoch.
        assert_eq!(r.rewrite(1, 65535, u32::MAX, t0), header(65535, u32::MAX));
        assert_eq!(r.last_output_seq(), Some(1));
    }

    #[test]
    fn reordering_within_an_epoch_keeps_relative_order() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 10, 0, t0);
        r.rewrite(2, 500, 1000, t0 + Duration::from_millis(10));
        let first = r.last_output_seq().expect("forwarded");
        assert_eq!(
            r.rewrite(2, 503, 1000, t0),
            header(first.wrapping_add(3), 900)
        );
        assert_eq!(
            r.rewrite(2, 501, 1000, t0).map(|h| h.seq),
            Some(first.wrapping_add(1))
        );
        assert_eq!(
            r.rewrite(2, 502, 1000, t0).map(|h| h.seq),
            Some(first.wrapping_add(2))
        );
        assert_eq!(r.last_output_seq(), Some(first.wrapping_add(3)));
    }

    #[test]
    fn switch_continues_sequence_and_estimates_timestamp() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 1000, 90_000, t0);
        r.rewrite(1, 1001, 93_000, t0 + Duration::from_millis(33));
        // 100 ms later a different source takes over: 9000 ticks at 90 kHz.
        let t1 = t0 + Duration::from_millis(133);
        assert_eq!(r.rewrite(2, 40_000, 7, t1), header(1002, 93_000 + 9000));
        assert_eq!(r.rewrite(2, 40_001, 7, t1), header(1003, 102_000));
        assert_eq!(r.rewrite(2, 40_002, 3007, t1), header(1004, 105_000));
        assert_eq!(r.current_source(), Some(2));
    }

    #[test]
    fn switch_advances_timestamp_at_least_one_tick() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 1, 500, t0);
        assert_eq!(r.rewrite(2, 9, 123, t0), header(2, 501));
        // Even with `now` going backwards.
        assert_eq!(
            r.rewrite(
                3,
                9,
                123,
                t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0)
            ),
            header(3, 502)
        );
    }

    #[test]
    fn switch_across_sequence_and_timestamp_wrap() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 65535, u32::MAX - 5, t0);
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(r.rewrite(2, 123, 0, t1), header(0, 84)); // u32::MAX - 5 + 90 wraps to 84
        assert_eq!(r.rewrite(2, 124, 10, t1), header(1, 94));
    }

    #[test]
    fn packets_before_the_switch_point_are_dropped() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 10, 0, t0);
        r.rewrite(2, 0, 0, t0); // switch point at seq 0 of source 2
        assert_eq!(r.rewrite(2, 65535, 0, t0), None);
        assert_eq!(r.rewrite(2, 65000, 0, t0), None);
        assert!(r.rewrite(2, 1, 0, t0).is_some());
    }

    #[test]
    fn late_packets_of_the_previous_source_are_dropped() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 10, 0, t0);
        r.rewrite(1, 11, 0, t0);
        r.rewrite(2, 77, 0, t0);
        assert_eq!(r.rewrite(1, 11, 0, t0), None);
        assert_eq!(r.rewrite(1, 9, 0, t0), None);
        assert_eq!(r.current_source(), Some(2), "stale packets do not switch");
        assert_eq!(r.rewrite(2, 78, 0, t0).map(|h| h.seq), Some(13));
    }

    #[test]
    fn newer_packet_of_the_previous_source_switches_back() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 10, 0, t0);
        r.rewrite(2, 77, 0, t0);
        assert_eq!(r.rewrite(1, 12, 0, t0).map(|h| h.seq), Some(12));
        assert_eq!(r.current_source(), Some(1));
        assert_eq!(r.rewrite(1, 11, 0, t0), None, "before the new switch point");
        assert_eq!(r.original_of(10), Some((1, 10)));
        assert_eq!(r.original_of(11), Some((2, 77)));
        assert_eq!(r.original_of(12), Some((1, 12)));
    }

    #[test]
    fn switch_back_after_the_stale_window_ignores_old_sequence_numbers() {
        // Long on another source: the earlier source's seq may have wrapped to "older" values.
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 10, 0, t0);
        r.rewrite(2, 77, 0, t0);
        let later = t0 + STALE_SOURCE_WINDOW;
        r.rewrite(2, 78, 0, later);
        assert_eq!(r.rewrite(1, 5, 0, later).map(|h| h.seq), Some(13));
    }

    #[test]
    fn long_epochs_keep_counting_past_32768_packets() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 0, 0, t0);
        r.rewrite(2, 30_000, 0, t0);
        for i in 1..=70_000u32 {
            let seq = 30_000u16.wrapping_add(i as u16);
            let out = r.rewrite(2, seq, i, t0).expect("in epoch");
            assert_eq!(out.seq, 1u16.wrapping_add(i as u16));
        }
    }

    #[test]
    fn nack_mapping_across_a_switch() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        for seq in 65530..=65535u16 {
            r.rewrite(1, seq, 0, t0);
        }
        for seq in 200..205u16 {
            r.rewrite(2, seq, 0, t0);
        }
        // Outputs: 65530..=65535 from source 1, then 0..=4 from source 2.
        assert_eq!(r.original_of(65533), Some((1, 65533)));
        assert_eq!(r.original_of(65535), Some((1, 65535)));
        assert_eq!(r.original_of(0), Some((2, 200)));
        assert_eq!(r.original_of(4), Some((2, 204)));
        assert_eq!(r.original_of(5), None, "not sent yet");
        assert_eq!(r.original_of(65529), None, "before any epoch");
    }

    #[test]
    fn nack_mapping_with_gaps_and_reordering() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        r.rewrite(1, 10, 0, t0);
        r.rewrite(1, 13, 0, t0); // 11 and 12 lost
        r.rewrite(2, 50, 0, t0);
        r.rewrite(2, 52, 0, t0);
        assert_eq!(r.original_of(11), Some((1, 11)), "lost packets map too");
        assert_eq!(r.original_of(13), Some((1, 13)));
        assert_eq!(r.original_of(14), Some((2, 50)));
        assert_eq!(r.original_of(15), Some((2, 51)));
        assert_eq!(r.original_of(16), Some((2, 52)));
    }

    #[test]
    fn retransmission_header_matches_the_original_forwarding() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        let mut sent = Vec::new();
        for seq in 65533..=65535u16 {
            sent.push((1, seq, 100, r.rewrite(1, seq, 100, t0)));
        }
        let t1 = t0 + Duration::from_millis(50);
        for seq in [9u16, 10, 11] {
            sent.push((2, seq, 7000, r.rewrite(2, seq, 7000, t1)));
        }
        for (ssrc, seq, ts, header) in sent {
            assert_eq!(r.retransmission_header(ssrc, seq, ts), header);
            let out = header.expect("forwarded").seq;
            assert_eq!(r.original_of(out), Some((ssrc, seq)));
        }
        assert_eq!(r.last_output_seq(), Some(2));
        assert_eq!(r.retransmission_header(2, 12, 0), None, "not sent yet");
        assert_eq!(
            r.retransmission_header(2, 8, 0),
            None,
            "before the switch point"
        );
        assert_eq!(
            r.retransmission_header(1, 65532, 0),
            None,
            "before the first epoch"
        );
        assert_eq!(r.retransmission_header(3, 10, 0), None, "unknown source");
    }

    #[test]
    fn retransmission_header_picks_the_right_epoch_of_a_reused_source() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        let a1 = r.rewrite(1, 100, 0, t0);
        r.rewrite(2, 5, 0, t0);
        let a2 = r.rewrite(1, 200, 0, t0);
        assert_eq!(r.retransmission_header(1, 100, 0), a1);
        assert_eq!(r.retransmission_header(1, 200, 0), a2);
        assert_eq!(
            r.retransmission_header(1, 150, 0),
            None,
            "was never forwarded"
        );
    }

    #[test]
    fn history_is_bounded() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(VIDEO_CLOCK);
        for ssrc in 0..(EPOCH_HISTORY as u32 + 2) {
            r.rewrite(ssrc, 1000, 0, t0);
            r.rewrite(ssrc, 1001, 0, t0);
        }
        // Outputs 1000..1011, two per epoch; the first two epochs are forgotten.
        assert_eq!(r.original_of(1000), None);
        assert_eq!(r.original_of(1003), None);
        assert_eq!(r.original_of(1004), Some((2, 1000)));
        assert_eq!(r.original_of(1011), Some((5, 1001)));
    }

    #[test]
    fn empty_rewriter_maps_nothing() {
        let r = SequenceRewriter::new(48_000);
        assert_eq!(r.original_of(0), None);
        assert_eq!(r.current_source(), None);
        assert_eq!(r.last_output_seq(), None);
    }

    #[test]
    fn audio_clock_rate_estimate() {
        let t0 = Instant::now();
        let mut r = SequenceRewriter::new(48_000);
        r.rewrite(1, 1, 960, t0);
        let out = r.rewrite(2, 1, 0, t0 + Duration::from_millis(20));
        assert_eq!(out, header(2, 960 + 960));
    }
}
