//! Simulcast layer choices for one subscriber connection, from its bandwidth estimate.
//!
//! Owns [`SubscriberBandwidthAllocator`]: each time it is asked (every ~200 ms and whenever the
//! subscribed tracks change) it takes the connection's bandwidth estimate, the bitrate of the
//! audio it receives and its video tracks — each with a [`VideoPriority`], the measured bitrate
//! of each layer ([`LayerBitrateMeter::bitrates`](super::LayerBitrateMeter::bitrates); 0 = not
//! flowing) and the highest layer the subscriber asked for (its cap) — and picks the layer to
//! forward of each track. A track's *usable* layers are the flowing ones at or below its cap;
//! only those are ever chosen.
//!
//! - **No estimate yet**: every track gets its highest usable layer.
//! - **Audio first**: the audio bitrate is taken off the estimate before any video.
//! - **Lowest layers next**: every track gets its lowest usable layer, screen shares first, then
//!   cameras in the caller's order. Only a camera whose lowest layer no longer fits in what is
//!   left gets nothing (`None`); a later, cheaper camera may still fit. A screen share always
//!   gets its lowest layer, even over budget.
//! - **Then the rest**, track by track in the same order, each with what is left plus its own
//!   lowest layer: a track keeps its layer while that layer's bitrate fits (× 1.0), else it goes
//!   down at once to the highest usable layer that fits. It goes up one usable layer only when
//!   that layer's bitrate × [`UP_FACTOR_PERCENT`] % has fitted at every call for [`UP_HOLD`]
//!   (checked at the calls only); once it has, the next layer's hold starts at the same call. A
//!   camera that got nothing comes back to its lowest layer the same way. An earlier track in
//!   the order may thus take budget from a later one, which then goes down.
//! - **Back-off**: going down for lack of budget (the estimate fell, or an earlier track took the
//!   budget) blocks upgrades to the layer given up, and above, for [`UPGRADE_BACKOFF_INITIAL`],
//!   doubling with every repeated failure up to [`UPGRADE_BACKOFF_MAX`]; the hold starts only
//!   after the back-off. The doubling starts over when the layer given up had been held for
//!   [`UPGRADE_STICKS_AFTER`]. A camera that lost its video is blocked from getting its lowest
//!   layer back. Going down because the cap was lowered or a layer stopped flowing is no failure.
//! - **First decisions** — a new track, a track whose layers start flowing, or a raised cap —
//!   go straight to the highest usable layer whose bitrate × [`UP_FACTOR_PERCENT`] % fits (not
//!   backed off), without hold. A current layer that stopped flowing or is above a lowered cap
//!   is replaced at once by the highest usable layer below it (or the lowest usable one).
//!
//! Tracks missing from a call are forgotten. The returned [`Allocation`] tells whether any
//! track's layer differs from the previous call or a track is new, so the caller touches its
//! forwarders only then. A call allocates only for a new track's state or to grow its output
//! buffer to more tracks than before.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::layer_selector::MAX_LAYER;

/// Headroom for going up: the next layer's bitrate × this / 100 must fit. 20 % covers the
/// ordinary wobble of a congestion-controlled estimate and of measured layer bitrates (content,
/// keyframes), so a layer just reached is not lost again at the × 1.0 line at the next call.
pub const UP_FACTOR_PERCENT: u64 = 120;
/// How long the headroom must hold before going up a layer: about seven calls at 200 ms, longer
/// than one optimistic estimate, short enough to follow a ramp-up (0.3 → 3 Mbit/s takes two
/// holds).
pub const UP_HOLD: Duration = Duration::from_millis(1500);
/// Upgrades blocked after the first failure: a little over one hold time.
pub const UPGRADE_BACKOFF_INITIAL: Duration = Duration::from_secs(2);
/// Longest upgrade block (2, 4, 6 s): the media loop probes an upgrade with padding before it
/// applies it, so a retry on a link that keeps failing costs a second of extra packets, not a
/// keyframe; and a link that recovers is found again within ten seconds.
pub const UPGRADE_BACKOFF_MAX: Duration = Duration::from_secs(6);
/// A layer held this long counts as a successful upgrade: the next failure backs off from
/// [`UPGRADE_BACKOFF_INITIAL`] again.
pub const UPGRADE_STICKS_AFTER: Duration = Duration::from_secs(10);

