//! Micro-benchmarks of the pure forwarding core (issue 5, item 5): the per-subscriber packet
//! rewrite (sequence number / timestamp, VP8 picture id), `TrackForwarder` fan-out of one video
//! packet to N subscribers, the NACK packet cache, and `TrackForwarder::on_nack`.
//!
//! Two ways to run the same cases:
//! - `cargo bench -p kaskade-mesh --bench forwarding_core` — criterion, wall-clock time.
//! - `KASKADE_BENCH_ITERS=N [KASKADE_BENCH_CASE=name] <bench binary>` — no criterion: every case
//!   (or the named one) runs exactly N times and prints one `case NAME iters=N elements=E` line,
//!   for `valgrind --tool=callgrind` instruction counts that repeat exactly (`bench/callgrind.sh`).
//!
//! A case is its setup (done once, outside the measurement) and one closure per iteration; both
//! modes call the very same closure. Input packets look like Chrome's simulcast VP8: a 15-bit
//! picture id, TL0PICIDX and temporal id in the payload descriptor, 8 packets of ~1200 B per
//! frame with the marker bit on the last, two one-byte header extensions, a keyframe every 64
//! frames. Every input packet is built fresh (its payload copied into a new buffer, as the RTP
//! parser does), so its cost is inside the per-packet figures: `input/fresh_packet` measures it
//! alone, to subtract.

use kaskade_mesh::core::{
    PacketCache, SequenceRewriter, VideoCodec, Vp8PictureIdRewriter, is_keyframe_start,
};
use kaskade_mesh::forwarder::{
    DownstreamSpec, Forwarded, ForwardedMedia, KeyframeRequest, PACKET_CACHE_SIZE, RtxSpec,
    TrackForwarder,
};
use rtp::header::{Extension, Header};
use rtp::packet::Packet;
use std::hint::black_box;
use std::time::{Duration, Instant};

const CLOCK_RATE: u32 = 90_000;
const VP8_PT: u8 = 96;
/// RTP payload bytes per packet (payload descriptor included): a full packet under a 1200 B MTU
/// budget once the RTP header and extensions are added.
const PAYLOAD_LEN: usize = 1_160;
const PACKETS_PER_FRAME: u32 = 8;
const KEYFRAME_EVERY_FRAMES: u32 = 64;
const FRAME_INTERVAL: Duration = Duration::from_millis(33);
const FAN_OUT: [usize; 5] = [0, 1, 10, 100, 1000];

#[path = "../../bench/microbench_harness.rs"]
mod harness;
use harness::{FixedIterations, Harness};

fn main() {
    match FixedIterations::from_env() {
        Some(mut fixed) => register(&mut fixed),
        None => {
            let mut criterion = harness::criterion();
            register(&mut criterion);
            criterion.final_summary();
        }
    }
}

fn register(h: &mut impl Harness) {
    input_cases(h);
    rewrite_cases(h);
    fan_out_cases(h);
    nack_cases(h);
}

// ---------------------------------------------------------------------------------------------
// Input: a publisher's VP8 stream.

/// A publisher's VP8 simulcast layer as the node receives it, one packet at a time.
struct Vp8Source {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    /// Packet index within the current frame.
    in_frame: u32,
    frame: u32,
    picture_id: u16,
    tl0picidx: u8,
    transport_cc: u16,
    now: Instant,
    /// The VP8 bitstream bytes after the payload descriptor (content is irrelevant).
    body: Vec<u8>,
}

impl Vp8Source {
    fn new(ssrc: u32, now: Instant) -> Self {
        Self {
            ssrc,
            seq: 40_000,
            timestamp: 1_000_000,
            in_frame: 0,
            frame: 0,
            picture_id: 20_000,
            tl0picidx: 7,
            transport_cc: 1,
            now,
            body: (0..PAYLOAD_LEN).map(|i| (i * 31 + 7) as u8).collect(),
        }
    }

