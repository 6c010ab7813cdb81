//! Simulcast layer selection for one subscriber of one video track.
//!
//! Owns [`SimulcastLayerSelector`]: given the layer the subscriber wants and the packets that
//! arrive on each layer, it decides which packets to forward. Switches happen only on a keyframe
//! start of the target layer, so the subscriber's decoder never sees a frame it cannot decode.
//! Non-simulcast tracks use layer 0 only.

use std::time::{Duration, Instant};

/// Highest simulcast layer index (layers are 0 = lowest ..= 2 = highest).
pub const MAX_LAYER: u8 = 2;
const LAYER_COUNT: usize = MAX_LAYER as usize + 1;

/// A layer with no packet for this long is no longer live.
pub const LAYER_TIMEOUT: Duration = Duration::from_secs(1);

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerDecision {
    Forward,
    Drop,
}

/// Picks which simulcast layer a subscriber receives.
#[derive(Debug, Clone)]
pub struct SimulcastLayerSelector {
    wanted: u8,
    current: Option<u8>,
    last_packet_at: [Option<Instant>; LAYER_COUNT],
}

impl SimulcastLayerSelector {
    /// `wanted` is clamped to [`MAX_LAYER`].
    pub fn new(wanted: u8) -> Self {
        Self {
            wanted: wanted.min(MAX_LAYER),
            current: None,
            last_packet_at: [None; LAYER_COUNT],
        }
    }

    /// Changes the wanted layer (clamped to [`MAX_LAYER`]); the switch itself waits for a
    /// keyframe of the new target.
    pub fn set_wanted(&mut self, wanted: u8) {
        self.wanted = wanted.min(MAX_LAYER);
    }

    pub fn wanted(&self) -> u8 {
        self.wanted
    }

    /// Decides on one packet of `layer`. Records the layer as live, switches to the effective
    /// target if this packet is the target's keyframe start, and forwards only packets of the
    /// current layer. Packets of layers above [`MAX_LAYER`] are dropped and ignored.
    pub fn on_packet(&mut self, layer: u8, is_keyframe_start: bool, now: Instant) -> LayerDecision {
        let Some(last_packet_at) = self.last_packet_at.get_mut(usize::from(layer)) else {
            return LayerDecision::Drop;
        };
        *last_packet_at = Some(now);
        if is_keyframe_start
            && self.current != Some(layer)
            && self.effective_target(now) == Some(layer)
        {
            self.current = Some(layer);
        }
        if self.current == Some(layer) {
            LayerDecision::Forward
        } else {
            LayerDecision::Drop
        }
    }

    /// The layer on which a keyframe is awaited (the caller should request one from that layer's
    /// source), or `None` if the current layer is already the effective target or nothing is live.
    pub fn keyframe_needed(&mut self, now: Instant) -> Option<u8> {
        self.effective_target(now)
            .filter(|&target| self.current != Some(target))
    }

    /// Forgets the current layer: nothing is forwarded until the next keyframe of the target
    /// (the source's stream broke and a decoder needs a fresh start).
    pub fn restart(&mut self) {
        self.current = None;
    }

