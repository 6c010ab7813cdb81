//! `webrtc_peer`: what the benchmark's webrtc-rs 0.21 clients share, whatever server they talk
//! to (Kaskade over WHIP/WHEP in `cascade_client.rs`, Janus VideoRoom in `janus/peer.rs`): a
//! peer connection with its gathering/state/track events ([`Peer`]), a VP8 track whose RTP
//! packets the caller writes ([`Vp8Sender`]), a reader of received tracks
//! ([`spawn_track_readers`]), and the benchmark payload ([`payload`], [`packet_id`]).
//!
//! NOT a module of the `kaskade_bench` library: binaries and tests include it with
//! `#[path = ".../webrtc_peer.rs"] mod webrtc_peer;` next to the client module that uses it
//! (webrtc-rs pulls in `rkyv`, whose extra `PartialEq` impls break type inference in every crate
//! that links a library using it).
//!
//! Each peer connection binds one UDP socket on the given address (a concrete address is bound
//! as given, so its host candidate is offered), has no ICE servers and no mDNS, and completes
//! ICE gathering before its SDP is sent (WHIP/WHEP and Janus's half-trickle both expect that).
//!
//! Benchmark payload: a VP8 payload descriptor (S = 1, PID = 0) and the start of a real VP8
//! keyframe (frame tag with P = 0, start code, 320x240), so SFUs that look for keyframes take
//! every packet as one; then [`MARKER`], an 8-byte big-endian packet id, and filler bytes
//! derived from the id, so a receiver can check the payload arrived unchanged.

// Each includer uses only part of this file.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};

/// Payload type offered for VP8 (the only codec registered).
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// VP8 payload descriptor (S = 1, PID = 0), then a keyframe's frame tag (P = 0, show_frame),
/// start code and size (320x240).
pub const VP8_KEYFRAME_PREFIX: [u8; 11] = [
    0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00,
];
/// Marks a payload as ours, right after the VP8 prefix.
pub const MARKER: [u8; 4] = *b"KSKJ";
/// Where the 8-byte packet id starts in the payload.
pub const ID_OFFSET: usize = VP8_KEYFRAME_PREFIX.len() + MARKER.len();
/// Smallest payload that carries the prefix, the marker and the id.
pub const MIN_PAYLOAD: usize = ID_OFFSET + 8;
/// How long ICE gathering, or ICE + DTLS, may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The payload of packet `id`, `len` bytes (at least [`MIN_PAYLOAD`]).
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(MIN_PAYLOAD));
    p.extend_from_slice(&VP8_KEYFRAME_PREFIX);
    p.extend_from_slice(&MARKER);
    p.extend_from_slice(&id.to_be_bytes());
    let seed = id as u8;
    p.extend((0..len.saturating_sub(MIN_PAYLOAD)).map(|i| seed.wrapping_add(i as u8)));
    p
}

/// The id of a payload built by [`payload`], if it is one and arrived unchanged.
pub fn packet_id(p: &[u8]) -> Option<u64> {
    if p.len() < MIN_PAYLOAD
        || p[..VP8_KEYFRAME_PREFIX.len()] != VP8_KEYFRAME_PREFIX
        || p[VP8_KEYFRAME_PREFIX.len()..ID_OFFSET] != MARKER
    {
        return None;
    }
    let id = u64::from_be_bytes(p[ID_OFFSET..MIN_PAYLOAD].try_into().ok()?);
    let seed = id as u8;
    let intact = p[MIN_PAYLOAD..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == seed.wrapping_add(i as u8));
    intact.then_some(id)
}