const LAYER_COUNT: usize = MAX_LAYER as usize + 1;

/// Which tracks are served first when the budget is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VideoPriority {
    Screen,
    Camera,
}

/// One video track the subscriber receives, as input to [`SubscriberBandwidthAllocator::allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedVideoTrack<K> {
    /// Identifies the track across calls; unique within one call.
    pub key: K,
    pub priority: VideoPriority,
    /// Measured bitrate of each layer in bit/s, lowest first; 0 = not flowing. A non-simulcast
    /// track has layer 0 only.
    pub layer_bitrates: [u64; LAYER_COUNT],
    /// Highest layer the subscriber asked for (clamped to [`MAX_LAYER`]).
    pub max_layer: u8,
}

/// The result of one [`SubscriberBandwidthAllocator::allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation<'a> {
    /// The layer to forward of each track, in the order the tracks were passed; `None` = forward
    /// no video of it (nothing usable flows, or a camera whose lowest layer does not fit).
    pub layers: &'a [Option<u8>],
    /// Whether a layer differs from the previous call or a track is new.
    pub changed: bool,
}

/// An upgrade whose headroom has held since `since`.
#[derive(Debug, Clone, Copy)]
struct PendingUpgrade {
    layer: u8,
    since: Instant,
}

/// Upgrades to `layer` and above wait until `until`.
#[derive(Debug, Clone, Copy)]
struct UpgradeBackoff {
    layer: u8,
    until: Instant,
    /// Failures in a row; kept after `until` so that a repeated failure doubles the block.
    failures: u32,
}

/// The allocator's memory of one track.
#[derive(Debug, Clone)]
struct TrackState {
    layer: Option<u8>,
    layer_since: Instant,
    /// No decision yet, or nothing usable flowed at the last one: the next is a first decision.
    fresh: bool,
    max_layer: u8,
    pending: Option<PendingUpgrade>,
    backoff: Option<UpgradeBackoff>,
    /// The last call that listed the track.
    call: u64,
}

/// One track's layers as seen at one call.
#[derive(Debug, Clone, Copy)]
struct Ladder {
    bitrates: [u64; LAYER_COUNT],
    max_layer: u8,
}

impl Ladder {
    fn of<K>(track: &SubscribedVideoTrack<K>) -> Self {
        Self {
            bitrates: track.layer_bitrates,
            max_layer: track.max_layer.min(MAX_LAYER),
        }
    }

    fn cost(self, layer: Option<u8>) -> u64 {
        layer.map_or(0, |l| self.bitrates[usize::from(l)])
    }

    /// Usable layers (flowing, at or below the cap), lowest first.
    fn usable(self) -> impl DoubleEndedIterator<Item = u8> {
        (0..=self.max_layer).filter(move |&l| self.bitrates[usize::from(l)] > 0)
    }

    fn lowest(self) -> Option<u8> {
        self.usable().next()
    }

    fn highest(self) -> Option<u8> {
        self.usable().next_back()
    }

    fn next_above(self, layer: Option<u8>) -> Option<u8> {
        self.usable()
            .find(|&l| layer.is_none_or(|current| l > current))
    }
}

/// Whether `cost` × [`UP_FACTOR_PERCENT`] % fits in `available`.
fn fits_with_headroom(cost: u64, available: u64) -> bool {
    cost.saturating_mul(UP_FACTOR_PERCENT) <= available.saturating_mul(100)
}

fn backoff_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    UPGRADE_BACKOFF_INITIAL
        .saturating_mul(1 << doublings)
        .min(UPGRADE_BACKOFF_MAX)
}

/// The tracks with their index, screen shares first, each class in the caller's order.
fn in_priority_order<K>(
    tracks: &[SubscribedVideoTrack<K>],
) -> impl Iterator<Item = (usize, &SubscribedVideoTrack<K>)> {
    [VideoPriority::Screen, VideoPriority::Camera]
        .into_iter()
        .flat_map(move |class| {
            tracks
                .iter()
                .enumerate()
                .filter(move |(_, track)| track.priority == class)
        })
}

impl TrackState {
    fn new(max_layer: u8, now: Instant) -> Self {
        Self {
            layer: None,
            layer_since: now,
            fresh: true,
            max_layer,
            pending: None,
            backoff: None,
            call: 0,
        }
    }

