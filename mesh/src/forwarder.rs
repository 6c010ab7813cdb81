//! `TrackForwarder`: everything the packet path knows about one published track — its layers'
//! sources and packet caches, and one downstream per subscriber with its sequence rewriter and
//! layer selector. It is a plain struct driven by the media loop that owns the sockets: a packet
//! goes in, rewritten copies for each subscriber come out, with no mailbox hop in between (see
//! `docs/architecture.md` for the measurement behind that choice).

use crate::core::{
    KeyframeRequestThrottle, LayerDecision, PacketCache, RetransmissionBudget, SequenceRewriter,
    SimulcastLayerSelector, VideoCodec, Vp8PictureIdRewriter, is_keyframe_start,
};
use std::time::{Duration, Instant};

/// Packets kept per layer for answering NACKs (~1 s of 2.5 Mbit/s video).
pub const PACKET_CACHE_SIZE: usize = 512;
/// How far back a probe reaches for packets to send again.
const PROBE_DEPTH: u16 = 128;
/// Fixed RTP header bytes, for counting what a probe queued.
const RTP_HEADER_BYTES: usize = 12;

/// What a track carries, as far as forwarding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedMedia {
    Audio,
    Video(VideoCodec),
}

/// One subscriber's leg of a track.
#[derive(Debug, Clone)]
pub struct DownstreamSpec<K> {
    pub key: K,
    /// SSRC of the subscriber-side sender.
    pub ssrc: u32,
    /// Publisher payload type → subscriber payload type, for every codec both sides share.
    pub payload_types: Vec<(u8, u8)>,
    /// Simulcast layer the subscriber wants (0 = lowest).
    pub wanted_layer: u8,
    /// Retransmission stream (RFC 4588), when the subscriber negotiated RTX.
    pub rtx: Option<RtxSpec>,
}

/// The subscriber leg's RTX stream: its SSRC and, per media payload type, the RTX payload type.
#[derive(Debug, Clone)]
pub struct RtxSpec {
    pub ssrc: u32,
    /// Subscriber media payload type → subscriber RTX payload type (`apt`).
    pub payload_types: Vec<(u8, u8)>,
}

/// A packet ready to be handed to one subscriber's session.
#[derive(Debug)]
pub struct Forwarded<K> {
    pub key: K,
    pub packet: rtp::packet::Packet,
}

/// Ask the publisher for a keyframe on this layer's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeRequest {
    pub layer: u8,
    pub ssrc: u32,
}

struct LayerSource {
    ssrc: Option<u32>,
    cache: PacketCache<rtp::packet::Packet>,
    keyframe_requests: KeyframeRequestThrottle,
    /// A request arrived while throttled: send it as soon as the interval allows.
    keyframe_pending: bool,
}

struct Downstream<K> {
    spec: DownstreamSpec<K>,
    /// Next sequence number on the RTX stream.
    rtx_seq: u16,
    /// What this leg may retransmit (a share of what it forwards).
    retransmissions: RetransmissionBudget,
    rewriter: SequenceRewriter,
    selector: SimulcastLayerSelector,
    vp8: Vp8PictureIdRewriter,
}

/// Counters the node exports; reset by nobody, read by the metrics exporter.
#[derive(Debug, Default, Clone, Copy)]
pub struct ForwarderStats {
    pub retransmitted: u64,
    pub nack_misses: u64,
    /// NACKed packets not resent: the leg's retransmission budget was spent, or it was resent
    /// moments ago.
    pub retransmissions_refused: u64,
    /// Packets sent again as bandwidth probes.
    pub probe_packets: u64,
    pub keyframe_requests_sent: u64,
    pub keyframe_requests_suppressed: u64,
}

pub struct TrackForwarder<K> {
    media: ForwardedMedia,
    clock_rate: u32,
    layers: Vec<LayerSource>,
    downstreams: Vec<Downstream<K>>,
    pub stats: ForwarderStats,
}

impl<K: Copy + Eq> TrackForwarder<K> {
    /// `layer_count` is the number of simulcast layers (1 without simulcast).
    pub fn new(media: ForwardedMedia, clock_rate: u32, layer_count: usize) -> Self {
        Self::with_keyframe_interval(
            media,
            clock_rate,
            layer_count,
            crate::core::DEFAULT_KEYFRAME_REQUEST_INTERVAL,
        )
    }

