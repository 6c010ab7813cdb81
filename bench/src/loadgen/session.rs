//! `loadgen::session`: one load-generator WebRTC session on the sans-I/O `rtc` core — no sockets,
//! no clock; the caller passes datagrams in, takes datagrams out and says what time it is.
//!
//! Owns [`Session`] and its roles:
//!
//! - **publisher** ([`PublisherSpec`]): sendonly Opus and/or VP8 (one layer, or simulcast with
//!   RIDs, the `mid`/`rid` header extensions on every packet as browsers send them); media starts
//!   when DTLS is up and comes from [`synthetic`](super::synthetic) sources, paced; a PLI or FIR
//!   makes the addressed layer's next frame a keyframe; NACKs are ignored (no retransmission);
//! - **subscriber**: recvonly audio + video; every RTP payload goes to the event loop's
//!   [`Recorder`] with its arrival time; no NACK, no PLI (the SFU asks for keyframes itself).
//!
//! The publisher sends RTCP sender reports, a subscriber receiver reports (`rtc`'s report
//! interceptors), and nothing else; the publisher's chain also passes PLI/FIR up
//! ([`keyframe_requests::to_application`]). The
//! session offers (WHIP/WHEP) or answers (SFUs that offer), with one host candidate: the UDP
//! socket the caller bound for it.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::interceptor::{ReceiverReportBuilder, Registry, SenderReportBuilder, Slot};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::error::LoadgenError;
use super::keyframe_requests;
use super::measure::Recorder;
use super::synthetic::{AudioSource, MediaClock, MediaPacket, VideoConfig, VideoSource};
use kaskade_node::edge::peer_factory::add_host_candidate;

/// Payload type offered for Opus.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Payload type offered for VP8.
pub const VP8_PAYLOAD_TYPE: u8 = 96;
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// What a publisher sends.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// Opus bitrate (sets the payload size); `None`: no audio track.
    pub audio_bps: Option<u32>,
    /// `None`: no video track.
    pub video: Option<VideoConfig>,
    /// Stream id of the audio track in the markers; video layer `i` is `first_stream + 1 + i`.
    pub first_stream: u32,
}

/// The session's role.
#[derive(Debug, Clone)]
pub enum Role {
    Publisher(PublisherSpec),
    Subscriber,
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Built; no connection yet.
    New,
    /// Offer/answer done, ICE/DTLS in progress.
    Connecting,
    /// DTLS up: media flows.
    Connected,
    /// Failed or closed, with the reason.
    Ended(String),
}

/// Per-session counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionCounters {
    pub datagrams_in: u64,
    pub refused_in: u64,
    pub rtp_in: u64,
    pub rtcp_in: u64,
    pub rtp_out: u64,
    pub keyframe_requests: u64,
    pub write_errors: u64,
}

struct AudioOut {
    source: AudioSource,
    sender: RTCRtpSenderId,
    ssrc: u32,
}

struct VideoOut {
    source: VideoSource,
    sender: RTCRtpSenderId,
    /// One per layer.
    ssrcs: Vec<u32>,
    rids: Vec<Option<String>>,
    /// (mid extension id, mid) and rid extension id, once negotiated (simulcast only).
    mid_ext: Option<(u8, Bytes)>,
    rid_ext: Option<u8>,
}

struct Publishing {
    spec: PublisherSpec,
    audio: Option<AudioOut>,
    video: Option<VideoOut>,
    /// Filled by the sources each turn, drained into the stack.
    scratch: Vec<MediaPacket>,
}

