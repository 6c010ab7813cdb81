//! Builds the node's side of a peer connection: ICE-lite with fixed random credentials (so the
//! engine can route STUN by ufrag), one host candidate on the shared media socket, the codecs a
//! node forwards, and the interceptors its role needs. The NACK *responder* is left out on
//! purpose: retransmissions are answered from the forwarder's per-track packet cache instead of a
//! copy of every packet per subscriber.
//!
//! Every interceptor is a stage each packet of the session walks through (and is moved through),
//! so a session gets only those of its direction: a publisher's session (media in) generates
//! NACKs, transport-cc feedback and receiver reports; a subscriber's session (media out) sends
//! sender reports, passes the subscriber's NACK/PLI/FIR up to the forwarder, and estimates the
//! subscriber's bandwidth from its transport-cc feedback (`bandwidth`), paced. Both offer the
//! same SDP (codecs, feedback, header extensions) as before the split.

use super::bandwidth::{SharedEstimate, with_congestion_control};
use super::feedback_interceptor::{FEEDBACK_SLOT, RtcpToApplication};
use rand::Rng;
use rand::distr::Alphanumeric;
use rtc::interceptor::{
    NackGeneratorBuilder, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RTCPFeedback;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long without ICE traffic before a session counts as gone (client vanished).
pub const ICE_DISCONNECTED_AFTER: Duration = Duration::from_secs(10);
pub const ICE_FAILED_AFTER: Duration = Duration::from_secs(20);

/// Which way media flows in a session: it decides the interceptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The client publishes: media comes in.
    Publisher,
    /// The client subscribes: media goes out.
    Subscriber,
}

/// A fresh peer connection and the ICE ufrag it answers to.
pub struct NewPeer {
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    /// A subscriber session's bandwidth estimate (send-side, from its transport-cc feedback).
    pub estimate: Option<SharedEstimate>,
}

fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Builds a peer connection whose only candidate is `advertised` (the shared media socket).
pub fn new_peer(
    advertised: SocketAddr,
    role: PeerRole,
    now: Instant,
) -> Result<NewPeer, rtc::shared::error::Error> {
    let ufrag = random_token(16);
    let pwd = random_token(32);
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_credentials(ufrag.clone(), pwd)
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED_AFTER),
            Some(ICE_FAILED_AFTER),
            Some(Duration::from_secs(2)),
        )
        .build();

    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    media.register_feedback(
        RTCPFeedback {
            typ: "ccm".to_owned(),
            parameter: "fir".to_owned(),
        },
        RtpCodecKind::Video,
    );
    configure_simulcast_extension_headers(&mut media)?;
    // Publishers' audio levels feed the room's dominant-speaker detection.
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    // Registers transport-cc in the SDP (with its receiver-side interceptor in that registry).
    let with_twcc = configure_twcc_receiver_only(Registry::new(), &mut media)?;
    let (registry, estimate) = match role {
        PeerRole::Publisher => (
            with_twcc
                .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
                .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build()),
            None,
        ),
        PeerRole::Subscriber => {
            let (registry, estimate) = with_congestion_control(
                Registry::new().with(Slot::SenderReport, SenderReportBuilder::new().build()),
            );
            let feedback = RtcpToApplication::forwarder_feedback().with_estimate(estimate.clone());
            (
                registry.with(Slot::from(FEEDBACK_SLOT), feedback),
                Some(estimate),
            )
        }
    };

    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)?;

    add_host_candidate(&mut pc, advertised)?;
    Ok(NewPeer {
        pc,
        ufrag,
        estimate,
    })
}

/// Adds `addr` as `pc`'s UDP host candidate.
pub fn add_host_candidate(
    pc: &mut RTCPeerConnection,
    addr: SocketAddr,
) -> Result<(), rtc::shared::error::Error> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)
}
