//! The engine's side of the relay: tracks whose publisher is on another node (fed by packets
//! that arrive over a QUIC link, with lost ones re-fetched upstream), relay legs that send a
//! track's packets to other nodes straight from the media thread, and the demand for remote
//! tracks that the relay turns into subscriptions. The same forwarder serves local subscribers
//! of a remote track as of a local one.

use super::{Engine, TrackEntry, default_codec};
use crate::relay::bridge::{EngineToRelay, LinkId, LinkTx, RelayPacketIn, RelayToEngine};
use kaskade_mesh::core::{AudioLevelWindow, LayerBitrateMeter, UpstreamLossDetector, VideoCodec};
use kaskade_mesh::engine_api::TrackDescriptor;
use kaskade_mesh::forwarder::{ForwardedMedia, TrackForwarder};
use kaskade_proto::TrackId;
use kaskade_proto::relay::{LayerSet, RelayCodec, RelayMessage, RelayTrack};
use kaskade_proto::signal::MediaKind;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info};

/// A subscriber node behind a link, served from this node.
pub(super) struct RelayLeg {
    link: Arc<LinkTx>,
    channel: u32,
    layers: LayerSet,
}

/// Where a remote track's packets come from.
pub(super) struct RemoteSource {
    upstream: Option<(Arc<LinkTx>, u32)>,
    /// Layers last reported to the relay as wanted.
    demand: LayerSet,
    loss: Vec<UpstreamLossDetector>,
}

/// Relay state the engine keeps beside its sessions.
#[derive(Default)]
pub(super) struct RelayState {
    /// (link, channel) of an upstream subscription → the track it feeds.
    upstream_channels: std::collections::HashMap<(LinkId, u32), TrackId>,
    /// (link, channel) of a relay leg → the track it serves.
    leg_channels: std::collections::HashMap<(LinkId, u32), TrackId>,
    /// Encoded datagram, reused.
    datagram: Vec<u8>,
    /// Marshalled RTP, reused.
    rtp: Vec<u8>,
    nacks: Vec<u16>,
}

impl RelayState {
    pub(super) fn forget_leg(&mut self, leg: &RelayLeg) {
        self.leg_channels.remove(&(leg.link.id, leg.channel));
    }

    pub(super) fn forget_upstream(&mut self, remote: &RemoteSource) {
        if let Some((link, channel)) = &remote.upstream {
            self.upstream_channels.remove(&(link.id, *channel));
        }
    }
}

impl RemoteSource {
    /// Nothing is wanted from upstream.
    pub(super) fn is_idle(&self) -> bool {
        self.demand.is_empty()
    }
}

/// Writes `packet` without header extensions (their ids are per leg) into `out`.
fn marshal_plain(packet: &rtp::packet::Packet, out: &mut Vec<u8>) -> bool {
    let plain = rtp::packet::Packet {
        header: rtp::header::Header {
            version: 2,
            marker: packet.header.marker,
            payload_type: packet.header.payload_type,
            sequence_number: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            ssrc: packet.header.ssrc,
            ..Default::default()
        },
        payload: packet.payload.clone(),
    };
    out.clear();
    out.resize(plain.marshal_size(), 0);
    plain.marshal_to(out).is_ok()
}

fn codec_of(c: &RelayCodec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: c.mime_type.clone(),
        clock_rate: c.clock_rate,
        channels: c.channels,
        sdp_fmtp_line: c.fmtp.clone(),
        rtcp_feedback: vec![],
    }
}

impl TrackEntry {
    /// The highest layer other nodes ask for, if any asks.
    pub(super) fn relay_top_layer(&self) -> Option<u8> {
        let all = self
            .relay_legs
            .iter()
            .fold(LayerSet::default(), |set, leg| set.union(leg.layers));
        (!all.is_empty()).then(|| 7 - all.0.leading_zeros() as u8)
    }

    /// Sends one packet of `layer` to every relay leg that wants that layer.
    pub(super) fn send_to_legs(
        &self,
        layer: u8,
        packet: &rtp::packet::Packet,
        scratch: &mut RelayState,
    ) {
        // Most packets of a simulcast track are of a layer no leg takes: marshal only if one does.
        if !self.relay_legs.iter().any(|l| l.layers.contains(layer)) {
            return;
        }
        if !marshal_plain(packet, &mut scratch.rtp) {
            return;
        }
        for leg in self.relay_legs.iter().filter(|l| l.layers.contains(layer)) {
            leg.link
                .send_media(leg.channel, layer, &scratch.rtp, &mut scratch.datagram);
        }
    }
}

