//! Fuzz entry points for the packet path: the codec payload parsers and the forwarder, which see
//! whatever a publisher (or a relay peer) puts in its RTP packets and whatever a subscriber puts
//! in its NACKs. The `cargo fuzz` targets in `fuzz/` are one-line calls to these, and the stable
//! short fuzz smoke run (`tests/tests/fuzz_smoke.rs`, part of `cargo test --workspace`) feeds them
//! the seed corpora and mutations of it. RTP and RTCP *headers* are parsed by the WebRTC stack, in
//! the node: `kaskade_node::fuzzing` parses them and hands the packets to [`forward_parsed`].
//!
//! Each function takes arbitrary bytes and must return normally whatever they are.

use crate::core::{
    AudioLevelWindow, VideoCodec, Vp8PictureIdRewriter, is_keyframe_start, vp8_descriptor,
};
use crate::forwarder::{
    DownstreamSpec, Forwarded, ForwardedMedia, KeyframeRequest, RtxSpec, TrackForwarder,
};
use std::time::{Duration, Instant};

const CODECS: [VideoCodec; 5] = [
    VideoCodec::Vp8,
    VideoCodec::Vp9,
    VideoCodec::H264,
    VideoCodec::Av1,
    VideoCodec::Other,
];

/// An RTP payload (after the RTP header and its extensions): every codec's keyframe-start
/// check, the VP8 payload descriptor parser, and the VP8 picture-id rewriter (live and
/// retransmission, across a source switch), which patches the payload in place.
pub fn codec_payload(data: &[u8]) {
    for codec in CODECS {
        let _ = is_keyframe_start(codec, data);
    }
    let descriptor = vp8_descriptor(data);
    if let Some(d) = &descriptor {
        assert!(
            d.header_len <= data.len(),
            "descriptor longer than the payload"
        );
        assert_eq!(d.picture_id.is_some(), d.picture_id_width.is_some());
    }
    let mut rewriter = Vp8PictureIdRewriter::new();
    for (ssrc, retransmission) in [(1, false), (2, false), (1, true), (2, false), (2, true)] {
        let mut payload = data.to_vec();
        let rewritten = if retransmission {
            rewriter.rewrite_retransmission(ssrc, &mut payload)
        } else {
            rewriter.rewrite(ssrc, &mut payload)
        };
        assert_eq!(payload.len(), data.len(), "the rewriter changed the length");
        if rewritten {
            // Only ids change: the rewritten descriptor has the same shape.
            let after = vp8_descriptor(&payload).map(|d| (d.header_len, d.picture_id_width));
            assert_eq!(
                after,
                descriptor.map(|d| (d.header_len, d.picture_id_width)),
                "the rewriter changed the descriptor's shape"
            );
        } else {
            assert_eq!(payload, data, "a refused rewrite touched the payload");
        }
    }
    let mut levels = AudioLevelWindow::default();
    for &level in data {
        levels.add(level);
    }
    assert!(levels.take().is_none_or(|mean| mean <= 127));
}

/// Reads the fuzzer's bytes as a script of forwarder events.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// Subscriber legs of the fuzzed forwarders: key, media SSRC, RTX SSRC.
const LEGS: [(u32, u32, Option<u32>); 2] = [(1, 1001, Some(2001)), (2, 1002, None)];

fn forwarder(media: ForwardedMedia, layers: usize) -> TrackForwarder<u32> {
    let clock_rate = if media == ForwardedMedia::Audio {
        48_000
    } else {
        90_000
    };
    let mut forwarder = TrackForwarder::with_keyframe_interval(
        media,
        clock_rate,
        layers,
        Duration::from_millis(100),
    );
    for (key, ssrc, rtx) in LEGS {
        forwarder.add_downstream(DownstreamSpec {
            key,
            ssrc,
            payload_types: vec![(96, 96 + key as u8 * 2), (111, 111)],
            wanted_layer: if key == 1 { 2 } else { 0 },
            rtx: rtx.map(|ssrc| RtxSpec {
                ssrc,
                payload_types: vec![(98, 99)],
            }),
        });
    }
    forwarder
}

/// What a forwarder hands out must go to a known leg, on that leg's SSRCs.
fn check_forwarded(out: &mut Vec<Forwarded<u32>>) {
    for f in out.drain(..) {
        let Some((_, ssrc, rtx)) = LEGS.iter().find(|(key, ..)| *key == f.key) else {
            panic!("a packet for an unknown leg {}", f.key);
        };
        let on = f.packet.header.ssrc;
        assert!(
            on == *ssrc || Some(on) == *rtx,
            "a packet on a foreign SSRC"
        );
    }
}