    /// Sets the layer; whether it changed.
    fn set_layer(&mut self, layer: Option<u8>, now: Instant) -> bool {
        if self.layer == layer {
            return false;
        }
        self.layer = layer;
        self.layer_since = now;
        true
    }

    fn is_backed_off(&self, layer: u8, now: Instant) -> bool {
        self.backoff
            .is_some_and(|b| now < b.until && layer >= b.layer)
    }

    /// The lowest layer the track is given in the first pass, out of `remaining`.
    fn lowest_layer_grant(
        &self,
        ladder: Ladder,
        priority: VideoPriority,
        remaining: u64,
    ) -> Option<u8> {
        let lowest = ladder.lowest()?;
        let served = self.fresh || self.layer.is_some();
        let fits = ladder.cost(Some(lowest)) <= remaining;
        (priority == VideoPriority::Screen || (served && fits)).then_some(lowest)
    }

    /// The layer for this call, given the lowest layer granted in the first pass and the budget
    /// `available` to the track (what is left plus that grant's cost).
    fn decide(
        &mut self,
        ladder: Ladder,
        granted: Option<u8>,
        available: u64,
        now: Instant,
    ) -> Option<u8> {
        let cap_raised = ladder.max_layer > self.max_layer;
        self.max_layer = ladder.max_layer;
        if ladder.lowest().is_none() {
            self.fresh = true;
            self.pending = None;
            return None;
        }
        let kept = if self.fresh {
            granted
        } else {
            self.keep_or_go_down(ladder, granted, available, now)
        };
        let first_decision = std::mem::take(&mut self.fresh) || cap_raised;
        if first_decision && kept.is_some() {
            self.pending = None;
            return kept.max(self.best_first_layer(ladder, available, now));
        }
        self.step_up(ladder, kept, available, now)
    }

    /// The current layer if it still fits, else the highest usable one below it that does (at
    /// least `granted`); records a failure when the budget forced it down.
    fn keep_or_go_down(
        &mut self,
        ladder: Ladder,
        granted: Option<u8>,
        available: u64,
        now: Instant,
    ) -> Option<u8> {
        let Some(current) = self.layer else {
            return granted;
        };
        let Some(floor) = granted else {
            // Not even the lowest layer fits any more: the camera loses its video, and getting
            // the lowest layer back is the upgrade that backs off.
            if let Some(lowest) = ladder.lowest() {
                self.record_failure(lowest, now);
            }
            return None;
        };
        // A layer that stopped flowing or is above a lowered cap is replaced, which is no failure.
        let seated = ladder
            .usable()
            .rev()
            .find(|&l| l <= current)
            .unwrap_or(floor);
        if ladder.cost(Some(seated)) <= available {
            return Some(seated);
        }
        self.record_failure(seated, now);
        let lower = ladder
            .usable()
            .rev()
            .find(|&l| l < seated && ladder.cost(Some(l)) <= available);
        Some(lower.map_or(floor, |l| l.max(floor)))
    }

    fn record_failure(&mut self, given_up: u8, now: Instant) {
        let stuck = now.saturating_duration_since(self.layer_since) >= UPGRADE_STICKS_AFTER;
        let failures = match self.backoff {
            Some(b) if !stuck => b.failures.saturating_add(1),
            _ => 1,
        };
        self.backoff = Some(UpgradeBackoff {
            layer: given_up,
            until: now + backoff_after(failures),
            failures,
        });
        self.pending = None;
    }

    /// Highest usable layer whose bitrate fits with headroom and is not backed off.
    fn best_first_layer(&self, ladder: Ladder, available: u64, now: Instant) -> Option<u8> {
        ladder.usable().rev().find(|&l| {
            fits_with_headroom(ladder.cost(Some(l)), available) && !self.is_backed_off(l, now)
        })
    }

    /// The next usable layer above `layer` if it fits with headroom and is not backed off.
    fn upgrade_candidate(
        &self,
        ladder: Ladder,
        layer: Option<u8>,
        available: u64,
        now: Instant,
    ) -> Option<u8> {
        ladder.next_above(layer).filter(|&next| {
            fits_with_headroom(ladder.cost(Some(next)), available) && !self.is_backed_off(next, now)
        })
    }