    /// The layer being forwarded, if any.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// Whether `layer` had a packet within [`LAYER_TIMEOUT`] before `now`.
    pub fn is_live(&self, layer: u8, now: Instant) -> bool {
        self.last_packet_at
            .get(usize::from(layer))
            .copied()
            .flatten()
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_TIMEOUT)
    }

    /// The layer the selector moves to: the highest live layer not above `wanted`, else the
    /// lowest live layer above it, else `None`.
    pub fn effective_target(&self, now: Instant) -> Option<u8> {
        let live = |layer: &u8| self.is_live(*layer, now);
        (0..=self.wanted)
            .rev()
            .find(live)
            .or_else(|| (self.wanted + 1..=MAX_LAYER).find(live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FWD: LayerDecision = LayerDecision::Forward;
    const DROP: LayerDecision = LayerDecision::Drop;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds a non-keyframe packet on every given layer at `now`.
    fn tick(selector: &mut SimulcastLayerSelector, layers: &[u8], now: Instant) {
        for &layer in layers {
            selector.on_packet(layer, false, now);
        }
    }

    #[test]
    fn drops_everything_until_a_keyframe_on_the_target() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(2);
        assert_eq!(s.keyframe_needed(t0), None, "nothing live yet");
        assert_eq!(s.on_packet(0, false, t0), DROP);
        assert_eq!(s.on_packet(1, false, t0), DROP);
        assert_eq!(s.on_packet(2, false, t0), DROP);
        assert_eq!(s.keyframe_needed(t0), Some(2));
        assert_eq!(
            s.on_packet(0, true, t0),
            DROP,
            "keyframe of a non-target layer"
        );
        assert_eq!(s.current(), None);
        assert_eq!(s.on_packet(2, true, t0), FWD);
        assert_eq!(s.current(), Some(2));
        assert_eq!(s.on_packet(2, false, t0), FWD);
        assert_eq!(s.on_packet(1, false, t0), DROP);
        assert_eq!(s.keyframe_needed(t0), None);
    }

    #[test]
    fn starts_on_lower_layer_when_wanted_is_not_live() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(2);
        assert_eq!(s.on_packet(0, true, t0), FWD);
        assert_eq!(s.current(), Some(0));
    }

    #[test]
    fn uses_lowest_live_layer_above_wanted_if_none_at_or_below() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(0);
        tick(&mut s, &[1, 2], t0);
        assert_eq!(s.keyframe_needed(t0), Some(1));
        assert_eq!(s.on_packet(2, true, t0), DROP);
        assert_eq!(s.on_packet(1, true, t0), FWD);
        assert_eq!(s.current(), Some(1));
    }

    #[test]
    fn switch_up_happens_only_on_target_keyframe() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(0);
        tick(&mut s, &[0, 1, 2], t0);
        assert_eq!(s.on_packet(0, true, t0), FWD);
        s.set_wanted(2);
        assert_eq!(s.keyframe_needed(t0), Some(2));
        let t1 = t0 + ms(30);
        // Until layer 2 delivers a keyframe, keep forwarding layer 0.
        assert_eq!(s.on_packet(0, false, t1), FWD);
        assert_eq!(s.on_packet(2, false, t1), DROP);
        assert_eq!(s.on_packet(1, true, t1), DROP, "not the target");
        assert_eq!(s.current(), Some(0));
        assert_eq!(s.on_packet(2, true, t1), FWD);
        assert_eq!(s.current(), Some(2));
        assert_eq!(s.on_packet(0, false, t1), DROP);
        assert_eq!(s.keyframe_needed(t1), None);
    }

    #[test]
    fn switch_down_happens_only_on_target_keyframe() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(2);
        tick(&mut s, &[0, 1, 2], t0);
        s.on_packet(2, true, t0);
        s.set_wanted(1);
        assert_eq!(s.keyframe_needed(t0), Some(1));
        assert_eq!(s.on_packet(2, false, t0), FWD);
        assert_eq!(s.on_packet(1, false, t0), DROP);
        assert_eq!(s.on_packet(1, true, t0), FWD);
        assert_eq!(s.on_packet(2, false, t0), DROP);
        assert_eq!(s.current(), Some(1));
    }

    #[test]
    fn keyframe_on_current_layer_does_not_disturb() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(1);
        tick(&mut s, &[1], t0);
        s.on_packet(1, true, t0);
        assert_eq!(s.on_packet(1, true, t0), FWD);
        assert_eq!(s.current(), Some(1));
    }

    #[test]
    fn falls_back_when_current_layer_dies() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(2);
        tick(&mut s, &[0, 1, 2], t0);
        s.on_packet(2, true, t0);
        // Layer 2 goes silent; 0 and 1 keep flowing.
        let mut now = t0;
        for _ in 0..10 {
            now += ms(100);
            tick(&mut s, &[0, 1], now);
        }
        assert!(!s.is_live(2, now));
        assert_eq!(s.keyframe_needed(now), Some(1));
        assert_eq!(s.on_packet(0, true, now), DROP, "layer 1 is the new target");
        assert_eq!(s.on_packet(1, true, now), FWD);
        assert_eq!(s.current(), Some(1));
        // Layer 2 comes back: move up again on its keyframe.
        now += ms(10);
        assert_eq!(s.on_packet(2, false, now), DROP);
        assert_eq!(s.keyframe_needed(now), Some(2));
        assert_eq!(s.on_packet(2, true, now), FWD);
        assert_eq!(s.current(), Some(2));
    }

    #[test]
    fn falls_back_upwards_when_lower_current_layer_dies() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(0);
        tick(&mut s, &[0, 1, 2], t0);
        s.on_packet(0, true, t0);
        let now = t0 + LAYER_TIMEOUT;
        tick(&mut s, &[1, 2], now);
        assert_eq!(s.keyframe_needed(now), Some(1));
        assert_eq!(s.on_packet(1, true, now), FWD);
        assert_eq!(s.current(), Some(1));
    }

    #[test]
    fn liveness_boundary_is_one_second() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(0);
        s.on_packet(0, false, t0);
        assert!(s.is_live(0, t0 + ms(999)));
        assert!(!s.is_live(0, t0 + LAYER_TIMEOUT));
    }

    #[test]
    fn nothing_live_means_no_keyframe_needed() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(1);
        s.on_packet(1, true, t0);
        assert_eq!(s.keyframe_needed(t0 + ms(5000)), None);
        assert_eq!(
            s.current(),
            Some(1),
            "current is kept until something else is live"
        );
        // The layer resumes without a keyframe: it is still the current layer.
        assert_eq!(s.on_packet(1, false, t0 + ms(6000)), FWD);
    }

    #[test]
    fn non_simulcast_track_uses_layer_zero() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(0);
        assert_eq!(s.on_packet(0, false, t0), DROP);
        assert_eq!(s.keyframe_needed(t0), Some(0));
        assert_eq!(s.on_packet(0, true, t0), FWD);
        assert_eq!(s.on_packet(0, false, t0), FWD);
        assert_eq!(s.keyframe_needed(t0), None);
    }

    #[test]
    fn out_of_range_layers_are_dropped_and_wanted_is_clamped() {
        let t0 = Instant::now();
        let mut s = SimulcastLayerSelector::new(200);
        assert_eq!(s.wanted(), MAX_LAYER);
        assert_eq!(s.on_packet(3, true, t0), DROP);
        assert_eq!(s.on_packet(255, true, t0), DROP);
        assert_eq!(s.keyframe_needed(t0), None);
        s.set_wanted(9);
        assert_eq!(s.wanted(), MAX_LAYER);
    }
}
