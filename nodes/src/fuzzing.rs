//! Fuzz entry points for what clients send the node's WebRTC edge: SDP offers and answers, RTP
//! and RTCP packets (after SRTP, as the stack parses them), and the datagrams that reach the
//! shared media socket before any session knows them. The `cargo fuzz` targets in `fuzz/` are
//! one-line calls to these, and the stable short fuzz smoke run (`tests/tests/fuzz_smoke.rs`,
//! part of `cargo test --workspace`) feeds them the seed corpora and mutations of it.
//!
//! Each function takes arbitrary bytes and must return normally whatever they are. Where the node
//! hands parsed input on (to the peer connection, the interceptors, the forwarder), so do these,
//! in the order the engine does: a panic anywhere on that path is a bug.

// The packet path's entry points, for callers (the smoke run) that only depend on this crate.
pub use kaskade_mesh::fuzzing::{codec_payload, forwarder_script};

use crate::edge::bandwidth::with_congestion_control;
use crate::edge::datagram::{DatagramClass, classify, stun_local_ufrag};
use crate::edge::feedback_interceptor::{FEEDBACK_SLOT, RtcpToApplication, is_forwarder_feedback};
use crate::edge::offer::{check_answer, parse_offer};
use crate::edge::peer_factory::{PeerRole, new_peer};
use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, NackGeneratorBuilder, Packet, RTCPFeedback,
    RTPHeaderExtension, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot, StreamInfo,
    TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_receiver_only;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::sdp::SessionDescription;
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, TRANSPORT_CC_URI};
use rtc::shared::marshal::Unmarshal;
use rtc::shared::{TransportContext, TransportMessage};
use std::cell::RefCell;
use std::io::Cursor;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The media socket address the fuzzed peer connections advertise.
const ADVERTISED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);
/// Header extension ids the fuzzed streams are bound with (Chrome's usual ones).
const AUDIO_LEVEL_ID: u8 = 1;
const TRANSPORT_CC_ID: u8 = 3;

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A client's SDP offer (`publish_offer`, a WHIP or WHEP body) as the engine reads it before
/// any negotiation: [`parse_offer`] and the stack's `RTCSessionDescription::offer` parse.
pub fn sdp_offer(data: &[u8]) {
    let offer = text(data);
    if parse_offer(&offer).is_ok() {
        let _ = RTCSessionDescription::offer(offer);
    }
}

/// A client's SDP offer through negotiation, once [`parse_offer`] let it through: what `publish`
/// and `subscribe_answering` do with it — a fresh peer connection of each role (the subscriber
/// one with an audio and a video track to send) takes it as the remote description and answers.
/// The node's answer must parse. (Separate from [`sdp_offer`]: each input costs milliseconds.)
pub fn sdp_negotiation(data: &[u8]) {
    let offer = text(data);
    if parse_offer(&offer).is_err() {
        return;
    }
    for role in [PeerRole::Publisher, PeerRole::Subscriber] {
        let now = Instant::now();
        let Ok(description) = RTCSessionDescription::offer(offer.clone()) else {
            return;
        };
        let mut pc = new_peer(ADVERTISED, role, now)
            .expect("a peer connection builds")
            .pc;
        if role == PeerRole::Subscriber {
            add_outbound_tracks(&mut pc);
        }
        if pc.set_remote_description(now, description).is_err() {
            continue;
        }
        let Ok(answer) = pc.create_answer(None) else {
            continue;
        };
        if pc.set_local_description(now, answer).is_err() {
            continue;
        }
        // What `publish` reads next: the codecs negotiated on each receiver.
        let transceivers: Vec<_> = pc.get_transceivers().collect();
        for t in transceivers {
            let receiver = pc.rtp_transceiver(t).and_then(|tr| tr.receiver());
            if let Some(mut receiver) = receiver.and_then(|r| pc.rtp_receiver(r)) {
                let _ = receiver.get_parameters();
            }
        }
        if let Some(answer) = pc.local_description() {
            SessionDescription::unmarshal(&mut Cursor::new(answer.sdp.as_bytes()))
                .expect("the node's answer parses");
        }
    }
}

