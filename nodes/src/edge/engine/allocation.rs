//! Bandwidth allocation per subscriber session, run on the engine's tick: each session's
//! estimate (send-side GCC, see `edge::bandwidth`) and the measured bitrate of each layer of the
//! tracks it receives go through its `SubscriberBandwidthAllocator`; the layers it picks (never
//! above the subscriber's own cap) become the forwarders' wanted layers, and the subscriber is
//! told (`ReceiveQuality`, at most once a second when layers change, else every few seconds).
//!
//! Going down is applied at once. Going up is probed first where the leg has RTX: for
//! [`PROBE_TIME`] the leg gets the extra rate as RTX copies of its recent packets, and the higher
//! layers are applied only if the estimate still covers them afterwards. A link that cannot take
//! the higher layer then loses a little padding, not a keyframe-and-freeze cycle (a failed probe
//! makes the allocator back off as a failed upgrade would).

use super::{Engine, TICK};
use crate::edge::bandwidth::FeedbackCounts;
use kaskade_mesh::core::{SubscribedVideoTrack, VideoPriority};
use kaskade_mesh::engine_api::{EdgeEvent, SessionKey};
use kaskade_proto::TrackId;
use kaskade_proto::signal::{MediaKind, TrackSource};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::debug;

/// Layer changes are reported at most this often.
const QUALITY_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Without changes the estimate is reported this often.
const QUALITY_REFRESH: Duration = Duration::from_secs(5);
const TICK_SECONDS: f64 = TICK.as_millis() as f64 / 1000.0;
/// How long an upgrade is probed before it is applied.
pub(super) const PROBE_TIME: Duration = Duration::from_millis(1000);
/// A probe fails when the subscriber reports more loss than this meanwhile.
pub(super) const PROBE_MAX_LOSS: f64 = 0.01;
/// A probe fails when the subscriber's packets queued longer than this meanwhile.
pub(super) const PROBE_MAX_QUEUE_DELAY: Duration = Duration::from_millis(60);
/// How long after a probe its verdict waits for the last feedback.
pub(super) const PROBE_SETTLE: Duration = Duration::from_millis(600);
/// A probe needs at least this many packets reported by the subscriber to pass.
pub(super) const PROBE_MIN_REPORTS: u64 = 20;

/// An upgrade under test.
struct Probe {
    until: Instant,
    /// Probe bytes per tick, and the track whose leg carries them.
    bytes_per_tick: usize,
    carrier: TrackId,
    /// What the whole session needs once the upgrade is applied (bit/s).
    needed_bps: u64,
    /// Feedback counts when it started.
    counts: FeedbackCounts,
    /// Probe bytes actually sent (a leg whose recent packets cannot be resent cannot probe).
    sent: usize,
    asked: usize,
}

/// A subscriber session's allocation state.
#[derive(Default)]
pub(super) struct SessionAllocation {
    allocator: kaskade_mesh::core::SubscriberBandwidthAllocator<TrackId>,
    layers: BTreeMap<TrackId, u8>,
    reported_at: Option<Instant>,
    report_pending: bool,
    tracks: Vec<SubscribedVideoTrack<TrackId>>,
    /// What the forwarders have been told (may lag `layers` while an upgrade is probed).
    applied: BTreeMap<TrackId, u8>,
    probe: Option<Probe>,
    /// After a failed probe the allocator sees at most this estimate for a moment, so it takes
    /// the upgrade back and backs off.
    ceiling: Option<(u64, Instant)>,
}