    /// The next packet, as freshly parsed from the wire (owned payload and extension buffers).
    fn next_packet(&mut self) -> Packet {
        let first = self.in_frame == 0;
        let last = self.in_frame == PACKETS_PER_FRAME - 1;
        let keyframe = self.frame.is_multiple_of(KEYFRAME_EVERY_FRAMES);
        let temporal_id = (self.frame % 2) as u8;
        let descriptor = [
            // X=1, S=1 on the frame's first packet, PID=0.
            0x80 | if first { 0x10 } else { 0 },
            // I=1, L=1, T=1.
            0xe0,
            0x80 | (self.picture_id >> 8) as u8,
            self.picture_id as u8,
            self.tl0picidx,
            // TID, Y=1.
            temporal_id << 6 | 0x20,
        ];
        let mut payload = Vec::with_capacity(PAYLOAD_LEN);
        payload.extend_from_slice(&descriptor);
        if first {
            // VP8 payload header: P bit (0 = keyframe), then the keyframe start code.
            payload.extend_from_slice(&[if keyframe { 0x50 } else { 0x51 }, 0x2a, 0x01]);
            payload.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        }
        let rest = PAYLOAD_LEN - payload.len();
        payload.extend_from_slice(&self.body[..rest]);

        let packet = Packet {
            header: Header {
                version: 2,
                extension: true,
                marker: last,
                payload_type: VP8_PT,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc: self.ssrc,
                extension_profile: 0xbede,
                extensions: vec![
                    Extension {
                        id: 2,
                        payload: vec![0x12, 0x34, 0x56].into(),
                    },
                    Extension {
                        id: 3,
                        payload: self.transport_cc.to_be_bytes().to_vec().into(),
                    },
                ],
                ..Default::default()
            },
            payload: payload.into(),
        };

        self.seq = self.seq.wrapping_add(1);
        self.transport_cc = self.transport_cc.wrapping_add(1);
        self.in_frame += 1;
        if last {
            self.in_frame = 0;
            self.frame += 1;
            self.timestamp = self.timestamp.wrapping_add(CLOCK_RATE / 30);
            self.picture_id = (self.picture_id + 1) & 0x7fff;
            if temporal_id == 1 {
                self.tl0picidx = self.tl0picidx.wrapping_add(1);
            }
            self.now += FRAME_INTERVAL;
        }
        packet
    }
}

fn input_cases(h: &mut impl Harness) {
    let name = "input/fresh_packet";
    if h.wants(name) {
        let mut source = Vp8Source::new(0x1111, Instant::now());
        h.case(name, 1, || source.next_packet());
    }
}

// ---------------------------------------------------------------------------------------------
// Packet rewrite: the per-subscriber steps of `TrackForwarder::on_packet`, one at a time.

