//! Writes the seed corpora in `fuzz/corpus/<target>/` with the real encoders: relay frames from
//! `kaskade_proto::relay`, RTP and RTCP from the WebRTC stack's marshallers, STUN from its STUN
//! crate. The hand-written SDP seeds live in `fuzz/seeds/` and are copied as they are (after a check
//! that the node accepts them).
//! Run from `fuzz/`: `cargo run --example seed_corpus` (stable is fine). Every seed is checked
//! to decode before it is written.

use bytes::Bytes;
use kaskade_proto::ids::{ParticipantId, RoomName, TrackId};
use kaskade_proto::relay::{self, LayerSet, MediaDatagram, RelayCodec, RelayMessage, RelayTrack};
use kaskade_proto::signal::{
    ClientMessage, MediaKind, ModerationAction, ParticipantInfo, Role, RoomSettings, ServerMessage,
    TrackInfo, TrackSource,
};
use rtc::rtcp::goodbye::Goodbye;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{BINDING_REQUEST, Message, TransactionId};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus_dir(target).join(name), bytes).expect("seed written");
}

fn room() -> RoomName {
    RoomName::parse("physics-101").unwrap()
}

fn track_info(id: &str, kind: MediaKind, layers: &[&str]) -> TrackInfo {
    TrackInfo {
        id: TrackId(id.into()),
        participant: ParticipantId("p-ada".into()),
        kind,
        source: if kind == MediaKind::Audio {
            TrackSource::Microphone
        } else {
            TrackSource::Camera
        },
        layers: layers.iter().map(|l| (*l).into()).collect(),
        muted: false,
    }
}

fn relay_track() -> RelayTrack {
    RelayTrack {
        info: track_info("t-cam", MediaKind::Video, &["q", "h", "f"]),
        origin: "node-a1".into(),
        origin_site: "eu-west".into(),
        codecs: vec![
            RelayCodec {
                payload_type: 96,
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
            },
            RelayCodec {
                payload_type: 102,
                mime_type: "video/H264".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                    .into(),
            },
        ],
    }
}

fn ada(role: Role) -> ParticipantInfo {
    ParticipantInfo {
        id: ParticipantId("p-ada".into()),
        name: "Ada Lovelace".into(),
        role,
        hand_raised_at: Some(1_700_000_000_000),
    }
}

/// A VP8 keyframe start: X, I (15-bit picture id), L, T; S=1, PID=0; payload header P=0.
const VP8_KEYFRAME: &[u8] = &[
    0x90, 0xe0, 0x92, 0x34, 0x07, 0x40, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
];
/// A VP8 interframe, 7-bit picture id, no TL0PICIDX.
const VP8_INTER: &[u8] = &[0x80, 0x80, 0x35, 0x31, 0x22, 0x00, 0x11, 0x42];

fn rtp(seq: u16, pt: u8, ssrc: u32, payload: &[u8], extensions: &[(u8, &[u8])]) -> Vec<u8> {
    let mut header = rtc::rtp::header::Header {
        version: 2,
        marker: true,
        payload_type: pt,
        sequence_number: seq,
        timestamp: 0x1234_5678,
        ssrc,
        ..Default::default()
    };
    if !extensions.is_empty() {
        header.extension = true;
        header.extension_profile = 0xBEDE;
        for (id, value) in extensions {
            header
                .set_extension(*id, Bytes::copy_from_slice(value))
                .unwrap();
        }
    }
    let packet = rtc::rtp::Packet {
        header,
        payload: Bytes::copy_from_slice(payload),
    };
    let raw = packet.marshal().unwrap().to_vec();
    rtc::rtp::Packet::unmarshal(&mut raw.as_slice()).expect("RTP seed parses");
    raw
}