impl Engine {
    pub(super) fn allocate_bandwidth(&mut self, now: Instant) {
        let mut changes: Vec<(TrackId, SessionKey, u8)> = Vec::new();
        let mut probes: Vec<(TrackId, SessionKey, usize)> = Vec::new();
        for (&key, session) in &mut self.sessions {
            let Some(feedback) = &session.estimate else {
                continue;
            };
            if session.outbound.is_empty() || !session.connected {
                continue;
            }
            let estimate = feedback.get();
            let state = &mut session.allocation;
            let offered = match state.ceiling {
                Some((ceiling, until)) if now < until => estimate.map(|e| e.min(ceiling)),
                _ => estimate,
            };
            state.tracks.clear();
            let mut audio = 0;
            for (track, out) in &session.outbound {
                let Some(entry) = self.tracks.get(track) else {
                    continue;
                };
                let rates = entry.bitrate.bitrates(now);
                match entry.desc.kind {
                    MediaKind::Audio => audio += rates[0],
                    MediaKind::Video => state.tracks.push(SubscribedVideoTrack {
                        key: track.clone(),
                        priority: if entry.desc.source == TrackSource::Screen {
                            VideoPriority::Screen
                        } else {
                            VideoPriority::Camera
                        },
                        layer_bitrates: rates,
                        max_layer: out.wanted_layer,
                    }),
                }
            }
            // A stable order: the allocator serves cameras in the order given.
            state.tracks.sort_by(|a, b| a.key.cmp(&b.key));
            let allocation = state.allocator.allocate(now, offered, audio, &state.tracks);
            if allocation.changed {
                state.layers = state
                    .tracks
                    .iter()
                    .zip(allocation.layers)
                    // Below even the lowest layers: keep the lowest (video is not suspended).
                    .map(|(t, l)| (t.key.clone(), l.unwrap_or(0)))
                    .collect();
                state.report_pending = true;
            }
            let rate_of = |track: &SubscribedVideoTrack<TrackId>, layer: u8| {
                track.layer_bitrates[usize::from(layer.min(2))]
            };
            let mut upgrade: Option<(TrackId, u64)> = None;
            let mut needed = audio;
            for track in &state.tracks {
                let Some(&want) = state.layers.get(&track.key) else {
                    continue;
                };
                needed += rate_of(track, want);
                let have = state.applied.get(&track.key).copied();
                match have {
                    Some(have) if want > have => {
                        let extra = rate_of(track, want).saturating_sub(rate_of(track, have));
                        let carrier_has_rtx = self
                            .tracks
                            .get(&track.key)
                            .is_some_and(|e| e.forwarder.can_probe(key));
                        if carrier_has_rtx {
                            let (_, sum) = upgrade.get_or_insert((track.key.clone(), 0));
                            *sum += extra;
                            continue; // probed first
                        }
                    }
                    Some(have) if want == have => continue,
                    _ => {}
                }
                // Down, new, or up on a leg without RTX to probe with: at once.
                debug!(session = key, track = %track.key, layer = want, estimate_bps = ?estimate, layer_bps = ?track.layer_bitrates, audio_bps = audio, "layer applied");
                self.metrics.layer_changes.inc();
                changes.push((track.key.clone(), key, want));
                state.applied.insert(track.key.clone(), want);
            }
            state.applied.retain(|t, _| state.layers.contains_key(t));
            match (&state.probe, upgrade) {
                (Some(probe), Some(_)) if now < probe.until => {
                    probes.push((probe.carrier.clone(), key, probe.bytes_per_tick));
                }
                // Feedback on the probe's last packets (queued behind it) comes later.
                (Some(probe), Some(_)) if now < probe.until + PROBE_SETTLE => {}
                (Some(probe), Some(_)) => {
                    // Probe over: apply if nothing was lost meanwhile and the estimate still
                    // covers the upgrade.
                    let counts = feedback.counts();
                    let loss = counts.loss_since(probe.counts);
                    // Too little feedback meanwhile proves nothing.
                    let heard = counts.reported.saturating_sub(probe.counts.reported);
                    let queue_delay_us = feedback.take_max_queue_delay_us();
                    let passed = probe.sent * 2 >= probe.asked
                        && queue_delay_us <= PROBE_MAX_QUEUE_DELAY.as_micros() as u64
                        && heard >= PROBE_MIN_REPORTS
                        && loss <= PROBE_MAX_LOSS
                        && estimate.is_some_and(|e| e >= probe.needed_bps);
                    debug!(session = key, estimate_bps = ?estimate, needed_bps = probe.needed_bps, loss, heard, queue_delay_us, sent = probe.sent, passed, "upgrade probed");
                    if !passed {
                        let ceiling = (probe.needed_bps as f64 * 0.9) as u64;
                        state.ceiling = Some((ceiling, now + PROBE_TIME));
                    } else {
                        for track in &state.tracks {
                            if let Some(&want) = state.layers.get(&track.key)
                                && state.applied.get(&track.key) != Some(&want)
                            {
                                self.metrics.layer_changes.inc();
                                changes.push((track.key.clone(), key, want));
                                state.applied.insert(track.key.clone(), want);
                            }
                        }
                    }
                    state.probe = None;
                }
                (None, Some((carrier, extra_bps))) => {
                    let bytes_per_tick = (extra_bps as f64 / 8.0 * TICK_SECONDS).ceil() as usize;
                    probes.push((carrier.clone(), key, bytes_per_tick));
                    feedback.take_max_queue_delay_us(); // the probe's own period starts now
                    state.probe = Some(Probe {
                        until: now + PROBE_TIME,
                        bytes_per_tick,
                        carrier,
                        needed_bps: needed,
                        counts: feedback.counts(),
                        sent: 0,
                        asked: 0,
                    });
                }
                (_, None) => state.probe = None,
            }
            let due = state.reported_at.is_none_or(|at| {
                let since = now.saturating_duration_since(at);
                (state.report_pending && since >= QUALITY_MIN_INTERVAL) || since >= QUALITY_REFRESH
            });
            if due && let Some(bps) = estimate {
                self.metrics.bandwidth_estimate.observe(bps as f64);
                state.reported_at = Some(now);
                state.report_pending = false;
                session.events.send(EdgeEvent::ReceiveQuality {
                    session: key,
                    estimate_bps: estimate.unwrap_or(0),
                    layers: state.layers.clone(),
                });
            }
        }
        for (track, key, layer) in &changes {
            if let Some(entry) = self.tracks.get_mut(track) {
                entry.forwarder.set_wanted_layer(*key, *layer);
            }
        }
        for (track, key, bytes) in probes {
            if let Some(entry) = self.tracks.get_mut(&track) {
                let sent = entry.forwarder.probe(key, bytes, now, &mut self.forwarded);
                debug!(session = key, track = %track, asked = bytes, sent, "probe");
                if let Some(probe) = self
                    .sessions
                    .get_mut(&key)
                    .and_then(|s| s.allocation.probe.as_mut())
                {
                    probe.sent += sent;
                    probe.asked += bytes;
                }
            }
        }
    }
}