    /// One layer up from `layer` once the upgrade's headroom has held for [`UP_HOLD`].
    fn step_up(
        &mut self,
        ladder: Ladder,
        layer: Option<u8>,
        available: u64,
        now: Instant,
    ) -> Option<u8> {
        let Some(next) = self.upgrade_candidate(ladder, layer, available, now) else {
            self.pending = None;
            return layer;
        };
        match self.pending {
            Some(pending) if pending.layer == next => {
                if now.saturating_duration_since(pending.since) < UP_HOLD {
                    return layer;
                }
                self.pending = self
                    .upgrade_candidate(ladder, Some(next), available, now)
                    .map(|layer| PendingUpgrade { layer, since: now });
                Some(next)
            }
            _ => {
                self.pending = Some(PendingUpgrade {
                    layer: next,
                    since: now,
                });
                layer
            }
        }
    }
}

/// Layer choices for the video of one subscriber connection (see the module doc).
#[derive(Debug, Clone)]
pub struct SubscriberBandwidthAllocator<K> {
    tracks: HashMap<K, TrackState>,
    /// Output of the latest call, reused.
    layers: Vec<Option<u8>>,
    calls: u64,
}

impl<K: Clone + Eq + Hash> Default for SubscriberBandwidthAllocator<K> {
    fn default() -> Self {
        Self {
            tracks: HashMap::new(),
            layers: Vec::new(),
            calls: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> SubscriberBandwidthAllocator<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks the layer of every track at `now`. `estimate` is the connection's bandwidth
    /// estimate in bit/s (`None`: none yet), `audio_bitrate` the bit/s of the audio it
    /// receives. Tracks not listed are forgotten.
    pub fn allocate(
        &mut self,
        now: Instant,
        estimate: Option<u64>,
        audio_bitrate: u64,
        tracks: &[SubscribedVideoTrack<K>],
    ) -> Allocation<'_> {
        self.calls += 1;
        let call = self.calls;
        self.layers.clear();
        self.layers.resize(tracks.len(), None);
        let mut changed = false;
        for track in tracks {
            if !self.tracks.contains_key(&track.key) {
                let state = TrackState::new(Ladder::of(track).max_layer, now);
                self.tracks.insert(track.key.clone(), state);
                changed = true;
            }
        }

        match estimate {
            None => {
                for (i, track) in tracks.iter().enumerate() {
                    let Some(state) = self.tracks.get_mut(&track.key) else {
                        continue;
                    };
                    let ladder = Ladder::of(track);
                    let layer = ladder.highest();
                    state.call = call;
                    state.fresh = layer.is_none();
                    state.max_layer = ladder.max_layer;
                    state.pending = None;
                    changed |= state.set_layer(layer, now);
                    self.layers[i] = layer;
                }
            }
            Some(estimate) => {
                let mut remaining = estimate.saturating_sub(audio_bitrate);
                for (i, track) in in_priority_order(tracks) {
                    let Some(state) = self.tracks.get(&track.key) else {
                        continue;
                    };
                    let ladder = Ladder::of(track);
                    let granted = state.lowest_layer_grant(ladder, track.priority, remaining);
                    remaining = remaining.saturating_sub(ladder.cost(granted));
                    self.layers[i] = granted;
                }
                for (i, track) in in_priority_order(tracks) {
                    let Some(state) = self.tracks.get_mut(&track.key) else {
                        continue;
                    };
                    let ladder = Ladder::of(track);
                    let granted = self.layers[i];
                    let available = remaining.saturating_add(ladder.cost(granted));
                    let layer = state.decide(ladder, granted, available, now);
                    remaining = available.saturating_sub(ladder.cost(layer));
                    state.call = call;
                    changed |= state.set_layer(layer, now);
                    self.layers[i] = layer;
                }
            }
        }

        self.tracks.retain(|_, state| state.call == call);
        Allocation {
            layers: &self.layers,
            changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium-like layer bitrates of a 720p camera.
    const CHROME: [u64; 3] = [150_000, 500_000, 1_500_000];
    const AUDIO: u64 = 40_000;

    type Allocator = SubscriberBandwidthAllocator<&'static str>;
    type Track = SubscribedVideoTrack<&'static str>;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn camera(key: &'static str) -> Track {
        SubscribedVideoTrack {
            key,
            priority: VideoPriority::Camera,
            layer_bitrates: CHROME,
            max_layer: 2,
        }
    }

    fn screen(key: &'static str) -> Track {
        SubscribedVideoTrack {
            priority: VideoPriority::Screen,
            ..camera(key)
        }
    }

    fn with_layers(track: Track, layer_bitrates: [u64; 3]) -> Track {
        SubscribedVideoTrack {
            layer_bitrates,
            ..track
        }
    }

    fn with_cap(track: Track, max_layer: u8) -> Track {
        SubscribedVideoTrack { max_layer, ..track }
    }

    /// One call with [`AUDIO`]; the layers chosen.
    fn layers(a: &mut Allocator, now: Instant, estimate: u64, tracks: &[Track]) -> Vec<Option<u8>> {
        a.allocate(now, Some(estimate), AUDIO, tracks)
            .layers
            .to_vec()
    }

    /// Calls every 100 ms at offsets `[from_ms, to_ms)` from `base`; the changes, as (offset,
    /// layers).
    fn drive(
        a: &mut Allocator,
        base: Instant,
        (from_ms, to_ms): (u64, u64),
        estimate: u64,
        tracks: &[Track],
    ) -> Vec<(u64, Vec<Option<u8>>)> {
        let mut changes = Vec::new();
        for at in (from_ms..to_ms).step_by(100) {
            let allocation = a.allocate(base + ms(at), Some(estimate), AUDIO, tracks);
            if allocation.changed {
                changes.push((at, allocation.layers.to_vec()));
            }
        }
        changes
    }

    /// Calls every 100 ms after `from` at `estimate` until the first track is on `layer`; the
    /// time of that call.
    fn until_layer(
        a: &mut Allocator,
        from: Instant,
        estimate: u64,
        tracks: &[Track],
        layer: u8,
    ) -> Instant {
        let mut now = from;
        for _ in 0..1000 {
            now += ms(100);
            if layers(a, now, estimate, tracks)[0] == Some(layer) {
                return now;
            }
        }
        panic!("never reached layer {layer}");
    }

    #[test]
    fn a_low_estimate_gives_the_lowest_layer() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        assert_eq!(layers(&mut a, t0, 300_000, &[camera("cam")]), [Some(0)]);
    }

    #[test]
    fn a_high_estimate_gives_the_highest_layer_at_once() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let first = a.allocate(t0, Some(5_000_000), AUDIO, &[camera("cam")]);
        assert_eq!(first.layers, [Some(2)]);
        assert!(first.changed);
        let again = a.allocate(t0 + ms(200), Some(5_000_000), AUDIO, &[camera("cam")]);
        assert_eq!(again.layers, [Some(2)]);
        assert!(!again.changed);
    }