/// One audio and one video (with RTX) sending track, as `add_outbound` adds a subscription.
fn add_outbound_tracks(pc: &mut RTCPeerConnection) {
    let tracks = [
        (RtpCodecKind::Audio, "audio/opus", 48_000, 2, 0x5001, None),
        (
            RtpCodecKind::Video,
            "video/VP8",
            90_000,
            0,
            0x5002,
            Some(0x5003),
        ),
    ];
    for (kind, mime, clock_rate, channels, ssrc, rtx) in tracks {
        let track = MediaStreamTrack::new(
            "participant".into(),
            format!("track-{ssrc:x}"),
            "Camera".into(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx: rtx.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                    ..Default::default()
                },
                active: true,
                codec: RTCRtpCodec {
                    mime_type: mime.into(),
                    clock_rate,
                    channels,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                ..Default::default()
            }],
        );
        pc.add_track(track).expect("a track is added");
    }
}

/// A subscriber session waiting for the client's answer to its offer.
struct AwaitingAnswer {
    pc: RTCPeerConnection,
    offer: String,
}

fn awaiting_answer() -> AwaitingAnswer {
    let now = Instant::now();
    let mut pc = new_peer(ADVERTISED, PeerRole::Subscriber, now)
        .expect("a peer connection builds")
        .pc;
    add_outbound_tracks(&mut pc);
    let offer = pc.create_offer(None).expect("an offer is made");
    pc.set_local_description(now, offer)
        .expect("the offer is applied");
    let offer = pc.local_description().expect("an offer is pending").sdp;
    AwaitingAnswer { pc, offer }
}

thread_local! {
    /// Reused while answers are refused before reaching it (most inputs): building one costs more
    /// than the check.
    static AWAITING: RefCell<Option<AwaitingAnswer>> = const { RefCell::new(None) };
}

/// A client's `subscribe_answer` to the node's offer (audio + video): [`check_answer`], then, if
/// it passes, `set_remote_description` as `subscribe_answer` does.
pub fn sdp_answer(data: &[u8]) {
    let answer = text(data);
    AWAITING.with_borrow_mut(|slot| {
        let session = slot.get_or_insert_with(awaiting_answer);
        if check_answer(&session.offer, &answer).is_err() {
            return;
        }
        let Some(mut session) = slot.take() else {
            return;
        };
        if let Ok(description) = RTCSessionDescription::answer(answer) {
            let _ = session
                .pc
                .set_remote_description(Instant::now(), description);
        }
    });
}

fn tagged(now: Instant, packet: Packet) -> TaggedPacket {
    TransportMessage {
        now,
        transport: TransportContext::default(),
        message: AttributedPacket::new(packet),
    }
}

fn stream(ssrc: u32, payload_type: u8) -> StreamInfo {
    StreamInfo {
        ssrc,
        payload_type,
        mime_type: "video/VP8".into(),
        clock_rate: 90_000,
        rtp_header_extensions: vec![
            RTPHeaderExtension {
                uri: AUDIO_LEVEL_URI.into(),
                id: AUDIO_LEVEL_ID.into(),
            },
            RTPHeaderExtension {
                uri: TRANSPORT_CC_URI.into(),
                id: TRANSPORT_CC_ID.into(),
            },
        ],
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "transport-cc".into(),
                parameter: String::new(),
            },
        ],
        ..Default::default()
    }
}

/// Runs the chain until it has nothing more to say, returning what reached the application.
fn drain<I: Interceptor>(chain: &mut I, now: Instant) -> Vec<TaggedPacket> {
    let _ = chain.handle_timeout(now);
    while chain.poll_write().is_some() {}
    std::iter::from_fn(|| chain.poll_read()).collect()
}

