//! `DominantSpeakerDetector`: who is speaking in a room, from the audio-level header extension
//! (RFC 6464) of each publisher's audio — pure, time passed in.
//!
//! Each audio packet's level (0 = loudest … 127 dBov = silence) becomes an activity value above a
//! noise floor, smoothed per speaker with an exponential average whose time constant is
//! [`SMOOTHING`]; a speaker not heard for [`SILENT_AFTER`] counts as silent. The dominant speaker
//! changes only when another speaker has been the loudest by a margin ([`SWITCH_MARGIN`]) for
//! [`SWITCH_AFTER`] in a row — a cough or a word does not take the floor — or at once when the
//! dominant one has gone silent and someone else speaks. Every change is kept in order, so the
//! N most recent dominant speakers ([`DominantSpeakerDetector::last_n`]) are known for last-N
//! video subscriptions.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Time constant of the per-speaker activity average.
pub const SMOOTHING: Duration = Duration::from_millis(300);
/// How long another speaker must lead before taking the floor.
pub const SWITCH_AFTER: Duration = Duration::from_millis(600);
/// How much louder (in smoothed activity) the challenger must be.
pub const SWITCH_MARGIN: f64 = 6.0;
/// No audio for this long: silent.
pub const SILENT_AFTER: Duration = Duration::from_millis(500);
/// Levels at or above this many dBov below full scale are background noise.
pub const NOISE_FLOOR_DBOV: u8 = 70;
/// Smoothed activity below which a speaker is not speaking.
pub const SPEAKING_ABOVE: f64 = 5.0;
/// Most recent dominant speakers remembered.
pub const HISTORY: usize = 32;

#[derive(Debug, Clone)]
struct Speaker {
    activity: f64,
    last_heard: Instant,
}

/// Dominant-speaker detection for one room (see the module doc).
#[derive(Debug, Clone)]
pub struct DominantSpeakerDetector<K> {
    speakers: HashMap<K, Speaker>,
    dominant: Option<K>,
    /// The current challenger and since when it leads.
    challenger: Option<(K, Instant)>,
    /// Dominant speakers, most recent first, each once.
    history: VecDeque<K>,
}

impl<K: Clone + Eq + Hash> Default for DominantSpeakerDetector<K> {
    fn default() -> Self {
        Self {
            speakers: HashMap::new(),
            dominant: None,
            challenger: None,
            history: VecDeque::new(),
        }
    }
}

/// Activity of one packet's level: how far above the noise floor, in dB.
fn activity_of(level_dbov: u8) -> f64 {
    f64::from(NOISE_FLOOR_DBOV.saturating_sub(level_dbov.min(127)))
}

