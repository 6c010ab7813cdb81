//! Send-side bandwidth estimation for subscriber sessions, built from webrtc-rs's interceptors:
//! transport-wide sequence numbers on what the node sends, the subscriber's transport-cc feedback
//! into GCC (delay- and loss-based), and a pacer that smooths what leaves (keyframe bursts into a
//! slow link). The session's `RtcpToApplication` interceptor hands the estimate to the media
//! loop through a [`SharedEstimate`]; the loop turns it into simulcast layers per subscriber
//! (`SubscriberBandwidthAllocator`).
//!
//! The pacer paces at [`PACING_FACTOR`] × the estimate (as libwebrtc does): pacing at the estimate
//! itself would queue the media the estimate was measured with. Until the first feedback it does
//! not hold anything back.

use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, PacerBuilder, PacketReport,
    Registry, Slot, TwccSenderBuilder,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The pacer's rate over the estimate.
pub const PACING_FACTOR: f64 = 2.5;
/// Where the estimate starts: enough for a medium layer at once; GCC finds the rest.
pub const INITIAL_ESTIMATE_BPS: f64 = 1_000_000.0;
pub const MIN_ESTIMATE_BPS: f64 = 100_000.0;
pub const MAX_ESTIMATE_BPS: f64 = 50_000_000.0;

/// What one subscriber session's feedback says: the latest estimate in bit/s (0 until the first
/// feedback) and running counts of packets reported lost and reported at all.
#[derive(Debug, Clone, Default)]
pub struct SharedEstimate(Arc<[AtomicU64; 3]>);

/// Packets reported by transport-cc feedback so far: (lost, reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackCounts {
    pub lost: u64,
    pub reported: u64,
}

impl FeedbackCounts {
    /// The loss fraction between `earlier` and these counts (0 without reports in between).
    pub fn loss_since(self, earlier: FeedbackCounts) -> f64 {
        let reported = self.reported.saturating_sub(earlier.reported);
        if reported == 0 {
            return 0.0;
        }
        self.lost.saturating_sub(earlier.lost) as f64 / reported as f64
    }
}

impl SharedEstimate {
    pub fn get(&self) -> Option<u64> {
        match self.0[0].load(Ordering::Relaxed) {
            0 => None,
            bps => Some(bps),
        }
    }

    pub fn counts(&self) -> FeedbackCounts {
        FeedbackCounts {
            lost: self.0[1].load(Ordering::Relaxed),
            reported: self.0[2].load(Ordering::Relaxed),
        }
    }

    fn set(&self, bps: f64) {
        self.0[0].store(bps.max(1.0) as u64, Ordering::Relaxed);
    }

    /// Records the congestion controller's announced target (the pacing rate, see
    /// [`PACING_FACTOR`]) as the estimate.
    pub fn record_pacing_target(&self, bits_per_second: f64) {
        self.set(bits_per_second / PACING_FACTOR);
    }

    fn count(&self, reports: &[PacketReport]) {
        let lost = reports.iter().filter(|r| !r.arrived).count() as u64;
        self.0[1].fetch_add(lost, Ordering::Relaxed);
        self.0[2].fetch_add(reports.len() as u64, Ordering::Relaxed);
    }
}

/// GCC whose announced target is the pacing rate ([`PACING_FACTOR`] × the estimate); it also
/// counts reported losses for the engine's upgrade probes.
struct PacedGcc(Gcc, SharedEstimate);

impl BandwidthEstimator for PacedGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.1.count(reports);
        self.0.on_reports(now, reports);
    }

    fn target_bitrate(&self) -> f64 {
        self.0.target_bitrate() * PACING_FACTOR
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.0.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.0.stats()
    }
}

/// Adds send-side congestion control to a subscriber session's chain; give the returned
/// [`SharedEstimate`] to the chain's `RtcpToApplication` for its estimate. transport-cc itself is
/// negotiated by the media engine.
pub fn with_congestion_control(registry: Registry) -> (Registry, SharedEstimate) {
    let estimate = SharedEstimate::default();
    let gcc = PacedGcc(
        Gcc::new(INITIAL_ESTIMATE_BPS, MIN_ESTIMATE_BPS, MAX_ESTIMATE_BPS),
        estimate.clone(),
    );
    let registry = registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(gcc).build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        // No pacing before the first estimate: a subscriber that does not send transport-cc
        // feedback (aiortc, many WHEP players) is never held to a rate nobody measured.
        .with(
            Slot::Pacer,
            PacerBuilder::new()
                .with_target_bitrate(MAX_ESTIMATE_BPS * PACING_FACTOR)
                .build(),
        );
    (registry, estimate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_counted_between_two_readings() {
        let a = FeedbackCounts {
            lost: 2,
            reported: 100,
        };
        let b = FeedbackCounts {
            lost: 12,
            reported: 200,
        };
        assert_eq!(b.loss_since(a), 0.1);
        assert_eq!(a.loss_since(a), 0.0);
    }

    #[test]
    fn no_estimate_until_feedback_then_the_unpaced_figure() {
        let shared = SharedEstimate::default();
        assert_eq!(shared.get(), None);
        shared.record_pacing_target(2_500_000.0);
        assert_eq!(shared.get(), Some(1_000_000));
    }
}
