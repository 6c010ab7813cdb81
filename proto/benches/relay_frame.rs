//! Micro-benchmarks of the inter-node relay protocol's encode and decode (issue 5, item 5): media
//! datagrams and control frames (a ~1200 B media frame on the stream, a NACK, a subscribe), the
//! size-limited framed decode (length prefix, then body), and the refusal of a frame whose
//! declared length lies.
//!
//! Two ways to run the same cases:
//! - `cargo bench -p kaskade-proto --bench relay_frame` — criterion, wall-clock time.
//! - `KASKADE_BENCH_ITERS=N [KASKADE_BENCH_CASE=name] <bench binary>` — no criterion: every case
//!   (or the named one) runs exactly N times and prints one `case NAME iters=N elements=E` line,
//!   for `valgrind --tool=callgrind` instruction counts that repeat exactly (`bench/callgrind.sh`).
//!
//! A case is its setup (done once, outside the measurement) and one closure per iteration; both
//! modes call the very same closure.

use kaskade_proto::relay::{
    LayerSet, MediaDatagram, RELAY_VERSION, RelayMessage, control_frame_len, decode_control,
    decode_datagram, encode_control, encode_datagram,
};
use kaskade_proto::{RoomName, TrackId};
use std::hint::black_box;

/// Bytes of one relayed RTP packet (12 B header, then the VP8 payload): a full video packet.
const RTP_LEN: usize = 1_200;

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
    datagram_cases(h);
    control_cases(h);
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// A VP8 RTP packet as the relay carries it: 12 B header, payload descriptor with a 15-bit
/// picture id, then the bitstream.
fn rtp_packet(seq: u16) -> Vec<u8> {
    let mut rtp = vec![0x80, 96];
    rtp.extend_from_slice(&seq.to_be_bytes());
    rtp.extend_from_slice(&3_000_000u32.to_be_bytes());
    rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    rtp.extend_from_slice(&[0x90, 0xe0, 0xce, 0x20, 0x07, 0x20]);
    rtp.extend((rtp.len()..RTP_LEN).map(|i| (i * 31 + 7) as u8));
    rtp
}

fn datagram_cases(h: &mut impl Harness) {
    let rtp = rtp_packet(4_242);

    // Encode into the sender's reused scratch buffer, as `send_media` does.
    let name = "datagram/encode";
    if h.wants(name) {
        let mut scratch = Vec::with_capacity(2 * RTP_LEN);
        let mut link_seq = 1_000_000u32;
        h.case(name, 1, || {
            link_seq = link_seq.wrapping_add(1);
            let datagram = MediaDatagram {
                channel: 17,
                layer: 2,
                link_seq,
                rtp: black_box(&rtp),
            };
            encode_datagram(&datagram, &mut scratch).map(|()| scratch.len())
        });
    }

    let name = "datagram/decode";
    if h.wants(name) {
        let mut encoded = Vec::new();
        let datagram = MediaDatagram {
            channel: 17,
            layer: 2,
            link_seq: 1_000_000,
            rtp: &rtp,
        };
        encode_datagram(&datagram, &mut encoded).expect("encodes");
        h.case(name, 1, || {
            decode_datagram(black_box(&encoded)).map(|d| (d.link_seq, d.rtp.len()))
        });
    }
}

fn control_cases(h: &mut impl Harness) {
    let room = RoomName::parse("all-hands-2024").expect("valid room name");
    let messages = [
        // A packet too large for a datagram goes on the stream.
        (
            "media",
            RelayMessage::Media {
                channel: 17,
                layer: 2,
                link_seq: 1_000_000,
                rtp: rtp_packet(4_242),
            },
        ),
        // A burst of 16 losses.
        (
            "nack",
            RelayMessage::Nack {
                channel: 17,
                layer: 2,
                seqs: (0..16).map(|i| 65_530u16.wrapping_add(i * 3)).collect(),
            },
        ),
        (
            "subscribe",
            RelayMessage::Subscribe {
                room,
                track: TrackId("p-7f3a9c1e/camera-0".into()),
                channel: 17,
                layers: LayerSet::single(2),
            },
        ),
    ];

    for (label, message) in &messages {
        // The whole frame, length prefix included, in a new buffer (as `encode_control` does).
        let name = format!("control/encode_{label}");
        if h.wants(&name) {
            h.case(&name, 1, || encode_control(black_box(message)));
        }

        // The reader's path: length prefix checked against the limit, then the body decoded
        // with the size-limited configuration.
        let name = format!("control/decode_{label}");
        if h.wants(&name) {
            let frame = encode_control(message).expect("encodes");
            assert_eq!(decode_control(&frame[4..]).as_ref(), Ok(message));
            h.case(&name, 1, || {
                let frame = black_box(&frame);
                let prefix = [frame[0], frame[1], frame[2], frame[3]];
                control_frame_len(prefix).and_then(|len| decode_control(&frame[4..4 + len]))
            });
        }
    }

    // A small frame whose string claims 2^60 bytes: refused without allocating for it.
    let name = "control/decode_refused_oversized_string";
    if h.wants(name) {
        let mut evil = vec![RELAY_VERSION, 12, 7, 0xfd];
        evil.extend_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(decode_control(&evil).is_err());
        h.case(name, 1, || decode_control(black_box(&evil)).is_err());
    }
}