impl<K: Clone + Eq + Hash> DominantSpeakerDetector<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// One audio packet of `speaker` with audio level `level_dbov` (RFC 6464: 0 loudest, 127
    /// silence), arrived at `now`.
    pub fn on_audio_level(&mut self, speaker: K, level_dbov: u8, now: Instant) {
        let sample = activity_of(level_dbov);
        let s = self.speakers.entry(speaker).or_insert(Speaker {
            activity: 0.0,
            last_heard: now,
        });
        let dt = now.saturating_duration_since(s.last_heard).as_secs_f64();
        let alpha = 1.0 - (-dt / SMOOTHING.as_secs_f64()).exp();
        // The first packet after a pause weighs as much as the pause was long.
        s.activity += (sample - s.activity) * alpha.max(0.05);
        s.last_heard = now;
    }

    /// Forgets `speaker` (left the room or stopped publishing audio).
    pub fn remove(&mut self, speaker: &K) {
        self.speakers.remove(speaker);
        if self.dominant.as_ref() == Some(speaker) {
            self.dominant = None;
        }
        if self.challenger.as_ref().is_some_and(|(c, _)| c == speaker) {
            self.challenger = None;
        }
        self.history.retain(|k| k != speaker);
    }

    /// The dominant speaker now.
    pub fn dominant(&self) -> Option<&K> {
        self.dominant.as_ref()
    }

    /// The `n` most recent dominant speakers, most recent first.
    pub fn last_n(&self, n: usize) -> Vec<K> {
        self.history.iter().take(n).cloned().collect()
    }

    /// Smoothed activity of `speaker` at `now` (0 when silent or unknown).
    fn activity(&self, speaker: &K, now: Instant) -> f64 {
        match self.speakers.get(speaker) {
            Some(s) if now.saturating_duration_since(s.last_heard) < SILENT_AFTER => s.activity,
            _ => 0.0,
        }
    }

    /// Re-evaluates at `now`; returns the new dominant speaker when it changed.
    pub fn poll(&mut self, now: Instant) -> Option<K> {
        let loudest = self
            .speakers
            .keys()
            .map(|k| (k, self.activity(k, now)))
            .filter(|(_, a)| *a > SPEAKING_ABOVE)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, a)| (k.clone(), a));
        let Some((candidate, candidate_activity)) = loudest else {
            self.challenger = None;
            return None;
        };
        let current = self.dominant.as_ref().map(|d| self.activity(d, now));
        let take_floor = match current {
            None => true,
            Some(_) if self.dominant.as_ref() == Some(&candidate) => {
                self.challenger = None;
                return None;
            }
            Some(a) if a <= SPEAKING_ABOVE => true,
            Some(a) if candidate_activity >= a + SWITCH_MARGIN => match &self.challenger {
                Some((c, since)) if *c == candidate => {
                    now.saturating_duration_since(*since) >= SWITCH_AFTER
                }
                _ => {
                    self.challenger = Some((candidate.clone(), now));
                    false
                }
            },
            Some(_) => {
                self.challenger = None;
                false
            }
        };
        if !take_floor {
            return None;
        }
        self.challenger = None;
        self.dominant = Some(candidate.clone());
        self.history.retain(|k| *k != candidate);
        self.history.push_front(candidate.clone());
        self.history.truncate(HISTORY);
        Some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms audio packets of the given speakers' levels from `from` for `ms`, polling
    /// after each; returns the changes with their time offset (ms from `from`).
    fn talk(
        d: &mut DominantSpeakerDetector<&'static str>,
        from: Instant,
        ms: u64,
        levels: &[(&'static str, u8)],
    ) -> Vec<(u64, &'static str)> {
        let mut changes = Vec::new();
        for t in (0..ms).step_by(20) {
            let now = from + Duration::from_millis(t);
            for (who, level) in levels {
                d.on_audio_level(*who, *level, now);
            }
            if let Some(k) = d.poll(now) {
                changes.push((t, k));
            }
        }
        changes
    }

    #[test]
    fn the_only_speaker_takes_the_floor_and_silence_changes_nothing() {
        let mut d = DominantSpeakerDetector::new();
        let t0 = Instant::now();
        assert!(talk(&mut d, t0, 1000, &[("a", 127), ("b", 110)]).is_empty());
        assert_eq!(d.dominant(), None);
        let changes = talk(
            &mut d,
            t0 + Duration::from_secs(1),
            500,
            &[("a", 30), ("b", 127)],
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1, "a");
        assert!(changes[0].0 <= 100, "a speaks up quickly: {changes:?}");
    }

    #[test]
    fn a_short_interruption_does_not_take_the_floor_a_sustained_louder_one_does() {
        let mut d = DominantSpeakerDetector::new();
        let t0 = Instant::now();
        talk(&mut d, t0, 1000, &[("teacher", 40), ("student", 127)]);
        assert_eq!(d.dominant(), Some(&"teacher"));
        // A 300 ms cough, louder than the teacher.
        let t1 = t0 + Duration::from_secs(1);
        assert!(talk(&mut d, t1, 300, &[("teacher", 40), ("student", 10)]).is_empty());
        let t2 = t1 + Duration::from_millis(300);
        assert!(talk(&mut d, t2, 1000, &[("teacher", 40), ("student", 127)]).is_empty());
        // The student talks on, louder: the floor moves after SWITCH_AFTER, not before.
        let t3 = t2 + Duration::from_secs(1);
        let changes = talk(&mut d, t3, 2000, &[("teacher", 40), ("student", 15)]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (at, who) = changes[0];
        assert_eq!(who, "student");
        assert!(
            at >= SWITCH_AFTER.as_millis() as u64 && at <= 1200,
            "switched after {at} ms"
        );
    }

    #[test]
    fn a_silent_dominant_speaker_hands_over_at_once_and_history_orders_last_n() {
        let mut d = DominantSpeakerDetector::new();
        let t0 = Instant::now();
        talk(&mut d, t0, 600, &[("a", 30)]);
        // a stops sending (muted); b speaks softly: no margin needed.
        let t1 = t0 + Duration::from_millis(600) + SILENT_AFTER;
        let changes = talk(&mut d, t1, 400, &[("b", 55)]);
        assert_eq!(changes.first().map(|c| c.1), Some("b"), "{changes:?}");
        let t2 = t1 + Duration::from_secs(1);
        talk(&mut d, t2, 600, &[("c", 30)]);
        assert_eq!(d.last_n(2), ["c", "b"]);
        assert_eq!(d.last_n(10), ["c", "b", "a"]);
        d.remove(&"c");
        assert_eq!(d.dominant(), None);
        assert_eq!(d.last_n(10), ["b", "a"]);
        // Out-of-range levels are clamped, not trusted.
        d.on_audio_level("z", 255, t2);
        assert_eq!(activity_of(255), 0.0);
    }
}