    pub fn with_keyframe_interval(
        media: ForwardedMedia,
        clock_rate: u32,
        layer_count: usize,
        keyframe_interval: Duration,
    ) -> Self {
        let layers = (0..layer_count.clamp(1, 3))
            .map(|_| LayerSource {
                ssrc: None,
                cache: PacketCache::new(PACKET_CACHE_SIZE),
                keyframe_requests: KeyframeRequestThrottle::new(keyframe_interval),
                keyframe_pending: false,
            })
            .collect();
        Self {
            media,
            clock_rate,
            layers,
            downstreams: Vec::new(),
            stats: ForwarderStats::default(),
        }
    }

    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    pub fn downstream_count(&self) -> usize {
        self.downstreams.len()
    }

    pub fn has_downstream(&self, key: K) -> bool {
        self.downstreams.iter().any(|d| d.spec.key == key)
    }

    /// Adds a subscriber (or replaces its leg if it is already there).
    pub fn add_downstream(&mut self, spec: DownstreamSpec<K>) {
        self.remove_downstream(spec.key);
        let wanted = spec.wanted_layer.min(self.layers.len() as u8 - 1);
        self.downstreams.push(Downstream {
            rtx_seq: rand_seq(spec.ssrc),
            retransmissions: RetransmissionBudget::default(),
            rewriter: SequenceRewriter::new(self.clock_rate),
            selector: SimulcastLayerSelector::new(wanted),
            vp8: Vp8PictureIdRewriter::default(),
            spec,
        });
    }

    pub fn remove_downstream(&mut self, key: K) {
        self.downstreams.retain(|d| d.spec.key != key);
    }

    /// The subscriber's choice of layer; the switch happens on the next keyframe of that layer.
    pub fn set_wanted_layer(&mut self, key: K, layer: u8) {
        let top = self.layers.len() as u8 - 1;
        if let Some(d) = self.downstreams.iter_mut().find(|d| d.spec.key == key) {
            d.selector.set_wanted(layer.min(top));
        }
    }

    /// The layers the subscribers want, as a bit set (bit `n` = layer `n`).
    pub fn wanted_layers(&self) -> u8 {
        self.downstreams
            .iter()
            .fold(0u8, |set, d| set | 1u8 << d.selector.wanted().min(7))
    }

    /// A packet of `layer` still in the cache, by its source sequence number (for a relay
    /// downstream's NACK, which speaks source numbers).
    pub fn cached(&self, layer: u8, seq: u16) -> Option<&rtp::packet::Packet> {
        self.layers.get(layer as usize)?.cache.get(seq)
    }

    /// Someone downstream (a relay link) needs a keyframe on `layer`: throttled like any other.
    pub fn request_layer_keyframe(
        &mut self,
        layer: u8,
        now: Instant,
        requests: &mut Vec<KeyframeRequest>,
    ) {
        if self.media != ForwardedMedia::Audio {
            self.request_keyframe(layer, now, requests);
        }
    }

    /// The layer a subscriber currently receives, if any.
    pub fn current_layer(&self, key: K) -> Option<u8> {
        self.downstreams
            .iter()
            .find(|d| d.spec.key == key)
            .and_then(|d| d.selector.current())
    }