impl Engine {
    pub(super) fn on_relay_command(&mut self, command: RelayToEngine) {
        let now = Instant::now();
        match command {
            RelayToEngine::AddRemoteTrack { track } => self.add_remote_track(track),
            RelayToEngine::RemoveRemoteTrack { track } => {
                if self.tracks.get(&track).is_some_and(|e| e.remote.is_some()) {
                    self.remove_track(&track);
                }
            }
            RelayToEngine::AttachUpstream {
                track,
                link,
                channel,
            } => {
                if let Some(entry) = self.tracks.get_mut(&track) {
                    // A new upstream (first, redirected, or after a relay died): subscribers
                    // resume without a gap from the next keyframe.
                    let mut requests = Vec::new();
                    entry.forwarder.restart_source(now, &mut requests);
                    for r in requests {
                        self.keyframe_requests.push((track.clone(), r));
                    }
                }
                if let Some(remote) = self.tracks.get_mut(&track).and_then(|e| e.remote.as_mut()) {
                    if let Some((old, old_channel)) = remote.upstream.take() {
                        self.relay.upstream_channels.remove(&(old.id, old_channel));
                    }
                    debug!(track = %track, peer = %link.peer, channel, "upstream attached");
                    self.relay
                        .upstream_channels
                        .insert((link.id, channel), track.clone());
                    remote.upstream = Some((link, channel));
                    for d in &mut remote.loss {
                        d.reset();
                    }
                }
                self.deliver(now);
            }
            RelayToEngine::DetachUpstream { track } => {
                if let Some(remote) = self.tracks.get_mut(&track).and_then(|e| e.remote.as_mut())
                    && let Some((link, channel)) = remote.upstream.take()
                {
                    self.relay.upstream_channels.remove(&(link.id, channel));
                }
            }
            RelayToEngine::AddRelayLeg {
                track,
                link,
                channel,
                layers,
                reply,
            } => {
                let Some(entry) = self.tracks.get_mut(&track) else {
                    let _ = reply.send(false);
                    return;
                };
                entry
                    .relay_legs
                    .retain(|l| !(l.link.id == link.id && l.channel == channel));
                info!(track = %track, peer = %link.peer, channel, layers = layers.0, "relay leg added");
                self.relay
                    .leg_channels
                    .insert((link.id, channel), track.clone());
                entry.relay_legs.push(RelayLeg {
                    link,
                    channel,
                    layers,
                });
                // The node behind it starts with a keyframe on every layer it takes.
                let mut requests = Vec::new();
                for layer in 0..entry.forwarder.layer_count() as u8 {
                    if layers.contains(layer) {
                        entry
                            .forwarder
                            .request_layer_keyframe(layer, now, &mut requests);
                    }
                }
                for r in requests {
                    self.keyframe_requests.push((track.clone(), r));
                }
                let _ = reply.send(true);
                self.refresh_demand(&track);
                self.deliver(now);
            }
            RelayToEngine::SetRelayLayers {
                link,
                channel,
                layers,
            } => {
                if let Some(track) = self.relay.leg_channels.get(&(link, channel)).cloned() {
                    if let Some(entry) = self.tracks.get_mut(&track)
                        && let Some(leg) = entry
                            .relay_legs
                            .iter_mut()
                            .find(|l| l.link.id == link && l.channel == channel)
                    {
                        let added = LayerSet(layers.0 & !leg.layers.0);
                        debug!(track = %track, peer = %leg.link.peer, channel, layers = layers.0, "relay leg layers changed");
                        leg.layers = layers;
                        // A layer the node behind starts taking starts with a keyframe.
                        let mut requests = Vec::new();
                        for layer in 0..entry.forwarder.layer_count() as u8 {
                            if added.contains(layer) {
                                entry
                                    .forwarder
                                    .request_layer_keyframe(layer, now, &mut requests);
                            }
                        }
                        for r in requests {
                            self.keyframe_requests.push((track.clone(), r));
                        }
                    }
                    self.refresh_demand(&track);
                    self.deliver(now);
                }
            }
            RelayToEngine::RemoveRelayLeg { link, channel } => {
                self.remove_leg(link, channel);
            }
            RelayToEngine::LinkDown { link } => {
                let legs: Vec<(LinkId, u32)> = self
                    .relay
                    .leg_channels
                    .keys()
                    .filter(|(l, _)| *l == link)
                    .copied()
                    .collect();
                for (l, c) in legs {
                    self.remove_leg(l, c);
                }
                let upstreams: Vec<((LinkId, u32), TrackId)> = self
                    .relay
                    .upstream_channels
                    .iter()
                    .filter(|((l, _), _)| *l == link)
                    .map(|(k, t)| (*k, t.clone()))
                    .collect();
                for (key, track) in upstreams {
                    self.relay.upstream_channels.remove(&key);
                    if let Some(remote) =
                        self.tracks.get_mut(&track).and_then(|e| e.remote.as_mut())
                    {
                        remote.upstream = None;
                    }
                    self.tell_relay(EngineToRelay::UpstreamLost { track });
                }
            }
            RelayToEngine::KeyframeRequest {
                link,
                channel,
                layer,
            } => {
                let Some(track) = self.relay.leg_channels.get(&(link, channel)).cloned() else {
                    return;
                };
                if let Some(entry) = self.tracks.get_mut(&track) {
                    self.metrics.plis.inc();
                    let mut requests = Vec::new();
                    entry
                        .forwarder
                        .request_layer_keyframe(layer, now, &mut requests);
                    for r in requests {
                        self.keyframe_requests.push((track.clone(), r));
                    }
                }
                self.deliver(now);
            }
            RelayToEngine::Nack {
                link,
                channel,
                layer,
                seqs,
            } => {
                let Some(track) = self.relay.leg_channels.get(&(link, channel)) else {
                    return;
                };
                let Some(entry) = self.tracks.get(track) else {
                    return;
                };
                let Some(leg) = entry
                    .relay_legs
                    .iter()
                    .find(|l| l.link.id == link && l.channel == channel)
                else {
                    return;
                };
                self.metrics.nacks.inc();
                for seq in seqs {
                    if let Some(packet) = entry.forwarder.cached(layer, seq)
                        && marshal_plain(packet, &mut self.relay.rtp)
                    {
                        leg.link.send_media(
                            channel,
                            layer,
                            &self.relay.rtp,
                            &mut self.relay.datagram,
                        );
                        leg.link.metrics.retransmits.inc();
                    }
                }
            }
            RelayToEngine::TrackCodecs { track, reply } => {
                let codecs = self
                    .tracks
                    .get(&track)
                    .map(|e| {
                        e.codecs
                            .iter()
                            .map(|(pt, c)| RelayCodec {
                                payload_type: *pt,
                                mime_type: c.mime_type.clone(),
                                clock_rate: c.clock_rate,
                                channels: c.channels,
                                fmtp: c.sdp_fmtp_line.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(codecs);
            }
        }
    }

    fn remove_leg(&mut self, link: LinkId, channel: u32) {
        let Some(track) = self.relay.leg_channels.remove(&(link, channel)) else {
            return;
        };
        if let Some(entry) = self.tracks.get_mut(&track) {
            entry
                .relay_legs
                .retain(|l| !(l.link.id == link && l.channel == channel));
        }
        self.refresh_demand(&track);
    }

    fn add_remote_track(&mut self, track: RelayTrack) {
        let id = track.info.id.clone();
        if self.tracks.contains_key(&id) {
            return;
        }
        let codecs: Vec<(u8, RTCRtpCodec)> = track
            .codecs
            .iter()
            .map(|c| (c.payload_type, codec_of(c)))
            .collect();
        let first = codecs
            .first()
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| default_codec(track.info.kind));
        let media = match track.info.kind {
            MediaKind::Audio => ForwardedMedia::Audio,
            MediaKind::Video => ForwardedMedia::Video(VideoCodec::from_mime(&first.mime_type)),
        };
        let layer_count = track.info.layers.len().max(1);
        info!(track = %id, origin = %track.origin, kind = ?track.info.kind, layers = layer_count, "remote track added");
        self.tracks.insert(
            id,
            TrackEntry {
                desc: TrackDescriptor::from(&track.info),
                publisher: None,
                receiver: None,
                codecs,
                forwarder: TrackForwarder::new(media, first.clock_rate, layer_count),
                remote: Some(RemoteSource {
                    upstream: None,
                    demand: LayerSet::default(),
                    // Only video is cached upstream, so only video losses are worth a NACK.
                    loss: match media {
                        ForwardedMedia::Video(_) => (0..layer_count)
                            .map(|_| UpstreamLossDetector::default())
                            .collect(),
                        ForwardedMedia::Audio => Vec::new(),
                    },
                }),
                relay_legs: Vec::new(),
                paused: false,
                audio_level: AudioLevelWindow::default(),
                bitrate: LayerBitrateMeter::new(),
                layer_gate: None,
            },
        );
        self.metrics.tracks.set(self.tracks.len() as i64);
    }

    pub(super) fn tell_relay(&self, message: EngineToRelay) {
        if let Some(tx) = &self.relay_demand {
            let _ = tx.send(message);
        }
    }

    /// Recomputes which layers of a remote track are wanted here (local subscribers and relay
    /// legs) and tells the relay when that changed.
    ///
    /// A local subscriber asks for every layer up to its cap, not just the cap: its bandwidth
    /// allocator picks among the layers that arrive here (it measures their bitrates), and a
    /// subscriber whose link fits the middle layer but not the top one would otherwise be held
    /// on the lowest. Relay legs pass on what the next node asked for.
    pub(super) fn refresh_demand(&mut self, id: &TrackId) {
        let Some(entry) = self.tracks.get(id) else {
            return;
        };
        if entry.remote.is_none() {
            return;
        }
        let top = entry.forwarder.layer_count().saturating_sub(1) as u8;
        let mut layers = LayerSet::default();
        for session in self.sessions.values() {
            if let Some(out) = session.outbound.get(id) {
                layers = layers.union(LayerSet::up_to(out.wanted_layer.min(top)));
            }
        }
        for leg in &entry.relay_legs {
            layers = layers.union(leg.layers);
        }
        // With simulcast the lowest layer comes too whenever anything is wanted: it is cheap, and
        // it is what a subscriber starts on and falls back to while its layer is not flowing.
        if top > 0 && !layers.is_empty() {
            layers = layers.union(LayerSet::single(0));
        }
        let Some(remote) = self.tracks.get_mut(id).and_then(|e| e.remote.as_mut()) else {
            return;
        };
        if remote.demand != layers {
            remote.demand = layers;
            self.tell_relay(EngineToRelay::Demand {
                track: id.clone(),
                layers,
            });
        }
    }

    /// Recomputes the demand of every remote track (after subscriptions changed).
    pub(super) fn refresh_all_demand(&mut self) {
        let remote: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, e)| e.remote.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in remote {
            self.refresh_demand(&id);
        }
    }

    /// One packet of a remote track, from the link it is subscribed on.
    pub(super) fn on_relay_packet(&mut self, input: RelayPacketIn) {
        let Some(track) = self
            .relay
            .upstream_channels
            .get(&(input.link, input.channel))
        else {
            return;
        };
        let Some(entry) = self.tracks.get_mut(track) else {
            return;
        };
        let mut raw = input.rtp;
        let Ok(packet) = rtp::packet::Packet::unmarshal(&mut raw) else {
            self.metrics
                .dropped_datagrams
                .get_or_create(&crate::metrics::DROP_GARBAGE)
                .inc();
            return;
        };
        let layer = input.layer;
        if layer as usize >= entry.forwarder.layer_count() {
            return;
        }
        self.metrics.packets_in.inc();
        let now = input.arrival;
        // Relay loss: ask upstream at once, before local subscribers notice.
        if let Some(remote) = entry.remote.as_mut()
            && let Some((link, channel)) = &remote.upstream
            && let Some(detector) = remote.loss.get_mut(layer as usize)
        {
            detector.on_packet(packet.header.sequence_number, now);
            self.relay.nacks.clear();
            detector.poll_nacks_into(now, link.rtt(), &mut self.relay.nacks);
            if !self.relay.nacks.is_empty() {
                link.metrics
                    .nacks_sent
                    .inc_by(self.relay.nacks.len() as u64);
                link.send_control(RelayMessage::Nack {
                    channel: *channel,
                    layer,
                    seqs: self.relay.nacks.clone(),
                });
            }
        }
        entry
            .bitrate
            .on_packet(layer, packet.payload.len() + super::RTP_HEADER_BYTES, now);
        entry.send_to_legs(layer, &packet, &mut self.relay);
        let before = self.forwarded.len();
        entry.forwarder.on_packet(
            layer,
            packet,
            now,
            &mut self.forwarded,
            &mut self.requests_scratch,
        );
        self.latency
            .extend(self.forwarded[before..].iter().map(|f| (f.key, now)));
        for r in self.requests_scratch.drain(..) {
            self.keyframe_requests.push((entry.desc.id.clone(), r));
        }
    }

    /// A keyframe request for a remote track goes upstream, by layer.
    pub(super) fn request_upstream_keyframe(&self, entry: &TrackEntry, layer: u8) -> bool {
        let Some((link, channel)) = entry.remote.as_ref().and_then(|r| r.upstream.as_ref()) else {
            return false;
        };
        link.send_control(RelayMessage::KeyframeRequest {
            channel: *channel,
            layer,
        })
    }
}