/// Connection events a peer waits on, and the remote tracks it receives.
struct Events {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// A peer connection and what it reports.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// Remote tracks as they arrive (see [`spawn_track_readers`]).
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl Peer {
    /// VP8 only, default interceptors, no ICE servers, no mDNS, one UDP socket on `ip`.
    pub async fn new(ip: IpAddr) -> anyhow::Result<Self> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8_codec(),
                payload_type: VP8_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(ip.is_loopback())
            .build();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(vec![])
            .build();
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let handler = Arc::new(Events {
            gathered: gathered_tx,
            state: state_tx,
            tracks: tracks_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media_engine)
            .with_setting_engine(setting_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![format!("{ip}:0")])
            .build()
            .await?;
        Ok(Self {
            pc: Arc::new(pc),
            gathered,
            state,
            tracks,
        })
    }

    /// Adds a receive-only video transceiver (a subscriber that makes the offer).
    pub async fn add_recvonly_video(&self) -> anyhow::Result<()> {
        self.pc
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        Ok(())
    }

    /// Sets `desc` as local description and returns it complete, with its candidates.
    pub async fn complete_local(&mut self, desc: RTCSessionDescription) -> anyhow::Result<String> {
        self.pc.set_local_description(desc).await?;
        tokio::time::timeout(CONNECT_TIMEOUT, self.gathered.wait_for(|done| *done))
            .await
            .map_err(|_| anyhow!("ICE gathering did not complete"))??;
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| anyhow!("no local description"))?;
        anyhow::ensure!(
            local.sdp.contains("a=candidate:"),
            "our SDP carries no ICE candidate:\n{}",
            local.sdp
        );
        Ok(local.sdp)
    }

    /// Waits until the connection is up (ICE and DTLS).
    pub async fn wait_connected(&mut self, what: &str) -> anyhow::Result<()> {
        let state = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .map_err(|_| anyhow!("{what}: not connected within {CONNECT_TIMEOUT:?}"))??;
        if *state != RTCPeerConnectionState::Connected {
            bail!("{what}: connection {}", *state);
        }
        Ok(())
    }
}

/// A send-only VP8 track whose RTP packets the caller writes, one benchmark payload each.
pub struct Vp8Sender {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    seq: u16,
}

impl Vp8Sender {
    /// Adds the track to `peer` (send-only), named after `name`.
    pub async fn add_to(peer: &Peer, name: &str) -> anyhow::Result<Self> {
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("{name}-stream"),
            format!("{name}-video"),
            format!("{name}-video"),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: vp8_codec(),
                ..Default::default()
            }],
        )));
        peer.pc
            .add_transceiver_from_track(
                Arc::clone(&track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        Ok(Self {
            track,
            ssrc,
            seq: rand::random(),
        })
    }

    /// Writes packet `id` with `payload_len` bytes of payload, a one-packet frame at `rtp_ts`.
    pub async fn send(&mut self, id: u64, rtp_ts: u32, payload_len: usize) -> anyhow::Result<()> {
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: true,
                payload_type: VP8_PAYLOAD_TYPE,
                sequence_number: self.seq,
                timestamp: rtp_ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload(id, payload_len)),
        };
        self.seq = self.seq.wrapping_add(1);
        self.track.write_rtp(packet).await?;
        Ok(())
    }
}

/// Spawns a task that reads every remote track `peer` receives and calls `on_packet` for each
/// RTP packet (from the track's reader task, as it arrives).
pub fn spawn_track_readers<F>(peer: &mut Peer, on_packet: F)
where
    F: Fn(&rtp::Packet) + Send + Sync + 'static,
{
    let mut tracks = std::mem::replace(&mut peer.tracks, mpsc::unbounded_channel().1);
    let on_packet = Arc::new(on_packet);
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let on_packet = Arc::clone(&on_packet);
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    match event {
                        TrackRemoteEvent::OnRtpPacket(packet) => on_packet(&packet),
                        TrackRemoteEvent::OnEnded => break,
                        _ => {}
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_round_trip_and_reject_foreign_or_altered_payloads() {
        let p = payload(42, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(packet_id(&p), Some(42));
        assert_eq!(packet_id(&p[..MIN_PAYLOAD - 1]), None);
        let mut altered = p.clone();
        altered[99] ^= 1;
        assert_eq!(packet_id(&altered), None);
        let mut foreign = p;
        foreign[0] = 0x90;
        assert_eq!(packet_id(&foreign), None);
    }
}