    /// One packet from the publisher on `layer`: caches it and appends a rewritten copy for every
    /// subscriber that receives this layer to `out`. Returns the keyframe requests the layer
    /// selectors need (already throttled).
    pub fn on_packet(
        &mut self,
        layer: u8,
        packet: rtp::packet::Packet,
        now: Instant,
        out: &mut Vec<Forwarded<K>>,
        keyframe_requests: &mut Vec<KeyframeRequest>,
    ) {
        let Some(source) = self.layers.get_mut(layer as usize) else {
            return;
        };
        if packet.payload.is_empty() {
            // Padding-only probes carry nothing a subscriber can use.
            return;
        }
        let ssrc = packet.header.ssrc;
        let seq = packet.header.sequence_number;
        let ts = packet.header.timestamp;
        source.ssrc = Some(ssrc);
        let keyframe = match self.media {
            ForwardedMedia::Video(codec) => {
                source.cache.insert(seq, packet.clone());
                is_keyframe_start(codec, &packet.payload)
            }
            ForwardedMedia::Audio => false,
        };
        let munge_vp8 =
            self.layers.len() > 1 && self.media == ForwardedMedia::Video(VideoCodec::Vp8);

        for d in &mut self.downstreams {
            if let ForwardedMedia::Video(_) = self.media
                && d.selector.on_packet(layer, keyframe, now) == LayerDecision::Drop
            {
                continue;
            }
            let Some(rewritten) = d.rewriter.rewrite(ssrc, seq, ts, now) else {
                continue;
            };
            let Some(payload_type) = map_payload_type(&d.spec.payload_types, &packet) else {
                continue;
            };
            let payload = if munge_vp8 {
                let mut copy = packet.payload.to_vec();
                d.vp8.rewrite(ssrc, &mut copy);
                copy.into()
            } else {
                packet.payload.clone()
            };
            d.retransmissions.on_forwarded(payload.len());
            out.push(Forwarded {
                key: d.spec.key,
                packet: rtp::packet::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: packet.header.marker,
                        payload_type,
                        sequence_number: rewritten.seq,
                        timestamp: rewritten.timestamp,
                        ssrc: d.spec.ssrc,
                        ..Default::default()
                    },
                    payload,
                },
            });
        }

        if let ForwardedMedia::Video(_) = self.media {
            if keyframe {
                // The keyframe answers whatever was pending on this layer.
                self.layers[layer as usize].keyframe_pending = false;
            }
            self.collect_keyframe_needs(now, keyframe_requests);
        }
    }

    fn collect_keyframe_needs(&mut self, now: Instant, requests: &mut Vec<KeyframeRequest>) {
        for layer in 0..self.layers.len() {
            if self.layers[layer].keyframe_pending {
                self.request_keyframe(layer as u8, now, requests);
            }
        }
        for i in 0..self.downstreams.len() {
            if let Some(layer) = self.downstreams[i].selector.keyframe_needed(now) {
                self.request_keyframe(layer, now, requests);
            }
        }
    }

    fn request_keyframe(&mut self, layer: u8, now: Instant, requests: &mut Vec<KeyframeRequest>) {
        let Some(source) = self.layers.get_mut(layer as usize) else {
            return;
        };
        let Some(ssrc) = source.ssrc else {
            // Nothing received on this layer yet: ask as soon as its first packet shows the
            // source, instead of losing the request.
            source.keyframe_pending = true;
            return;
        };
        if requests.iter().any(|r| r.ssrc == ssrc) {
            return;
        }
        if source.keyframe_requests.should_send(now) {
            source.keyframe_pending = false;
            self.stats.keyframe_requests_sent += 1;
            requests.push(KeyframeRequest { layer, ssrc });
        } else if !source.keyframe_pending {
            // Deferred, not dropped: sent with the first packet after the interval.
            source.keyframe_pending = true;
            self.stats.keyframe_requests_suppressed += 1;
        }
    }

    /// The track's packets now arrive over another path (its upstream relay node died and the
    /// node subscribed elsewhere): what was sent in between is lost for good. Every subscriber
    /// continues its numbering without a gap and, for video, waits for the next keyframe, which
    /// is requested (throttled like any other).
    pub fn restart_source(&mut self, now: Instant, requests: &mut Vec<KeyframeRequest>) {
        let video = matches!(self.media, ForwardedMedia::Video(_));
        for d in &mut self.downstreams {
            d.rewriter.restart_at_next_packet();
            if video {
                d.selector.restart();
            }
        }
        if video {
            self.collect_keyframe_needs(now, requests);
        }
    }

    /// A subscriber sent PLI or FIR: ask the publisher for a keyframe on the layer it receives,
    /// at most once per throttle interval per layer however many subscribers ask.
    pub fn on_keyframe_request(
        &mut self,
        key: K,
        now: Instant,
        requests: &mut Vec<KeyframeRequest>,
    ) {
        if self.media == ForwardedMedia::Audio {
            return;
        }
        let layer = self
            .downstreams
            .iter()
            .find(|d| d.spec.key == key)
            .map(|d| d.selector.current().unwrap_or(0));
        if let Some(layer) = layer {
            self.request_keyframe(layer, now, requests);
        }
    }

    /// A subscriber NACKed these output sequence numbers: resend what the cache still holds and
    /// the leg's [`RetransmissionBudget`] allows.
    pub fn on_nack(
        &mut self,
        key: K,
        lost: impl IntoIterator<Item = u16>,
        now: Instant,
        out: &mut Vec<Forwarded<K>>,
    ) {
        self.resend(key, lost, now, out, None);
    }

    /// Whether a subscriber's leg can carry probes (it negotiated RTX for this track's codec).
    pub fn can_probe(&self, key: K) -> bool {
        self.downstreams
            .iter()
            .any(|d| d.spec.key == key && d.spec.rtx.is_some())
    }

    /// Sends about `bytes` of probe traffic to one leg: its most recent packets again, on its
    /// RTX stream (the receiver drops the duplicates; the congestion controller sees the rate).
    /// Returns the bytes queued; 0 for a leg without RTX.
    pub fn probe(
        &mut self,
        key: K,
        bytes: usize,
        now: Instant,
        out: &mut Vec<Forwarded<K>>,
    ) -> usize {
        let Some(last) = self
            .downstreams
            .iter()
            .find(|d| d.spec.key == key && d.spec.rtx.is_some())
            .and_then(|d| d.rewriter.last_output_seq())
        else {
            return 0;
        };
        let recent = (0..PROBE_DEPTH).map(|back| last.wrapping_sub(back));
        self.resend(key, recent, now, out, Some(bytes))
    }

    /// Resends output packets of one leg: NACKed ones within the leg's budget (`probe: None`),
    /// or probe copies up to `probe` bytes. Returns the bytes queued.
    fn resend(
        &mut self,
        key: K,
        seqs: impl IntoIterator<Item = u16>,
        now: Instant,
        out: &mut Vec<Forwarded<K>>,
        probe: Option<usize>,
    ) -> usize {
        let Some(d) = self.downstreams.iter_mut().find(|d| d.spec.key == key) else {
            return 0;
        };
        let munged = self.layers.len() > 1 && self.media == ForwardedMedia::Video(VideoCodec::Vp8);
        let mut queued = 0;
        for out_seq in seqs {
            if probe.is_some_and(|limit| queued >= limit) {
                break;
            }
            let cached = d.rewriter.original_of(out_seq).and_then(|(ssrc, seq)| {
                self.layers
                    .iter()
                    .find(|l| l.ssrc == Some(ssrc))
                    .and_then(|l| l.cache.get(seq))
            });
            let Some(original) = cached else {
                self.stats.nack_misses += 1;
                continue;
            };
            if probe.is_none()
                && !d
                    .retransmissions
                    .allow(out_seq, original.payload.len(), now)
            {
                self.stats.retransmissions_refused += 1;
                continue;
            }
            let ssrc = original.header.ssrc;
            let Some(rewritten) = d.rewriter.retransmission_header(
                ssrc,
                original.header.sequence_number,
                original.header.timestamp,
            ) else {
                self.stats.nack_misses += 1;
                continue;
            };
            let Some(payload_type) = map_payload_type(&d.spec.payload_types, original) else {
                continue;
            };
            // Simulcast VP8 carries rewritten picture ids: resend the ones it was first sent with.
            let mut payload = original.payload.to_vec();
            if munged && !d.vp8.rewrite_retransmission(ssrc, &mut payload) {
                self.stats.nack_misses += 1;
                continue;
            }
            let rtx = d.spec.rtx.as_ref().and_then(|rtx| {
                let pt = rtx
                    .payload_types
                    .iter()
                    .find(|(media, _)| *media == payload_type)?
                    .1;
                Some((rtx.ssrc, pt))
            });
            let header = |payload_type, sequence_number, ssrc| rtp::header::Header {
                version: 2,
                marker: original.header.marker,
                payload_type,
                sequence_number,
                timestamp: rewritten.timestamp,
                ssrc,
                ..Default::default()
            };
            let packet = match rtx {
                // RFC 4588: the RTX payload is the original sequence number, then the payload.
                Some((rtx_ssrc, rtx_pt)) => {
                    let mut body = Vec::with_capacity(payload.len() + 2);
                    body.extend_from_slice(&rewritten.seq.to_be_bytes());
                    body.extend_from_slice(&payload);
                    let seq = d.rtx_seq;
                    d.rtx_seq = d.rtx_seq.wrapping_add(1);
                    rtp::packet::Packet {
                        header: header(rtx_pt, seq, rtx_ssrc),
                        payload: body.into(),
                    }
                }
                None => rtp::packet::Packet {
                    header: header(payload_type, rewritten.seq, d.spec.ssrc),
                    payload: payload.into(),
                },
            };
            queued += packet.payload.len() + RTP_HEADER_BYTES;
            if probe.is_some() {
                self.stats.probe_packets += 1;
            } else {
                self.stats.retransmitted += 1;
            }
            out.push(Forwarded { key, packet });
        }
        queued
    }
}