fn rewrite_cases(h: &mut impl Harness) {
    let now = Instant::now();

    let name = "rewrite/sequence_timestamp";
    if h.wants(name) {
        let mut rewriter = SequenceRewriter::new(CLOCK_RATE);
        let (mut seq, mut ts) = (40_000u16, 1_000_000u32);
        h.case(name, 1, || {
            seq = seq.wrapping_add(1);
            if seq.is_multiple_of(PACKETS_PER_FRAME as u16) {
                ts = ts.wrapping_add(3_000);
            }
            rewriter.rewrite(0x1111, black_box(seq), black_box(ts), now)
        });
    }

    let name = "rewrite/keyframe_check_vp8";
    if h.wants(name) {
        let payload = Vp8Source::new(0x1111, now).next_packet().payload;
        h.case(name, 1, || {
            is_keyframe_start(VideoCodec::Vp8, black_box(&payload))
        });
    }

    // The picture-id rewrite on a payload rewritten in place, the source advancing one picture
    // per iteration (the descriptor bytes are written back each time as a new packet would be).
    let name = "rewrite/vp8_picture_id_in_place";
    if h.wants(name) {
        let mut rewriter = Vp8PictureIdRewriter::new();
        let mut payload = Vp8Source::new(0x1111, now).next_packet().payload.to_vec();
        let mut picture_id = 20_000u16;
        let mut tl0picidx = 7u8;
        h.case(name, 1, || {
            picture_id = (picture_id + 1) & 0x7fff;
            tl0picidx = tl0picidx.wrapping_add((picture_id & 1) as u8);
            payload[2] = 0x80 | (picture_id >> 8) as u8;
            payload[3] = picture_id as u8;
            payload[4] = tl0picidx;
            rewriter.rewrite(0x1111, black_box(&mut payload))
        });
    }

    // What the forwarder does per subscriber of a simulcast VP8 track: copy the payload into a
    // new buffer, rewrite the picture id there, and wrap it as the outgoing packet's `Bytes`.
    let name = "rewrite/vp8_copy_and_rewrite";
    if h.wants(name) {
        let mut rewriter = Vp8PictureIdRewriter::new();
        let payload = Vp8Source::new(0x1111, now).next_packet().payload;
        h.case(name, 1, || {
            let mut copy = black_box(&payload).to_vec();
            rewriter.rewrite(0x1111, &mut copy);
            rtp::packet::Packet {
                header: Header::default(),
                payload: copy.into(),
            }
            .payload
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Fan-out: one publisher packet through `TrackForwarder::on_packet` to N subscribers.

/// A forwarder with `downstreams` subscribers that all receive `layer`, warmed up (caches full,
/// every subscriber forwarding), and the source of `layer`'s packets.
struct FanOut {
    forwarder: TrackForwarder<u32>,
    layer: u8,
    source: Vp8Source,
    out: Vec<Forwarded<u32>>,
    requests: Vec<KeyframeRequest>,
}

impl FanOut {
    fn new(layer_count: usize, downstreams: usize) -> Self {
        let layer = (layer_count - 1) as u8;
        let mut forwarder = TrackForwarder::new(
            ForwardedMedia::Video(VideoCodec::Vp8),
            CLOCK_RATE,
            layer_count,
        );
        for key in 0..downstreams as u32 {
            forwarder.add_downstream(downstream(key, layer));
        }
        let mut fan_out = Self {
            forwarder,
            layer,
            source: Vp8Source::new(0x2000 + u32::from(layer), Instant::now()),
            out: Vec::with_capacity(downstreams),
            requests: Vec::new(),
        };
        // Past the first keyframe and a full packet cache: the steady state.
        for _ in 0..2 * PACKET_CACHE_SIZE {
            fan_out.step();
        }
        fan_out
    }

    /// One packet in; the subscribers' copies are dropped on the next step (the node hands them
    /// to the sessions, which drop them once sent).
    fn step(&mut self) -> usize {
        self.out.clear();
        self.requests.clear();
        let packet = self.source.next_packet();
        self.forwarder.on_packet(
            self.layer,
            packet,
            self.source.now,
            &mut self.out,
            &mut self.requests,
        );
        self.out.len()
    }
}

/// A subscriber leg as the node attaches it: a few shared codecs (VP8 first) and RTX.
fn downstream(key: u32, layer: u8) -> DownstreamSpec<u32> {
    DownstreamSpec {
        key,
        ssrc: 0x1000_0000 + key,
        payload_types: vec![(VP8_PT, VP8_PT), (98, 98), (102, 102)],
        wanted_layer: layer,
        rtx: Some(RtxSpec {
            ssrc: 0x2000_0000 + key,
            payload_types: vec![(VP8_PT, 97), (98, 99), (102, 103)],
        }),
    }
}

fn fan_out_cases(h: &mut impl Harness) {
    // One layer: the payload is shared by every copy. Three layers (simulcast): each copy gets
    // its own payload with a rewritten picture id.
    for (label, layer_count) in [("vp8", 1), ("vp8_simulcast", 3)] {
        for n in FAN_OUT {
            let name = format!("fan_out_{label}/{n}");
            if !h.wants(&name) {
                continue;
            }
            let mut fan_out = FanOut::new(layer_count, n);
            assert_eq!(fan_out.step(), n, "every subscriber gets the packet");
            h.case(&name, n as u64, || fan_out.step());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NACK: the packet cache alone, then a whole `on_nack`.

fn nack_cases(h: &mut impl Harness) {
    let now = Instant::now();

    // A cache of the forwarder's size, full, as the forwarder fills it (packets whose payload is
    // shared with the copies sent on).
    let full_cache = || {
        let mut source = Vp8Source::new(0x1111, now);
        let mut cache = PacketCache::new(PACKET_CACHE_SIZE);
        for _ in 0..2 * PACKET_CACHE_SIZE {
            let packet = source.next_packet();
            let _sent = packet.payload.clone();
            cache.insert(packet.header.sequence_number, packet);
        }
        (cache, source)
    };

    // Insert of a packet clone, evicting the one a lap older, as `on_packet` does.
    let name = "nack/cache_insert";
    if h.wants(name) {
        let (mut cache, mut source) = full_cache();
        let template = source.next_packet();
        let _shared = template.payload.clone();
        let mut seq = template.header.sequence_number;
        h.case(name, 1, || {
            seq = seq.wrapping_add(1);
            cache.insert(seq, template.clone());
        });
    }

    // Lookups of the last 256 sequence numbers (hits) and of ones a lap older whose slots have
    // been reused (misses).
    for (name, back) in [("nack/cache_get_hit", 1u16), ("nack/cache_get_miss", 513)] {
        if !h.wants(name) {
            continue;
        }
        let (cache, source) = full_cache();
        let newest = source.seq.wrapping_sub(1);
        let mut i = 0u16;
        h.case(name, 1, || {
            i = (i + 1) & 0xff;
            let seq = newest.wrapping_sub(back + i);
            cache.get(black_box(seq)).map(|p| p.header.timestamp)
        });
    }

    // A subscriber NACKs one output sequence number: map it back to the source, look it up,
    // and build the retransmission (RTX) packet; or miss because it is older than the cache.
    for (name, layer_count, back) in [
        ("nack/on_nack_hit_rtx", 1, 1u16),
        ("nack/on_nack_hit_rtx_simulcast", 3, 1),
        ("nack/on_nack_miss", 1, 600),
    ] {
        if !h.wants(name) {
            continue;
        }
        let mut fan_out = FanOut::new(layer_count, 10);
        let newest = fan_out.out[5].packet.header.sequence_number;
        let mut resent = Vec::with_capacity(1);
        fan_out.forwarder.on_nack(
            5,
            [newest.wrapping_sub(back + 1)],
            Instant::now(),
            &mut resent,
        );
        assert_eq!(
            resent.len(),
            usize::from(back < 512),
            "{name} hits or misses"
        );
        let mut i = 0u16;
        h.case(name, 1, || {
            resent.clear();
            i = (i + 1) & 0xff;
            let lost = newest.wrapping_sub(back + i);
            fan_out
                .forwarder
                .on_nack(5, [lost], Instant::now(), &mut resent);
            resent.len()
        });
    }
}
