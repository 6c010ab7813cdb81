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
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, Interceptor, PacerBuilder,
    PacketReport, Registry, Slot, StreamInfo, TaggedPacket, TwccSenderBuilder,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::TRANSPORT_CC_URI;
use rtc::shared::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The pacer's rate over the estimate.
pub const PACING_FACTOR: f64 = 2.5;
/// Where the estimate starts: enough for a medium layer at once; GCC finds the rest.
pub const INITIAL_ESTIMATE_BPS: f64 = 1_000_000.0;
pub const MIN_ESTIMATE_BPS: f64 = 100_000.0;
pub const MAX_ESTIMATE_BPS: f64 = 50_000_000.0;

/// What one subscriber session's feedback says: the latest estimate in bit/s (0 until the first
/// feedback), running counts of packets reported lost and reported at all, and the largest
/// queueing delay seen since the engine last asked (see [`QueueDelay`]).
#[derive(Debug, Clone, Default)]
pub struct SharedEstimate(Arc<[AtomicU64; 4]>);

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

    /// The largest queueing delay (µs) reported since the last call, which starts a new period.
    pub fn take_max_queue_delay_us(&self) -> u64 {
        self.0[3].swap(0, Ordering::Relaxed)
    }

    fn set(&self, bps: f64) {
        self.0[0].store(bps.max(1.0) as u64, Ordering::Relaxed);
    }

    /// Records the congestion controller's announced target (the pacing rate, see
    /// [`PACING_FACTOR`]) as the estimate.
    pub fn record_pacing_target(&self, bits_per_second: f64) {
        self.set(bits_per_second / PACING_FACTOR);
    }

    fn count(&self, reports: &[PacketReport], queue_delay_us: u64) {
        let lost = reports.iter().filter(|r| !r.arrived).count() as u64;
        self.0[1].fetch_add(lost, Ordering::Relaxed);
        self.0[2].fetch_add(reports.len() as u64, Ordering::Relaxed);
        self.0[3].fetch_max(queue_delay_us, Ordering::Relaxed);
    }
}

/// How long the window of [`QueueDelay`]'s baseline is.
const DELAY_BASELINE_WINDOW: Duration = Duration::from_secs(5);

/// Queueing delay from transport-cc reports: each packet's one-way delay (arrival on the
/// receiver's clock minus departure on ours, up to a constant offset) above the smallest one of
/// the last one to two windows — the delay of an empty queue. Windows keep clock drift out.
#[derive(Debug, Default)]
struct QueueDelay {
    base: Option<Instant>,
    window_start: Option<Instant>,
    current_min: Option<i64>,
    previous_min: Option<i64>,
}

impl QueueDelay {
    /// The largest queueing delay (µs) among `reports`.
    fn max_of(&mut self, now: Instant, reports: &[PacketReport]) -> u64 {
        let base = *self.base.get_or_insert(now);
        // Signed: reports may name packets sent before the first call.
        let since_base = |t: Instant| match t.checked_duration_since(base) {
            Some(after) => after.as_micros() as i64,
            None => -(base.saturating_duration_since(t).as_micros() as i64),
        };
        if self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= DELAY_BASELINE_WINDOW)
        {
            self.window_start = Some(now);
            self.previous_min = self.current_min.take();
        }
        let delays: Vec<i64> = reports
            .iter()
            .filter_map(|r| {
                let arrival = r.arrival?.as_micros() as i64;
                let departure = since_base(r.departure);
                Some(arrival - departure)
            })
            .collect();
        for &d in &delays {
            self.current_min = Some(self.current_min.map_or(d, |m| m.min(d)));
        }
        let floor = match (self.current_min, self.previous_min) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return 0,
        };
        delays
            .iter()
            .map(|d| (d - floor).max(0) as u64)
            .max()
            .unwrap_or(0)
    }
}

/// GCC whose announced target is the pacing rate ([`PACING_FACTOR`] × the estimate); it also
/// counts reported losses and queueing delay for the engine's upgrade probes.
struct PacedGcc(Gcc, SharedEstimate, QueueDelay);

impl BandwidthEstimator for PacedGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let queue = self.2.max_of(now, reports);
        self.1.count(reports, queue);
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

/// Hands only streams that negotiated transport-cc to the wrapped interceptor: the congestion
/// controller would otherwise keep a send history of every packet of a subscriber that never
/// sends feedback (aiortc, the load generator, many WHEP players).
struct TransportCcStreamsOnly<I>(I);

fn has_transport_cc(info: &StreamInfo) -> bool {
    info.rtp_header_extensions
        .iter()
        .any(|ext| ext.uri == TRANSPORT_CC_URI)
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for TransportCcStreamsOnly<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.0.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.0.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.0.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for TransportCcStreamsOnly<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if has_transport_cc(info) {
            self.0.bind_local_stream(info);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if has_transport_cc(info) {
            self.0.unbind_local_stream(info);
        }
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
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
        QueueDelay::default(),
    );
    let registry = registry
        .with(
            Slot::CongestionControl,
            TransportCcStreamsOnly(CongestionControlBuilder::new(gcc).build()),
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

    fn report(id: u64, departure: Instant, arrival_ms: Option<u64>) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1200,
            arrived: arrival_ms.is_some(),
            departure,
            arrival: arrival_ms.map(Duration::from_millis),
            ecn: Default::default(),
        }
    }

    #[test]
    fn queueing_delay_is_the_one_way_delay_above_the_empty_queue() {
        let t = Instant::now();
        let mut q = QueueDelay::default();
        let ms = Duration::from_millis;
        // Receiver clock 1000 ms ahead; 10 ms path; then packets queue up behind each other.
        let steady: Vec<_> = (0..5)
            .map(|i| report(i, t + ms(i * 20), Some(1010 + i * 20)))
            .collect();
        assert_eq!(q.max_of(t + ms(100), &steady), 0);
        let queued: Vec<_> = (5..10)
            .map(|i| report(i, t + ms(i * 20), Some(1010 + i * 20 + (i - 4) * 30)))
            .collect();
        assert_eq!(q.max_of(t + ms(300), &queued), 150_000);
        // Lost packets carry no delay.
        assert_eq!(q.max_of(t + ms(400), &[report(11, t + ms(220), None)]), 0);
    }

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