fn relay_seeds() {
    let messages = [
        RelayMessage::Hello {
            node: "node-a1".into(),
            site: "eu-west".into(),
            versions: relay::SUPPORTED_VERSIONS.to_vec(),
            software: "kaskade 0.1.0".into(),
        },
        RelayMessage::RoomState {
            room: room(),
            participants: vec![ada(Role::Host)],
            tracks: vec![relay_track()],
        },
        RelayMessage::TrackAnnounce {
            room: room(),
            track: relay_track(),
        },
        RelayMessage::Subscribe {
            room: room(),
            track: TrackId("t-cam".into()),
            channel: 7,
            layers: LayerSet::up_to(2),
        },
        RelayMessage::Nack {
            channel: 7,
            layer: 1,
            seqs: vec![100, 101, 65535, 0],
        },
        RelayMessage::Media {
            channel: 7,
            layer: 2,
            link_seq: 4242,
            rtp: rtp(9, 96, 0x1000, VP8_KEYFRAME, &[]),
        },
        RelayMessage::Chat {
            room: room(),
            from: ParticipantId("p-ada".into()),
            name: "Ada Lovelace".into(),
            text: "Bonjour à tous ✓".into(),
            ts: 1_700_000_000_123,
        },
        RelayMessage::Moderate {
            room: room(),
            by: ParticipantId("p-ada".into()),
            target: ParticipantId("p-bob".into()),
            action: ModerationAction::Mute {
                kind: MediaKind::Video,
            },
        },
        RelayMessage::RoomSettings {
            room: room(),
            settings: RoomSettings {
                only_hosts_publish: true,
                ..Default::default()
            },
        },
        RelayMessage::AudioLevels {
            room: room(),
            levels: vec![
                (ParticipantId("p-ada".into()), 30),
                (ParticipantId("p-bob".into()), 127),
            ],
        },
        RelayMessage::Ping {
            nonce: 0xdead_beef,
            rtt_us: 12_500,
        },
    ];
    for (i, message) in messages.iter().enumerate() {
        let frame = relay::encode_control(message).unwrap();
        let body = &frame[4..];
        assert_eq!(&relay::decode_control(body).unwrap(), message);
        let name = format!(
            "{i:02}-{}",
            format!("{message:?}").split([' ', '{']).next().unwrap()
        );
        write("relay_control", &name.to_lowercase(), body);
    }
    let datagrams = [
        ("vp8-keyframe", 2, rtp(1000, 96, 0x1002, VP8_KEYFRAME, &[])),
        ("vp8-inter", 0, rtp(1001, 96, 0x1000, VP8_INTER, &[])),
        (
            "opus",
            0,
            rtp(77, 111, 0x2000, &[0xfc, 0xff, 0xfe, 0x01, 0x02], &[]),
        ),
    ];
    for (name, layer, rtp) in datagrams {
        let datagram = MediaDatagram {
            channel: 7,
            layer,
            link_seq: 99,
            rtp: &rtp,
        };
        let mut out = Vec::new();
        relay::encode_datagram(&datagram, &mut out).unwrap();
        assert_eq!(relay::decode_datagram(&out).unwrap(), datagram);
        write("relay_datagram", name, &out);
    }
}