/// An RTP packet from a publisher (after SRTP; also the body of a relay datagram): the stack's
/// `Packet::unmarshal`, the publisher session's interceptors (transport-cc receiver, NACK
/// generator, receiver reports), the engine's audio-level read, then the packet path.
pub fn rtp_packet(data: &[u8]) {
    let mut raw = data;
    let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut raw) else {
        return;
    };
    // The engine reads the audio level at the id it negotiated: try every id a packet can name.
    for id in packet.header.get_extension_ids() {
        if let Some(mut ext) = packet.header.get_extension(id) {
            let _ = AudioLevelExtension::unmarshal(&mut ext);
        }
    }
    let mut media = MediaEngine::default();
    let registry = configure_twcc_receiver_only(Registry::new(), &mut media)
        .expect("transport-cc registers")
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
    let mut chain = registry.build();
    chain.bind_remote_stream(&stream(packet.header.ssrc, packet.header.payload_type));
    let now = Instant::now();
    let _ = chain.handle_read(tagged(now, Packet::Rtp(packet.clone())));
    // A later packet of the same stream makes a gap for the NACK generator.
    let mut later = packet.clone();
    later.header.sequence_number = later.header.sequence_number.wrapping_add(5);
    let _ = chain.handle_read(tagged(now, Packet::Rtp(later)));
    drain(&mut chain, now);
    drain(&mut chain, now + Duration::from_secs(2));
    kaskade_mesh::fuzzing::forward_parsed(&packet);
}

/// A compound RTCP packet from a subscriber (after SRTCP): the stack's `rtcp::packet::unmarshal`,
/// the subscriber session's interceptors (sender reports, transport-cc and congestion control,
/// pacer, the feedback filter) after a few packets went out, then what the engine does with the
/// PLI, FIR and NACKs that reach it.
pub fn rtcp_compound(data: &[u8]) {
    let mut raw = data;
    let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut raw) else {
        return;
    };
    let _ = is_forwarder_feedback(&packets);
    for p in &packets {
        let _ = p.destination_ssrc();
    }
    let (registry, estimate) = with_congestion_control(
        Registry::new().with(Slot::SenderReport, SenderReportBuilder::new().build()),
    );
    let feedback = RtcpToApplication::forwarder_feedback().with_estimate(estimate.clone());
    let mut chain = registry.with(Slot::from(FEEDBACK_SLOT), feedback).build();
    // The node's sending stream (SSRC 0x5002, as in the corpus), with a few packets sent.
    chain.bind_local_stream(&stream(0x5002, 96));
    let start = Instant::now();
    for seq in 0..16u16 {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc: 0x5002,
                ..Default::default()
            },
            payload: vec![0x90; 200].into(),
        };
        let at = start + Duration::from_millis(u64::from(seq) * 5);
        let _ = chain.handle_write(tagged(at, Packet::Rtp(packet)));
        drain(&mut chain, at);
    }
    let now = start + Duration::from_millis(100);
    let _ = chain.handle_read(tagged(now, Packet::Rtcp(packets)));
    let mut delivered = drain(&mut chain, now);
    delivered.extend(drain(&mut chain, now + Duration::from_secs(1)));
    let _ = estimate.get();
    let _ = estimate.counts();
    // The engine's reaction to what the feedback filter let through.
    let (mut keyframe_requests, mut lost) = (0, Vec::new());
    for msg in &delivered {
        if !msg.message.has(&Attribute::DeliverToApplication) {
            continue;
        }
        let Packet::Rtcp(packets) = &msg.message.packet else {
            continue;
        };
        for p in packets {
            let any = p.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                keyframe_requests += 1;
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                lost.extend(nack.nacks.iter().flat_map(|pair| pair.packet_list()));
            }
        }
    }
    kaskade_mesh::fuzzing::subscriber_feedback(keyframe_requests, &lost);
}

/// A datagram on the shared media socket from an address no session knows yet: the engine
/// classifies it (RFC 7983) and, for STUN, reads the ICE username to find the session.
pub fn media_datagram(data: &[u8]) {
    if classify(data) == DatagramClass::Stun {
        let _ = stun_local_ufrag(data);
    }
}

/// The offer a fuzzed `subscribe_answer` answers (for writing seed answers that match it).
pub fn subscriber_offer() -> String {
    awaiting_answer().offer
}