/// One WebRTC session (see the module doc).
pub struct Session {
    id: u64,
    pc: RTCPeerConnection,
    local: SocketAddr,
    clock: MediaClock,
    state: SessionState,
    publishing: Option<Publishing>,
    pub counters: SessionCounters,
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

fn vp8(feedback: bool) -> RTCRtpCodec {
    let rtcp_feedback = if feedback {
        [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
            .into_iter()
            .map(|(typ, parameter)| RTCPFeedback {
                typ: typ.into(),
                parameter: parameter.into(),
            })
            .collect()
    } else {
        vec![]
    };
    RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback,
    }
}

impl Session {
    /// A session whose only ICE candidate is `local` (the UDP socket the caller bound for it).
    pub fn new(
        id: u64,
        role: Role,
        local: SocketAddr,
        clock: MediaClock,
        now: Instant,
    ) -> Result<Self, LoadgenError> {
        let publisher = matches!(role, Role::Publisher(_));
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )?;
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8(publisher),
                payload_type: VP8_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )?;
        let simulcast = match &role {
            Role::Publisher(spec) => spec.video.as_ref().is_some_and(|v| v.layers.len() > 1),
            Role::Subscriber => false,
        };
        if simulcast {
            configure_simulcast_extension_headers(&mut media)?;
        }
        // One report interceptor per role (each stage of the chain costs on every packet):
        // sender reports for the publisher, receiver reports for a subscriber.
        let registry = if publisher {
            Registry::new()
                .with(Slot::SenderReport, SenderReportBuilder::new().build())
                .with(
                    Slot::from(keyframe_requests::SLOT),
                    keyframe_requests::to_application(),
                )
        } else {
            Registry::new().with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
        };
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .build(now)?;