/// A start for the RTX sequence space that differs between legs without a random source.
fn rand_seq(ssrc: u32) -> u16 {
    (ssrc ^ (ssrc >> 16)) as u16
}

fn map_payload_type(map: &[(u8, u8)], packet: &rtp::packet::Packet) -> Option<u8> {
    let pt = packet.header.payload_type;
    map.iter().find(|(from, _)| *from == pt).map(|(_, to)| *to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retransmission_budget::RESEND_INTERVAL;

    fn vp8_packet(ssrc: u32, seq: u16, ts: u32, keyframe: bool) -> rtp::packet::Packet {
        // VP8 payload descriptor: X=0, S=1, PID=0; then the payload header's P bit (0 = key).
        let payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }, 0, 0, 0];
        rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        }
    }

    fn forwarder() -> TrackForwarder<u32> {
        let mut f = TrackForwarder::new(ForwardedMedia::Video(VideoCodec::Vp8), 90_000, 1);
        for key in [1, 2] {
            f.add_downstream(DownstreamSpec {
                key,
                ssrc: 1000 + key,
                payload_types: vec![(96, 100 + key as u8)],
                wanted_layer: 0,
                rtx: (key == 2).then(|| RtxSpec {
                    ssrc: 2002,
                    payload_types: vec![(102, 112)],
                }),
            });
        }
        f
    }

    #[test]
    fn fans_out_with_each_subscribers_ssrc_and_payload_type() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let now = Instant::now();
        f.on_packet(0, vp8_packet(7, 10, 900, true), now, &mut out, &mut kf);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].packet.header.ssrc, 1001);
        assert_eq!(out[0].packet.header.payload_type, 101);
        assert_eq!(out[1].packet.header.ssrc, 1002);
        assert_eq!(out[1].packet.header.payload_type, 102);
    }

    #[test]
    fn nack_is_answered_from_the_cache_with_the_same_output_sequence() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let now = Instant::now();
        f.on_packet(0, vp8_packet(7, 10, 900, true), now, &mut out, &mut kf);
        f.on_packet(0, vp8_packet(7, 11, 900, false), now, &mut out, &mut kf);
        let sent_seq = out
            .iter()
            .filter(|o| o.key == 2)
            .map(|o| o.packet.header.sequence_number)
            .nth(1)
            .unwrap();
        let mut resent = Vec::new();
        f.on_nack(1, [sent_seq], now, &mut resent);
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].packet.header.sequence_number, sent_seq);
        assert_eq!(resent[0].packet.header.ssrc, 1001);
        assert_eq!(f.stats.retransmitted, 1);
        let mut none = Vec::new();
        f.on_nack(1, [sent_seq.wrapping_add(100)], now, &mut none);
        assert!(none.is_empty());
        assert_eq!(f.stats.nack_misses, 1);
    }

    #[test]
    fn nack_on_a_leg_with_rtx_is_answered_on_the_rtx_stream() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let now = Instant::now();
        f.on_packet(0, vp8_packet(7, 10, 900, true), now, &mut out, &mut kf);
        let first = out.iter().find(|o| o.key == 2).unwrap().packet.clone();
        let mut resent = Vec::new();
        let seq = first.header.sequence_number;
        f.on_nack(2, [seq], now, &mut resent);
        // Asked again at once: not resent twice within a resend interval.
        f.on_nack(2, [seq], now, &mut resent);
        assert_eq!(resent.len(), 1);
        assert_eq!(f.stats.retransmissions_refused, 1);
        f.on_nack(2, [seq], now + RESEND_INTERVAL, &mut resent);
        assert_eq!(resent.len(), 2);
        let rtx = &resent[0].packet;
        assert_eq!(rtx.header.ssrc, 2002);
        assert_eq!(rtx.header.payload_type, 112);
        assert_eq!(rtx.header.timestamp, first.header.timestamp);
        assert_eq!(
            &rtx.payload[..2],
            &first.header.sequence_number.to_be_bytes()
        );
        assert_eq!(&rtx.payload[2..], &first.payload[..]);
        // The RTX stream has its own, consecutive sequence numbers.
        let next = resent[1].packet.header.sequence_number;
        assert_eq!(next, rtx.header.sequence_number.wrapping_add(1));
    }

    #[test]
    fn a_probe_resends_recent_packets_on_rtx_only() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let now = Instant::now();
        f.on_packet(0, vp8_packet(7, 10, 900, true), now, &mut out, &mut kf);
        for seq in 11..40 {
            f.on_packet(0, vp8_packet(7, seq, 900, false), now, &mut out, &mut kf);
        }
        let mut probes = Vec::new();
        // Leg 1 has no RTX: nothing to probe with.
        assert_eq!(f.probe(1, 500, now, &mut probes), 0);
        let queued = f.probe(2, 200, now, &mut probes);
        assert!(queued >= 200, "{queued}");
        assert!(
            probes
                .iter()
                .all(|p| p.key == 2 && p.packet.header.ssrc == 2002)
        );
        assert_eq!(f.stats.probe_packets as usize, probes.len());
        assert_eq!(f.stats.retransmitted, 0);
    }

    #[test]
    fn keyframe_requests_from_many_subscribers_are_throttled() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let t0 = Instant::now();
        f.on_packet(0, vp8_packet(7, 10, 900, true), t0, &mut out, &mut kf);
        kf.clear();
        f.on_keyframe_request(1, t0, &mut kf);
        f.on_keyframe_request(2, t0 + Duration::from_millis(10), &mut kf);
        assert_eq!(kf, vec![KeyframeRequest { layer: 0, ssrc: 7 }]);
        kf.clear();
        f.on_keyframe_request(2, t0 + Duration::from_millis(600), &mut kf);
        assert_eq!(kf.len(), 1);
    }

    #[test]
    fn a_throttled_keyframe_request_is_sent_once_the_interval_has_passed() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let t0 = Instant::now();
        f.on_packet(0, vp8_packet(7, 10, 900, true), t0, &mut out, &mut kf);
        assert!(kf.is_empty());
        f.on_keyframe_request(1, t0, &mut kf);
        assert_eq!(kf.len(), 1);
        kf.clear();
        // A second subscriber asks 100 ms later: throttled, but remembered.
        f.on_keyframe_request(2, t0 + Duration::from_millis(100), &mut kf);
        assert!(kf.is_empty());
        f.on_packet(
            0,
            vp8_packet(7, 11, 900, false),
            t0 + Duration::from_millis(300),
            &mut out,
            &mut kf,
        );
        assert!(kf.is_empty());
        f.on_packet(
            0,
            vp8_packet(7, 12, 900, false),
            t0 + Duration::from_millis(510),
            &mut out,
            &mut kf,
        );
        assert_eq!(kf, vec![KeyframeRequest { layer: 0, ssrc: 7 }]);
        // Answered by a keyframe: nothing more pending.
        kf.clear();
        f.on_packet(
            0,
            vp8_packet(7, 13, 1800, true),
            t0 + Duration::from_millis(600),
            &mut out,
            &mut kf,
        );
        f.on_packet(
            0,
            vp8_packet(7, 14, 1800, false),
            t0 + Duration::from_millis(1200),
            &mut out,
            &mut kf,
        );
        assert!(kf.is_empty());
    }

    #[test]
    fn aiortc_style_vp8_keyframe_starts_forwarding() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let mut p = vp8_packet(7, 10, 900, true);
        // X=1,S=1 | I=1 | M=1 15-bit picture id | VP8 keyframe header byte (P=0).
        p.payload = vec![0x90, 0x80, 0x81, 0x23, 0x50, 0x2a, 0x01].into();
        f.on_packet(0, p, Instant::now(), &mut out, &mut kf);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn unknown_payload_types_are_not_forwarded() {
        let mut f = forwarder();
        let (mut out, mut kf) = (Vec::new(), Vec::new());
        let mut p = vp8_packet(7, 10, 900, true);
        p.header.payload_type = 127;
        f.on_packet(0, p, Instant::now(), &mut out, &mut kf);
        assert!(out.is_empty());
    }

    #[test]
    fn a_keyframe_request_before_the_first_packet_is_sent_with_it() {
        let mut f = forwarder();
        let t0 = Instant::now();
        let mut requests = Vec::new();
        f.request_layer_keyframe(0, t0, &mut requests);
        assert!(requests.is_empty(), "no source SSRC known yet");
        let mut out = Vec::new();
        f.on_packet(0, vp8_packet(77, 1, 0, false), t0, &mut out, &mut requests);
        assert_eq!(requests, [KeyframeRequest { layer: 0, ssrc: 77 }]);
    }
}