fn signalling_seeds() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let offer = std::fs::read_to_string(seeds.join("chrome-offer.sdp")).unwrap();
    let messages = [
        (
            "join",
            r#"{"type":"join","room":"physics-101","name":"Ada Lovelace","token":"eyJhbGciOiJIUzI1NiJ9.eyJyb29tIjoicGh5c2ljcy0xMDEifQ.c2lnbmF0dXJl"}"#.to_owned(),
        ),
        (
            "join-resume",
            r#"{"type":"join","room":"physics-101","name":"Ada","auto_subscribe":false,"resume":"rt-123","site":"eu-west","role":"audience"}"#.to_owned(),
        ),
        (
            "publish-offer",
            serde_json::json!({"type": "publish_offer", "sdp": offer, "sources": {"0": "microphone", "1": "camera"}}).to_string(),
        ),
        (
            "candidate",
            r#"{"type":"candidate","role":"publish","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61234 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag 4ZcD network-cost 999","sdpMid":"0","sdpMLineIndex":0}}"#.to_owned(),
        ),
        ("subscribe", r#"{"type":"subscribe","track":"t-cam","layer":"medium"}"#.to_owned()),
        ("set-layer", r#"{"type":"set_layer","track":"t-cam","layer":"high"}"#.to_owned()),
        ("chat", r#"{"type":"chat","text":"Bonjour \u00e0 tous \ud83d\udc4b"}"#.to_owned()),
        ("set-role", r#"{"type":"set_role","participant":"p-bob","role":"speaker"}"#.to_owned()),
        ("mute-all", r#"{"type":"mute_participant","kind":"video"}"#.to_owned()),
        (
            "room-settings",
            r#"{"type":"set_room_settings","settings":{"only_hosts_publish":true,"locked":true}}"#.to_owned(),
        ),
        ("preferences", r#"{"type":"set_preferences","last_n":4,"audio_only":false}"#.to_owned()),
        ("leave", r#"{"type":"leave"}"#.to_owned()),
    ];
    for (name, json) in &messages {
        ClientMessage::decode(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        write("signalling_json", name, json.as_bytes());
    }
    let joined = serde_json::json!({
        "type": "joined",
        "participant": "p-ada",
        "room": "physics-101",
        "participants": [ada(Role::Host)],
        "tracks": [track_info("t-mic", MediaKind::Audio, &[]), track_info("t-cam", MediaKind::Video, &["q", "h", "f"])],
        "resume_token": "rt-123",
        "alternates": ["wss://b.example/ws"],
        "role": "host",
    })
    .to_string();
    serde_json::from_str::<ServerMessage>(&joined).unwrap();
    write("signalling_json", "server-joined", joined.as_bytes());
    let error = ServerMessage::error(kaskade_proto::signal::ErrorCode::BadRequest, "nope").encode();
    write("signalling_json", "server-error", error.as_bytes());
}

fn payload_seeds() {
    let payloads: [(&str, &[u8]); 8] = [
        ("vp8-keyframe", VP8_KEYFRAME),
        ("vp8-inter", VP8_INTER),
        // VP9: I, B (start of frame), L (layer indices, SID 0), not P; picture id 15-bit.
        (
            "vp9-keyframe",
            &[0xa8, 0x80, 0x01, 0x00, 0x00, 0x82, 0x49, 0x83, 0x42, 0x00],
        ),
        // H.264 STAP-A: SPS, PPS, then an IDR slice.
        (
            "h264-stap-a",
            &[
                0x78, 0x00, 0x05, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x00, 0x03, 0x68, 0xce, 0x3c, 0x00,
                0x04, 0x65, 0x88, 0x84, 0x00,
            ],
        ),
        // H.264 FU-A, start of an IDR slice.
        ("h264-fu-a", &[0x7c, 0x85, 0x88, 0x84, 0x00, 0x33, 0xff]),
        // AV1 aggregation header with N=1 (new coded video sequence), one OBU.
        (
            "av1-sequence-start",
            &[0x18, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xce],
        ),
        // Opus TOC byte and a few frames' worth of bytes.
        ("opus", &[0xfc, 0xff, 0xfe, 0x01, 0x02, 0x03]),
        ("empty", &[]),
    ];
    for (name, payload) in payloads {
        write("codec_payload", name, payload);
    }
    let full = rtp(
        1000,
        96,
        0x1000,
        VP8_KEYFRAME,
        &[(1, &[0x30]), (3, &[0x00, 0x07])],
    );
    write("rtp_packet", "vp8-keyframe-extensions", &full);
    write(
        "rtp_packet",
        "vp8-inter",
        &rtp(1001, 96, 0x1000, VP8_INTER, &[]),
    );
    write(
        "rtp_packet",
        "opus-audio-level",
        &rtp(77, 111, 0x2000, &[0xfc, 0xff, 0xfe], &[(1, &[0x80 | 40])]),
    );
    write(
        "rtp_packet",
        "h264-fu-a",
        &rtp(
            5,
            102,
            0x3000,
            &[0x7c, 0x85, 0x88, 0x84, 0x00],
            &[(3, &[0x00, 0x08])],
        ),
    );
    // Padding: P bit, two padding bytes, the last one giving the count.
    let mut padded = rtp(6, 96, 0x1000, VP8_INTER, &[]);
    padded[0] |= 0x20;
    padded.extend_from_slice(&[0x00, 0x02]);
    write("rtp_packet", "padded", &padded);
}

/// A script for `forwarder_script`: op bytes and their arguments (see `kaskade_mesh::fuzzing`).
fn forwarder_seeds() {
    fn packet(layer: u8, source: u8, seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
        let mut op = vec![0, layer, source];
        op.extend_from_slice(&seq.to_be_bytes());
        op.extend_from_slice(&ts.to_be_bytes());
        op.push(pt);
        op.push(payload.len() as u8);
        op.extend_from_slice(payload);
        op
    }
    for (name, setup) in [
        ("vp8-simulcast", 1 + 5 * 2),
        ("vp9", 2),
        ("h264", 3),
        ("audio", 0),
    ] {
        let mut script = vec![setup];
        for seq in 0..6u16 {
            for layer in 0..3u8 {
                let payload = match (setup, seq) {
                    (0, _) => &[0xfc, 0xff, 0xfe][..],
                    (2, 0) => &[0xa8, 0x80, 0x01, 0x00, 0x00, 0x82][..],
                    (3, 0) => &[0x65, 0x88, 0x84][..],
                    (_, 0) => VP8_KEYFRAME,
                    _ => VP8_INTER,
                };
                let pt = if setup == 0 { 111 } else { 96 };
                script.extend(packet(
                    layer,
                    layer,
                    100 + seq,
                    3000 * u32::from(seq),
                    pt,
                    payload,
                ));
            }
            script.extend([6, 4]); // 32 ms later
        }
        script.extend([3 | 0x10, 3, 0, 101, 0, 102, 0xff, 0xff]); // NACK from leg 2
        script.extend([4, 1]); // PLI, layer keyframe request
        script.extend([5 | 0x10, 0]); // leg 2 wants layer 0
        script.extend([7, 0x04, 0x00]); // probe 1 KiB on leg 1
        script.extend([6, 0xff]); // time passes, source restarts
        write("forwarder_script", name, &script);
    }
}

fn rtcp_seeds() {
    use rtc::rtcp::packet::Packet;
    let media = 0x5002;
    let sr = SenderReport {
        ssrc: 0x7777,
        ntp_time: 0xe8f1_2345_6789_abcd,
        rtp_time: 0x1234_5678,
        packet_count: 100,
        octet_count: 120_000,
        reports: vec![ReceptionReport {
            ssrc: media,
            fraction_lost: 12,
            total_lost: 3,
            last_sequence_number: 15,
            jitter: 40,
            last_sender_report: 0x2345_6789,
            delay: 600,
        }],
        ..Default::default()
    };
    let sdes = SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: 0x7777,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: Bytes::from_static(b"x2b7Hk1Ua9fQ8mZt"),
            }],
        }],
    };
    let rr = ReceiverReport {
        ssrc: 0x7777,
        reports: vec![ReceptionReport {
            ssrc: media,
            last_sequence_number: 15,
            ..Default::default()
        }],
        ..Default::default()
    };
    let nack = TransportLayerNack {
        sender_ssrc: 0x7777,
        media_ssrc: media,
        nacks: vec![NackPair {
            packet_id: 3,
            lost_packets: 0b101,
        }],
    };
    let pli = PictureLossIndication {
        sender_ssrc: 0x7777,
        media_ssrc: media,
    };
    let fir = FullIntraRequest {
        sender_ssrc: 0x7777,
        media_ssrc: media,
        fir: vec![FirEntry {
            ssrc: media,
            sequence_number: 1,
        }],
    };
    // Transport-wide feedback for the 16 packets the fuzzed chain sends (seq 0..16): a status
    // vector (two-bit symbols) for the first 7, a run of 9 small deltas.
    let mut symbols = vec![SymbolTypeTcc::PacketReceivedSmallDelta; 7];
    symbols[3] = SymbolTypeTcc::PacketNotReceived;
    symbols[5] = SymbolTypeTcc::PacketReceivedLargeDelta;
    let mut deltas = Vec::new();
    for (i, s) in symbols.iter().enumerate() {
        match s {
            SymbolTypeTcc::PacketReceivedSmallDelta => deltas.push(RecvDelta {
                type_tcc_packet: *s,
                delta: 5_000 + i as i64 * 250,
            }),
            SymbolTypeTcc::PacketReceivedLargeDelta => deltas.push(RecvDelta {
                type_tcc_packet: *s,
                delta: 70_000,
            }),
            _ => {}
        }
    }
    for _ in 0..9 {
        deltas.push(RecvDelta {
            type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
            delta: 5_000,
        });
    }
    let twcc = TransportLayerCc {
        sender_ssrc: 0x7777,
        media_ssrc: media,
        base_sequence_number: 0,
        packet_status_count: 16,
        reference_time: 100,
        fb_pkt_count: 0,
        packet_chunks: vec![
            PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: symbols,
            }),
            PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: 9,
            }),
        ],
        recv_deltas: deltas,
    };
    let remb = ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 0x7777,
        bitrate: 1_500_000.0,
        ssrcs: vec![media],
    };
    let bye = Goodbye {
        sources: vec![0x7777],
        reason: Bytes::from_static(b"leaving"),
    };
    let compounds: [(&str, Vec<Box<dyn Packet>>); 7] = [
        ("sr-sdes", vec![Box::new(sr), Box::new(sdes.clone())]),
        ("rr-nack", vec![Box::new(rr.clone()), Box::new(nack)]),
        ("rr-pli", vec![Box::new(rr.clone()), Box::new(pli)]),
        ("fir", vec![Box::new(fir)]),
        ("rr-twcc", vec![Box::new(rr.clone()), Box::new(twcc)]),
        ("rr-remb", vec![Box::new(rr), Box::new(remb)]),
        ("sdes-bye", vec![Box::new(sdes), Box::new(bye)]),
    ];
    for (name, packets) in compounds {
        let raw = rtc::rtcp::packet::marshal(&packets).unwrap();
        let parsed = rtc::rtcp::packet::unmarshal(&mut raw.as_ref()).expect("RTCP seed parses");
        assert_eq!(parsed.len(), packets.len(), "{name}");
        write("rtcp_compound", name, &raw);
    }
}

