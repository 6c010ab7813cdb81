//! `PublishedLayerGate` (dynacast): which simulcast layers a publisher should send. A layer no
//! subscriber may receive — above every subscriber's cap, here and on other nodes — is paused
//! after [`PAUSE_AFTER`] of not being needed and resumed the moment one is; the lowest layer is
//! always sent, so a new subscriber gets video at once. Pure; time passed in.

use std::time::{Duration, Instant};

/// A layer unneeded for this long is paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(5);
const MAX_LAYERS: usize = 3;

/// The send state of one published simulcast track's layers.
#[derive(Debug, Clone)]
pub struct PublishedLayerGate {
    layer_count: usize,
    active: [bool; MAX_LAYERS],
    unneeded_since: [Option<Instant>; MAX_LAYERS],
}

impl PublishedLayerGate {
    /// Every one of `layer_count` layers (at most 3) active.
    pub fn new(layer_count: usize) -> Self {
        Self {
            layer_count: layer_count.clamp(1, MAX_LAYERS),
            active: [true; MAX_LAYERS],
            unneeded_since: [None; MAX_LAYERS],
        }
    }

    /// `highest_needed`: the highest layer any subscriber may receive now (`None`: nobody
    /// subscribes). Returns the new active flags, lowest layer first, when they changed.
    pub fn update(&mut self, highest_needed: Option<u8>, now: Instant) -> Option<Vec<bool>> {
        let mut changed = false;
        for layer in 1..self.layer_count {
            let needed = highest_needed.is_some_and(|h| usize::from(h) >= layer);
            if needed {
                self.unneeded_since[layer] = None;
                if !self.active[layer] {
                    self.active[layer] = true;
                    changed = true;
                }
                continue;
            }
            let since = *self.unneeded_since[layer].get_or_insert(now);
            if self.active[layer] && now.saturating_duration_since(since) >= PAUSE_AFTER {
                self.active[layer] = false;
                changed = true;
            }
        }
        changed.then(|| self.active[..self.layer_count].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unneeded_layers_pause_after_a_while_and_resume_at_once() {
        let t = Instant::now();
        let mut g = PublishedLayerGate::new(3);
        assert_eq!(g.update(Some(0), t), None, "not yet");
        assert_eq!(g.update(Some(0), t + PAUSE_AFTER / 2), None);
        assert_eq!(
            g.update(Some(0), t + PAUSE_AFTER),
            Some(vec![true, false, false])
        );
        assert_eq!(g.update(Some(0), t + PAUSE_AFTER * 2), None, "no repeat");
        assert_eq!(
            g.update(Some(2), t + PAUSE_AFTER * 2),
            Some(vec![true, true, true]),
            "a subscriber that may take the top layer resumes everything below it at once"
        );
    }

    #[test]
    fn a_brief_lull_pauses_nothing() {
        let t = Instant::now();
        let mut g = PublishedLayerGate::new(3);
        assert_eq!(g.update(Some(1), t), None);
        assert_eq!(g.update(Some(2), t + Duration::from_secs(3)), None);
        assert_eq!(g.update(Some(1), t + Duration::from_secs(4)), None);
        assert_eq!(
            g.update(Some(1), t + Duration::from_secs(9)),
            Some(vec![true, true, false])
        );
    }

    #[test]
    fn the_lowest_layer_is_always_sent() {
        let t = Instant::now();
        let mut g = PublishedLayerGate::new(2);
        assert_eq!(g.update(None, t), None);
        assert_eq!(g.update(None, t + PAUSE_AFTER), Some(vec![true, false]));
        let mut single = PublishedLayerGate::new(1);
        assert_eq!(single.update(None, t + PAUSE_AFTER), None);
    }
}