    #[test]
    fn a_first_decision_keeps_headroom() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        // 1.7 Mbit/s for video covers layer 2 (1.5 M) but not with 20 % headroom (1.8 M).
        let tracks = [camera("cam")];
        assert_eq!(layers(&mut a, t0, 1_740_000, &tracks), [Some(1)]);
        assert!(drive(&mut a, t0, (100, 10_000), 1_740_000, &tracks).is_empty());
    }

    #[test]
    fn without_an_estimate_every_track_gets_its_cap() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let tracks = [
            camera("a"),
            with_cap(camera("b"), 1),
            with_cap(camera("c"), 0),
            with_layers(camera("d"), [150_000, 500_000, 0]),
        ];
        let first = a.allocate(t0, None, AUDIO, &tracks);
        assert_eq!(first.layers, [Some(2), Some(1), Some(0), Some(1)]);
        // The first estimate is low: down at once.
        let low = layers(&mut a, t0 + ms(200), 700_000, &tracks);
        assert_eq!(low, [Some(0), Some(0), Some(0), Some(0)]);
    }

    #[test]
    fn audio_is_reserved_before_video() {
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        let mut a = Allocator::new();
        assert_eq!(a.allocate(t0, Some(700_000), 0, &tracks).layers, [Some(1)]);
        let mut a = Allocator::new();
        assert_eq!(
            a.allocate(t0, Some(700_000), 200_000, &tracks).layers,
            [Some(0)]
        );
    }

    #[test]
    fn a_rising_estimate_climbs_one_layer_per_hold() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        assert_eq!(layers(&mut a, t0, 300_000, &tracks), [Some(0)]);
        assert!(drive(&mut a, t0, (100, 1000), 300_000, &tracks).is_empty());
        // From 1 s on the estimate is 3 Mbit/s: layer 1 after one hold, layer 2 after another.
        let changes = drive(&mut a, t0, (1000, 8000), 3_000_000, &tracks);
        let hold = UP_HOLD.as_millis() as u64;
        assert_eq!(
            changes,
            [
                (1000 + hold, vec![Some(1)]),
                (1000 + 2 * hold, vec![Some(2)])
            ]
        );
    }

    #[test]
    fn a_brief_rise_does_not_go_up() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        layers(&mut a, t0, 300_000, &tracks);
        // 3 Mbit/s for a little less than the hold, then one low call: the hold starts over.
        let hold = UP_HOLD.as_millis() as u64;
        assert!(drive(&mut a, t0, (100, hold), 3_000_000, &tracks).is_empty());
        assert!(drive(&mut a, t0, (hold, hold + 100), 300_000, &tracks).is_empty());
        let changes = drive(&mut a, t0, (hold + 100, 3 * hold), 3_000_000, &tracks);
        assert_eq!(changes.first(), Some(&(2 * hold + 100, vec![Some(1)])));
    }

    #[test]
    fn a_falling_estimate_goes_down_at_once() {
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        let mut a = Allocator::new();
        layers(&mut a, t0, 5_000_000, &tracks);
        assert_eq!(layers(&mut a, t0 + ms(200), 1_000_000, &tracks), [Some(1)]);
        assert_eq!(layers(&mut a, t0 + ms(400), 300_000, &tracks), [Some(0)]);
        // Several layers in one step.
        let mut a = Allocator::new();
        layers(&mut a, t0, 5_000_000, &tracks);
        assert_eq!(layers(&mut a, t0 + ms(200), 300_000, &tracks), [Some(0)]);
        // Exactly the current layer's bitrate (× 1.0) is enough to keep it.
        let mut a = Allocator::new();
        layers(&mut a, t0, 5_000_000, &tracks);
        assert_eq!(layers(&mut a, t0 + ms(200), 1_540_000, &tracks), [Some(2)]);
        assert_eq!(layers(&mut a, t0 + ms(400), 1_539_999, &tracks), [Some(1)]);
    }

    #[test]
    fn a_screen_share_wins_over_a_camera_when_short() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        // The camera is listed first; the screen share is still served first.
        let tracks = [camera("cam"), screen("screen")];
        assert_eq!(layers(&mut a, t0, 1_000_000, &tracks), [Some(0), Some(1)]);
        // Room for one lowest layer only: the screen share's.
        assert_eq!(
            layers(&mut a, t0 + ms(200), 200_000, &tracks),
            [None, Some(0)]
        );
        // Not even that: the screen share keeps its lowest layer anyway.
        assert_eq!(
            layers(&mut a, t0 + ms(400), 50_000, &tracks),
            [None, Some(0)]
        );
        assert_eq!(layers(&mut a, t0 + ms(600), 0, &tracks), [None, Some(0)]);
    }

    #[test]
    fn upgrades_follow_the_callers_order_among_cameras() {
        let t0 = Instant::now();
        let mut a = Allocator::new();
        assert_eq!(
            layers(&mut a, t0, 2_000_000, &[camera("a"), camera("b")]),
            [Some(2), Some(0)]
        );
        let mut a = Allocator::new();
        assert_eq!(
            layers(&mut a, t0, 2_000_000, &[camera("b"), camera("a")]),
            [Some(2), Some(0)]
        );
    }

    #[test]
    fn an_earlier_track_takes_budget_from_a_later_one() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        assert_eq!(
            layers(&mut a, t0, 2_200_000, &[camera("b"), camera("a")]),
            [Some(2), Some(1)]
        );
        // `a` moves to the front: after one hold it goes up and `b` goes down at once.
        let flipped = [camera("a"), camera("b")];
        let changes = drive(&mut a, t0, (200, 5000), 2_200_000, &flipped);
        let at = 200 + UP_HOLD.as_millis() as u64;
        assert_eq!(changes, [(at, vec![Some(2), Some(1)])]);
    }

    #[test]
    fn the_cap_is_respected() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let capped = [
            with_cap(camera("a"), 1),
            with_cap(camera("b"), 0),
            with_cap(camera("c"), 9),
        ];
        assert_eq!(
            layers(&mut a, t0, 10_000_000, &capped),
            [Some(1), Some(0), Some(2)]
        );
        // Lowering the cap goes down at once; raising it goes up at once, as a first decision.
        let lowered = [
            with_cap(camera("a"), 0),
            with_cap(camera("b"), 0),
            with_cap(camera("c"), 1),
        ];
        assert_eq!(
            layers(&mut a, t0 + ms(200), 10_000_000, &lowered),
            [Some(0), Some(0), Some(1)]
        );
        let raised = [camera("a"), camera("b"), camera("c")];
        assert_eq!(
            layers(&mut a, t0 + ms(400), 10_000_000, &raised),
            [Some(2), Some(2), Some(2)]
        );
        // A raised cap still needs the budget.
        let mut a = Allocator::new();
        layers(&mut a, t0, 1_000_000, &[with_cap(camera("a"), 0)]);
        assert_eq!(
            layers(&mut a, t0 + ms(200), 1_000_000, &[camera("a")]),
            [Some(1)]
        );
    }

    #[test]
    fn a_layer_not_flowing_is_never_chosen() {
        let t0 = Instant::now();
        let gap = [with_layers(camera("cam"), [150_000, 0, 1_500_000])];
        let mut a = Allocator::new();
        assert_eq!(layers(&mut a, t0, 1_000_000, &gap), [Some(0)]);
        // Going up skips the missing layer.
        let changes = drive(&mut a, t0, (100, 5000), 3_000_000, &gap);
        assert_eq!(changes, [(100 + UP_HOLD.as_millis() as u64, vec![Some(2)])]);
        let mut a = Allocator::new();
        let tracks = [
            with_cap(with_layers(camera("a"), [0, 500_000, 1_500_000]), 0),
            with_layers(camera("b"), [0, 0, 0]),
            with_layers(screen("c"), [0, 0, 0]),
            with_layers(camera("d"), [0, 500_000, 0]),
        ];
        let allocation = a.allocate(t0, Some(5_000_000), AUDIO, &tracks);
        assert_eq!(allocation.layers, [None, None, None, Some(1)]);
        assert_eq!(
            a.allocate(t0, None, AUDIO, &tracks).layers,
            [None, None, None, Some(1)]
        );
    }

    #[test]
    fn a_layer_that_stops_flowing_is_replaced_at_once_without_back_off() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        layers(&mut a, t0, 5_000_000, &[camera("cam")]);
        let top_gone = [with_layers(camera("cam"), [150_000, 500_000, 0])];
        assert_eq!(
            layers(&mut a, t0 + ms(100), 5_000_000, &top_gone),
            [Some(1)]
        );
        // It comes back: up after one hold, no back-off.
        let changes = drive(&mut a, t0, (200, 5000), 5_000_000, &[camera("cam")]);
        assert_eq!(changes, [(200 + UP_HOLD.as_millis() as u64, vec![Some(2)])]);
    }

    #[test]
    fn a_track_whose_layers_start_flowing_gets_a_first_decision() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let silent = [with_layers(camera("cam"), [0, 0, 0])];
        let first = a.allocate(t0, Some(5_000_000), AUDIO, &silent);
        assert_eq!((first.layers, first.changed), (&[None][..], true));
        assert_eq!(
            layers(&mut a, t0 + ms(200), 5_000_000, &[camera("cam")]),
            [Some(2)]
        );
    }

    #[test]
    fn the_lowest_layer_is_kept_when_nothing_more_fits() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        // 310 kbit/s for video: two lowest layers; the third camera gets nothing, a later,
        // cheaper one still fits.
        let tracks = [
            camera("a"),
            camera("b"),
            camera("c"),
            with_layers(camera("d"), [10_000, 0, 0]),
        ];
        assert_eq!(
            layers(&mut a, t0, 350_000, &tracks),
            [Some(0), Some(0), None, Some(0)]
        );
        // Below even one lowest layer: cameras get nothing.
        assert_eq!(
            layers(&mut a, t0 + ms(200), 100_000, &tracks[..2]),
            [None, None]
        );
    }

    #[test]
    fn a_camera_that_lost_its_video_resumes_after_back_off_and_hold() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        layers(&mut a, t0, 300_000, &tracks);
        assert_eq!(layers(&mut a, t0 + ms(200), 100_000, &tracks), [None]);
        let backoff = UPGRADE_BACKOFF_INITIAL.as_millis() as u64;
        let hold = UP_HOLD.as_millis() as u64;
        let changes = drive(&mut a, t0, (300, 10_000), 300_000, &tracks);
        assert_eq!(changes, [(200 + backoff + hold, vec![Some(0)])]);
    }

    #[test]
    fn failed_upgrades_back_off_doubling_up_to_the_maximum() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        // At 1 Mbit/s layer 1 fits with headroom (layer 2 does not); at 500 kbit/s it does not.
        const HIGH: u64 = 1_000_000;
        const LOW: u64 = 500_000;
        layers(&mut a, t0, LOW, &tracks);
        let up = until_layer(&mut a, t0, HIGH, &tracks, 1);
        assert_eq!(
            up - t0,
            ms(100) + UP_HOLD,
            "no back-off before the first failure"
        );
        let mut now = up;
        let mut waits = Vec::new();
        for _ in 0..5 {
            // The upgrade fails at the next call.
            now += ms(100);
            assert_eq!(layers(&mut a, now, LOW, &tracks), [Some(0)]);
            let up = until_layer(&mut a, now, HIGH, &tracks, 1);
            waits.push(up - now - UP_HOLD);
            now = up;
        }
        let secs = Duration::from_secs;
        assert_eq!(waits, [secs(2), secs(4), secs(6), secs(6), secs(6)]);
        // The upgrade sticks for a while: the next failure backs off from the start again.
        assert!(
            drive(
                &mut a,
                now,
                (100, UPGRADE_STICKS_AFTER.as_millis() as u64 + 100),
                HIGH,
                &tracks
            )
            .is_empty()
        );
        now += UPGRADE_STICKS_AFTER + ms(100);
        assert_eq!(layers(&mut a, now, LOW, &tracks), [Some(0)]);
        let up = until_layer(&mut a, now, HIGH, &tracks, 1);
        assert_eq!(up - now, UPGRADE_BACKOFF_INITIAL + UP_HOLD);
    }

    #[test]
    fn a_back_off_blocks_only_the_layer_given_up_and_above() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        layers(&mut a, t0, 5_000_000, &tracks);
        // Down from 2 straight to 0; layer 1 may come back after one hold, layer 2 only after
        // the back-off and then a hold.
        assert_eq!(layers(&mut a, t0 + ms(100), 300_000, &tracks), [Some(0)]);
        let changes = drive(&mut a, t0, (200, 10_000), 5_000_000, &tracks);
        let hold = UP_HOLD.as_millis() as u64;
        let backoff_end = 100 + UPGRADE_BACKOFF_INITIAL.as_millis() as u64;
        assert_eq!(
            changes,
            [
                (200 + hold, vec![Some(1)]),
                (backoff_end + hold, vec![Some(2)])
            ]
        );
    }

    #[test]
    fn tracks_that_disappear_are_forgotten() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let tracks = [camera("cam")];
        layers(&mut a, t0, 5_000_000, &tracks);
        layers(&mut a, t0 + ms(100), 300_000, &tracks);
        let gone = a.allocate(t0 + ms(200), Some(5_000_000), AUDIO, &[]);
        assert_eq!((gone.layers, gone.changed), (&[][..], false));
        assert!(a.tracks.is_empty());
        // Back again: a new track, first decision, no back-off.
        let back = a.allocate(t0 + ms(300), Some(5_000_000), AUDIO, &tracks);
        assert_eq!((back.layers, back.changed), (&[Some(2)][..], true));
    }

    #[test]
    fn changed_reports_only_real_changes() {
        let mut a = Allocator::new();
        let t0 = Instant::now();
        let one = [camera("a")];
        let two = [camera("a"), with_layers(camera("b"), [0, 0, 0])];
        assert!(a.allocate(t0, Some(300_000), AUDIO, &one).changed);
        assert!(!a.allocate(t0 + ms(100), Some(320_000), AUDIO, &one).changed);
        assert!(
            a.allocate(t0 + ms(200), Some(320_000), AUDIO, &two).changed,
            "new track"
        );
        assert!(!a.allocate(t0 + ms(300), Some(320_000), AUDIO, &two).changed);
        assert!(
            a.allocate(t0 + ms(400), Some(100_000), AUDIO, &two).changed,
            "a lost its video"
        );
        assert!(
            !a.allocate(t0 + ms(500), Some(100_000), AUDIO, &one).changed,
            "b removed"
        );
    }
}