fn datagram_seeds() {
    let mut m = Message::new();
    m.set_type(BINDING_REQUEST);
    // A fixed transaction id, so the seed is the same on every run.
    m.transaction_id = TransactionId(*b"kaskade-seed");
    m.write_transaction_id();
    m.add(ATTR_USERNAME, b"Qh7vXk2mN9pL4sRt:4ZcD");
    m.write_header();
    write("media_datagram", "stun-binding-request", &m.raw);
    // A DTLS 1.2 handshake record header with the start of a ClientHello.
    write(
        "media_datagram",
        "dtls-client-hello",
        &[
            0x16, 0xfe, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01,
            0x00, 0x00, 0x34, 0x00, 0x00,
        ],
    );
    write("media_datagram", "rtp", &rtp(1, 96, 0x1000, VP8_INTER, &[]));
}

fn sdp_seeds() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        if name.ends_with("-offer.sdp") {
            kaskade_node::edge::offer::parse_offer(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            write("sdp_offer", &name, text.as_bytes());
            write("sdp_negotiation", &name, text.as_bytes());
        } else if name.ends_with("-answer.sdp") {
            let offer = kaskade_node::fuzzing::subscriber_offer();
            kaskade_node::edge::offer::check_answer(&offer, &text)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{offer}"));
            write("sdp_answer", &name, text.as_bytes());
        }
    }
}

fn main() {
    relay_seeds();
    signalling_seeds();
    payload_seeds();
    forwarder_seeds();
    rtcp_seeds();
    datagram_seeds();
    sdp_seeds();
    println!("seed corpora written under {}", corpus_dir("").display());
}