        let publishing = match role {
            Role::Publisher(spec) => Some(Self::add_tracks(&mut pc, spec, clock, now)?),
            // Its recvonly transceivers come with its offer: an answering subscriber takes the
            // SFU's m-lines instead.
            Role::Subscriber => None,
        };
        add_host_candidate(&mut pc, local)?;
        // End of candidates: the SDP is complete, as WHIP/WHEP want it.
        pc.add_local_candidate(RTCIceCandidateInit::default())?;
        Ok(Self {
            id,
            pc,
            local,
            clock,
            state: SessionState::New,
            publishing,
            counters: SessionCounters::default(),
        })
    }

    fn add_tracks(
        pc: &mut RTCPeerConnection,
        spec: PublisherSpec,
        clock: MediaClock,
        now: Instant,
    ) -> Result<Publishing, LoadgenError> {
        let stream_id = format!("kaskade-loadgen-{}", spec.first_stream);
        let audio = match spec.audio_bps {
            Some(bps) => {
                let ssrc = rand::random::<u32>();
                let track = rtc::media_stream::MediaStreamTrack::new(
                    stream_id.clone(),
                    format!("{stream_id}-audio"),
                    "audio".into(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        active: true,
                        codec: opus(),
                        ..Default::default()
                    }],
                );
                let sender = add_sendonly(pc, track)?;
                Some(AudioOut {
                    source: AudioSource::new(clock, spec.first_stream, bps, now),
                    sender,
                    ssrc,
                })
            }
            None => None,
        };
        let video = match &spec.video {
            Some(config) => {
                let ssrcs: Vec<u32> = config.layers.iter().map(|_| rand::random()).collect();
                let rids: Vec<Option<String>> =
                    config.layers.iter().map(|l| l.rid.clone()).collect();
                let encodings = config
                    .layers
                    .iter()
                    .zip(&ssrcs)
                    .map(|(layer, ssrc)| RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            rid: layer.rid.clone().unwrap_or_default(),
                            ssrc: Some(*ssrc),
                            ..Default::default()
                        },
                        active: true,
                        codec: vp8(true),
                        max_bitrate: layer.bitrate_bps,
                        ..Default::default()
                    })
                    .collect();
                let track = rtc::media_stream::MediaStreamTrack::new(
                    stream_id.clone(),
                    format!("{stream_id}-video"),
                    "video".into(),
                    RtpCodecKind::Video,
                    encodings,
                );
                let sender = add_sendonly(pc, track)?;
                Some(VideoOut {
                    source: VideoSource::new(clock, spec.first_stream + 1, config, now),
                    sender,
                    ssrcs,
                    rids,
                    mid_ext: None,
                    rid_ext: None,
                })
            }
            None => None,
        };
        Ok(Publishing {
            spec,
            audio,
            video,
            scratch: Vec::new(),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn state(&self) -> &SessionState {
        &self.state
    }

    pub fn is_publisher(&self) -> bool {
        self.publishing.is_some()
    }

    /// Creates and applies the local offer; returns its SDP.
    pub fn create_offer(&mut self, now: Instant) -> Result<String, LoadgenError> {
        if self.publishing.is_none() && self.pc.get_transceivers().next().is_none() {
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                self.pc.add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )?;
            }
        }
        let offer = self.pc.create_offer(None)?;
        self.pc.set_local_description(now, offer)?;
        self.local_sdp()
    }

    /// Applies the SFU's answer to our offer.
    pub fn apply_answer(&mut self, sdp: String, now: Instant) -> Result<(), LoadgenError> {
        let answer = RTCSessionDescription::answer(sdp)?;
        self.pc.set_remote_description(now, answer)?;
        self.state = SessionState::Connecting;
        Ok(())
    }

    /// Answers an offer the SFU made; returns the answer's SDP.
    pub fn answer_offer(&mut self, sdp: String, now: Instant) -> Result<String, LoadgenError> {
        let offer = RTCSessionDescription::offer(sdp)?;
        self.pc.set_remote_description(now, offer)?;
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        self.state = SessionState::Connecting;
        self.local_sdp()
    }

    fn local_sdp(&self) -> Result<String, LoadgenError> {
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| LoadgenError::BadState {
                id: self.id,
                reason: "no local description".into(),
            })
    }

    /// One datagram from `from`, received at `now`. Media it carries goes to `recorder`.
    pub fn handle_datagram(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        now: Instant,
        recorder: &mut Recorder,
    ) {
        self.counters.datagrams_in += 1;
        let input = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if self.pc.handle_read(input).is_err() {
            self.counters.refused_in += 1;
        }
        self.drain(now, recorder);
    }

    /// Timers due at `now`: the stack's own, and the publisher's media.
    pub fn handle_timeout(&mut self, now: Instant, recorder: &mut Recorder) {
        if self.pc.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.pc.handle_timeout(now);
        }
        self.send_media(now);
        self.drain(now, recorder);
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let stack = self.pc.poll_timeout();
        let media = match (&self.publishing, &self.state) {
            (Some(p), SessionState::Connected) => p.next_due(),
            _ => None,
        };
        match (stack, media) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send: (bytes, destination).
    pub fn poll_transmit(&mut self) -> Option<(BytesMut, SocketAddr)> {
        self.pc
            .poll_write()
            .map(|out| (out.message, out.transport.peer_addr))
    }

    /// Closes the connection (its goodbye datagrams still come out of
    /// [`poll_transmit`](Self::poll_transmit)).
    pub fn close(&mut self) {
        let _ = self.pc.close();
        if !matches!(self.state, SessionState::Ended(_)) {
            self.state = SessionState::Ended("closed".into());
        }
    }

    fn drain(&mut self, now: Instant, recorder: &mut Recorder) {
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if self.state != SessionState::Connected => {
                        self.state = SessionState::Connected;
                        if let Some(p) = &mut self.publishing {
                            p.start(self.clock, now);
                        }
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.state = SessionState::Ended(format!("connection {state}"));
                    }
                    _ => {}
                }
            }
        }
        while let Some(TaggedRTCMessage {
            now: arrival,
            message,
        }) = self.pc.poll_read()
        {
            match message {
                RTCMessage::RtpPacket(_, packet) => {
                    self.counters.rtp_in += 1;
                    recorder.on_payload(self.id, &packet.payload, self.clock.ns(arrival));
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    self.counters.rtcp_in += 1;
                    let Some(p) = &mut self.publishing else {
                        continue;
                    };
                    for packet in &packets {
                        let any = packet.as_any();
                        let ssrcs: Vec<u32> =
                            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                vec![pli.media_ssrc]
                            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                fir.fir.iter().map(|e| e.ssrc).collect()
                            } else {
                                continue;
                            };
                        for ssrc in ssrcs {
                            if p.request_keyframe(ssrc) {
                                self.counters.keyframe_requests += 1;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn send_media(&mut self, now: Instant) {
        if self.state != SessionState::Connected {
            return;
        }
        let Some(p) = &mut self.publishing else {
            return;
        };
        if let Some(v) = &mut p.video
            && v.rids.iter().any(Option::is_some)
            && v.rid_ext.is_none()
        {
            v.learn_extensions(&mut self.pc);
        }
        if let Some(a) = &mut p.audio {
            a.source.poll(now, &mut p.scratch);
            for m in p.scratch.drain(..) {
                let packet = rtp_packet(m, OPUS_PAYLOAD_TYPE, a.ssrc, None);
                match self
                    .pc
                    .rtp_sender(a.sender)
                    .map(|mut s| s.write_rtp(now, packet))
                {
                    Some(Ok(())) => self.counters.rtp_out += 1,
                    _ => self.counters.write_errors += 1,
                }
            }
        }
        if let Some(v) = &mut p.video {
            v.source.poll(now, &mut p.scratch);
            for m in p.scratch.drain(..) {
                let layer = m.layer;
                let ext = v.extensions(layer);
                let packet = rtp_packet(m, VP8_PAYLOAD_TYPE, v.ssrcs[layer], ext);
                match self
                    .pc
                    .rtp_sender(v.sender)
                    .map(|mut s| s.write_rtp(now, packet))
                {
                    Some(Ok(())) => self.counters.rtp_out += 1,
                    _ => self.counters.write_errors += 1,
                }
            }
        }
    }
}

impl Publishing {
    /// Sources restart at `now` (DTLS just came up): video opens with a keyframe.
    fn start(&mut self, clock: MediaClock, now: Instant) {
        if let (Some(a), Some(bps)) = (&mut self.audio, self.spec.audio_bps) {
            a.source = AudioSource::new(clock, self.spec.first_stream, bps, now);
        }
        if let (Some(v), Some(config)) = (&mut self.video, &self.spec.video) {
            v.source = VideoSource::new(clock, self.spec.first_stream + 1, config, now);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let a = self.audio.as_ref().map(|a| a.source.next_due());
        let v = self.video.as_ref().map(|v| v.source.next_due());
        match (a, v) {
            (Some(a), Some(v)) => Some(a.min(v)),
            (a, v) => a.or(v),
        }
    }

    /// A PLI/FIR for `ssrc`: true if it names one of our video layers.
    fn request_keyframe(&mut self, ssrc: u32) -> bool {
        let Some(v) = &mut self.video else {
            return false;
        };
        match v.ssrcs.iter().position(|s| *s == ssrc) {
            Some(layer) => {
                v.source.request_keyframe(Some(layer));
                true
            }
            None => false,
        }
    }
}

impl VideoOut {
    /// Reads the negotiated `mid` and `rid` extension ids and the transceiver's mid.
    fn learn_extensions(&mut self, pc: &mut RTCPeerConnection) {
        let Some(mut sender) = pc.rtp_sender(self.sender) else {
            return;
        };
        let params = sender.get_parameters();
        let id_of = |uri: &str| {
            params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .map(|e| e.id as u8)
        };
        let (mid_id, rid_id) = (id_of(MID_URI), id_of(RID_URI));
        let transceivers: Vec<_> = pc.get_transceivers().collect();
        let mid = transceivers.into_iter().find_map(|t| {
            let tr = pc.rtp_transceiver(t)?;
            (tr.sender() == Some(self.sender))
                .then(|| tr.mid().clone())
                .flatten()
        });
        self.mid_ext = mid_id.zip(mid).map(|(id, mid)| (id, Bytes::from(mid)));
        self.rid_ext = rid_id;
    }

    /// The header extensions of a packet of `layer`: mid and rid for simulcast, none otherwise.
    fn extensions(&self, layer: usize) -> Option<Vec<(u8, Bytes)>> {
        let rid = self.rids.get(layer)?.as_ref()?;
        let mut ext = Vec::with_capacity(2);
        if let Some((id, mid)) = &self.mid_ext {
            ext.push((*id, mid.clone()));
        }
        if let Some(id) = self.rid_ext {
            ext.push((id, Bytes::copy_from_slice(rid.as_bytes())));
        }
        Some(ext)
    }
}

/// Adds `track` on a new sendonly transceiver (WHIP publishers only send).
fn add_sendonly(
    pc: &mut RTCPeerConnection,
    track: rtc::media_stream::MediaStreamTrack,
) -> Result<RTCRtpSenderId, LoadgenError> {
    let transceiver = pc.add_transceiver_from_track(
        track,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            ..Default::default()
        }),
    )?;
    pc.rtp_transceiver(transceiver)
        .and_then(|t| t.sender())
        .ok_or_else(|| LoadgenError::BadState {
            id: 0,
            reason: "a sendonly transceiver without a sender".into(),
        })
}

fn rtp_packet(
    m: MediaPacket,
    payload_type: u8,
    ssrc: u32,
    ext: Option<Vec<(u8, Bytes)>>,
) -> rtp::Packet {
    let mut header = rtp::Header {
        version: 2,
        marker: m.marker,
        payload_type,
        sequence_number: m.sequence,
        timestamp: m.timestamp,
        ssrc,
        ..Default::default()
    };
    if let Some(ext) = ext.filter(|e| !e.is_empty()) {
        header.extension = true;
        header.extension_profile = 0xBEDE;
        for (id, value) in ext {
            let _ = header.set_extension(id, value);
        }
    }
    rtp::Packet {
        header,
        payload: Bytes::from(m.payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::synthetic::VideoLayerSpec;
    use std::time::Duration;

    /// Runs two sessions against each other in memory on a simulated clock until `done`, or
    /// fails after `limit` of simulated time. Datagrams go straight from one to the other.
    fn run_pair(
        a: &mut Session,
        b: &mut Session,
        recorder: &mut Recorder,
        start: Instant,
        limit: Duration,
        mut done: impl FnMut(&Session, &Session, &Recorder) -> bool,
    ) -> Instant {
        let mut now = start;
        while now < start + limit {
            // Shuttle until quiet.
            loop {
                let mut moved = false;
                while let Some((data, to)) = a.poll_transmit() {
                    assert_eq!(to, b.local_addr());
                    b.handle_datagram(&data, a.local_addr(), now, recorder);
                    moved = true;
                }
                while let Some((data, to)) = b.poll_transmit() {
                    assert_eq!(to, a.local_addr());
                    a.handle_datagram(&data, b.local_addr(), now, recorder);
                    moved = true;
                }
                if !moved {
                    break;
                }
            }
            if done(a, b, recorder) {
                return now;
            }
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_millis(10));
            now = next.max(now + Duration::from_micros(100));
            a.handle_timeout(now, recorder);
            b.handle_timeout(now, recorder);
        }
        panic!(
            "not done within {limit:?}: a {:?} {:?}, b {:?} {:?}",
            a.state(),
            a.counters,
            b.state(),
            b.counters
        );
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_publisher_and_an_answering_subscriber_connect_and_media_is_measured() {
        let start = Instant::now();
        let clock = MediaClock::new(start);
        let spec = PublisherSpec {
            audio_bps: Some(48_000),
            video: Some(VideoConfig::single(1_000_000)),
            first_stream: 100,
        };
        let mut publisher =
            Session::new(1, Role::Publisher(spec), addr(40_001), clock, start).unwrap();
        let mut subscriber = Session::new(2, Role::Subscriber, addr(40_002), clock, start).unwrap();
        let offer = publisher.create_offer(start).unwrap();
        assert!(
            offer.contains("a=candidate:") && offer.contains(" 40001 typ host"),
            "{offer}"
        );
        assert!(
            offer.contains("a=sendonly")
                && offer.contains("VP8/90000")
                && offer.contains("opus/48000"),
            "{offer}"
        );
        assert!(
            offer.contains("a=rtcp-fb:96 nack pli"),
            "the publisher takes PLIs: {offer}"
        );
        let answer = subscriber.answer_offer(offer, start).unwrap();
        assert!(answer.contains("a=recvonly"), "{answer}");
        publisher.apply_answer(answer, start).unwrap();

        let mut recorder = Recorder::default();
        let connected_at = run_pair(
            &mut publisher,
            &mut subscriber,
            &mut recorder,
            start,
            Duration::from_secs(10),
            |a, b, _| {
                a.state() == &SessionState::Connected && b.state() == &SessionState::Connected
            },
        );
        // Two seconds of media.
        run_pair(
            &mut publisher,
            &mut subscriber,
            &mut recorder,
            connected_at,
            Duration::from_secs(3),
            |_, _, r| {
                r.report()
                    .streams
                    .get(&100)
                    .is_some_and(|s| s.received >= 100)
            },
        );
        // A PLI from the subscriber reaches the publisher and makes the next frame a keyframe.
        let video_ssrc = publisher
            .publishing
            .as_ref()
            .unwrap()
            .video
            .as_ref()
            .unwrap()
            .ssrcs[0];
        let receiver = subscriber
            .pc
            .get_receivers()
            .nth(1)
            .expect("video receiver");
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: video_ssrc,
        };
        let now = connected_at + Duration::from_secs(3);
        subscriber
            .pc
            .rtp_receiver(receiver)
            .unwrap()
            .write_rtcp(now, vec![Box::new(pli)])
            .unwrap();
        run_pair(
            &mut publisher,
            &mut subscriber,
            &mut recorder,
            now,
            Duration::from_secs(1),
            |a, _, _| a.counters.keyframe_requests == 1,
        );
        let report = recorder.report();
        let (audio, video) = (&report.streams[&100], &report.streams[&101]);
        assert_eq!((audio.lost, video.lost), (0, 0));
        assert!(video.received >= 150, "{}", video.received);
        assert_eq!(recorder.unmarked, 0);
        // The in-memory path has no delay beyond the clock steps.
        assert!(video.latency.max() < 2_000, "{}", video.latency.max());
        assert_eq!(subscriber.counters.refused_in, 0);
        assert_eq!(publisher.counters.write_errors, 0);
    }

    #[test]
    fn a_subscriber_offers_recvonly_audio_and_video_and_simulcast_offers_rids() {
        let now = Instant::now();
        let clock = MediaClock::new(now);
        let mut subscriber = Session::new(1, Role::Subscriber, addr(40_003), clock, now).unwrap();
        let offer = subscriber.create_offer(now).unwrap();
        assert_eq!(offer.matches("a=recvonly").count(), 2, "{offer}");
        assert!(
            offer.contains("a=end-of-candidates"),
            "complete offer: {offer}"
        );
        let spec = PublisherSpec {
            audio_bps: None,
            video: Some(VideoConfig {
                layers: VideoLayerSpec::simulcast(150_000, 500_000, 1_500_000),
                ..VideoConfig::single(0)
            }),
            first_stream: 0,
        };
        let mut publisher =
            Session::new(2, Role::Publisher(spec), addr(40_004), clock, now).unwrap();
        let offer = publisher.create_offer(now).unwrap();
        for line in [
            "a=rid:q send",
            "a=rid:h send",
            "a=rid:f send",
            "a=simulcast:send q;h;f",
        ] {
            assert!(offer.contains(line), "{line} missing: {offer}");
        }
        assert!(offer.contains(RID_URI) && offer.contains(MID_URI));
        assert!(subscriber.apply_answer("not sdp".into(), now).is_err());
    }
}