/// A script of events for one track's forwarder: publisher packets (any layer, SSRC, sequence
/// number, timestamp, payload), subscriber NACKs and keyframe requests, layer wishes, probes,
/// source restarts and the passing of time. The first byte picks the media and layer count.
pub fn forwarder_script(data: &[u8]) {
    let mut script = Script(data);
    let Some(setup) = script.u8() else {
        return;
    };
    let media = match setup % 5 {
        0 => ForwardedMedia::Audio,
        n => ForwardedMedia::Video(CODECS[usize::from(n) - 1]),
    };
    let layers = 1 + usize::from(setup / 5) % 3;
    let mut forwarder = forwarder(media, layers);
    let mut now = Instant::now();
    let (mut out, mut requests) = (Vec::new(), Vec::<KeyframeRequest>::new());
    while let Some(op) = script.u8() {
        let key = u32::from(op >> 4) % 3 + 1;
        match op % 8 {
            0..=2 => {
                let (Some(layer), Some(source), Some(seq), Some(ts), Some(pt), Some(len)) = (
                    script.u8(),
                    script.u8(),
                    script.u16(),
                    script.u32(),
                    script.u8(),
                    script.u8(),
                ) else {
                    break;
                };
                let payload = script.bytes(usize::from(len)).to_vec();
                let packet = rtp::packet::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: pt & 0x80 != 0,
                        payload_type: pt & 0x7f,
                        sequence_number: seq,
                        timestamp: ts,
                        ssrc: 0x1000 + u32::from(source % 4),
                        ..Default::default()
                    },
                    payload: payload.into(),
                };
                forwarder.on_packet(layer % 4, packet, now, &mut out, &mut requests);
            }
            3 => {
                let Some(count) = script.u8() else { break };
                let lost: Vec<u16> = (0..count % 64).map_while(|_| script.u16()).collect();
                forwarder.on_nack(key, lost, now, &mut out);
            }
            4 => {
                let Some(layer) = script.u8() else { break };
                forwarder.on_keyframe_request(key, now, &mut requests);
                forwarder.request_layer_keyframe(layer, now, &mut requests);
            }
            5 => {
                let Some(layer) = script.u8() else { break };
                forwarder.set_wanted_layer(key, layer);
                let _ = forwarder.current_layer(key);
                let _ = forwarder.wanted_layers();
            }
            6 => {
                let Some(step) = script.u8() else { break };
                now += Duration::from_millis(u64::from(step) * 8);
                if step == 0xff {
                    forwarder.restart_source(now, &mut requests);
                }
            }
            _ => {
                let Some(bytes) = script.u16() else { break };
                let _ = forwarder.can_probe(key);
                forwarder.probe(key, usize::from(bytes), now, &mut out);
                let _ = forwarder.cached(op >> 6, bytes);
            }
        }
        check_forwarded(&mut out);
        for request in requests.drain(..) {
            assert!(
                usize::from(request.layer) < layers,
                "keyframe request for a missing layer"
            );
        }
    }
}

/// One RTP packet as the node's WebRTC stack parsed it, through the packet path: the codec
/// parsers on its payload, then a three-layer VP8 forwarder (the path that rewrites payloads)
/// receiving it on every layer and on a switched source, with a NACK for what went out.
pub fn forward_parsed(packet: &rtp::packet::Packet) {
    codec_payload(&packet.payload);
    let mut forwarder = forwarder(ForwardedMedia::Video(VideoCodec::Vp8), 3);
    let now = Instant::now();
    let (mut out, mut requests) = (Vec::new(), Vec::new());
    for (layer, ssrc_offset, seq_offset) in [(0, 0, 0), (1, 1, 0), (2, 2, 0), (0, 0, 1), (2, 0, 2)]
    {
        let mut copy = packet.clone();
        // The payload type the forwarder's legs map (the node maps what was negotiated).
        copy.header.payload_type = 96;
        copy.header.ssrc = copy.header.ssrc.wrapping_add(ssrc_offset);
        copy.header.sequence_number = copy.header.sequence_number.wrapping_add(seq_offset);
        forwarder.on_packet(layer, copy, now, &mut out, &mut requests);
    }
    let sent: Vec<(u32, u16)> = out
        .iter()
        .map(|f| (f.key, f.packet.header.sequence_number))
        .collect();
    check_forwarded(&mut out);
    for (key, seq) in sent {
        forwarder.on_nack(key, [seq, seq.wrapping_sub(1)], now, &mut out);
    }
    check_forwarded(&mut out);
}

/// A subscriber's RTCP feedback as the node's media loop acts on it once the WebRTC stack has
/// parsed it: `keyframe_requests` PLI/FIR and the NACKed output sequence numbers `lost`, against
/// a simulcast VP8 forwarder that has forwarded a few packets (so some NACKs hit its cache).
pub fn subscriber_feedback(keyframe_requests: usize, lost: &[u16]) {
    let mut forwarder = forwarder(ForwardedMedia::Video(VideoCodec::Vp8), 3);
    let now = Instant::now();
    let (mut out, mut requests) = (Vec::new(), Vec::new());
    for seq in 0..8u16 {
        // A VP8 keyframe start with a 15-bit picture id, then interframes.
        let first = if seq == 0 { 0x00 } else { 0x01 };
        let packet = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: u32::from(seq / 2) * 3000,
                ssrc: 0x1000,
                ..Default::default()
            },
            payload: vec![0x90, 0x80, 0x80, seq as u8, first, 0, 0, 0].into(),
        };
        forwarder.on_packet(0, packet, now, &mut out, &mut requests);
    }
    check_forwarded(&mut out);
    for (key, ..) in LEGS {
        for _ in 0..keyframe_requests.min(8) {
            forwarder.on_keyframe_request(key, now, &mut requests);
        }
        forwarder.on_nack(key, lost.iter().copied(), now, &mut out);
        check_forwarded(&mut out);
    }
}
