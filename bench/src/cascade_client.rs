//! `cascade_client`: the WebRTC side of the `cascade-hop` benchmark — a WHIP publisher that
//! writes its own numbered VP8 RTP packets and WHEP subscribers that time their arrival — plus
//! the minimal HTTP/1.1 client both use (and that reads a node's `/metrics`). Compiled as a
//! module of the `cascade-hop` binary, not of the library (see there why).
//!
//! Everything is webrtc-rs 0.21 (the async layer over the `rtc` core) on loopback only: each
//! peer connection binds one UDP socket on 127.0.0.1 (a concrete address is bound as given, so
//! the loopback host candidate is offered), has no ICE servers and no mDNS. Offers are sent
//! complete (after gathering), as WHIP/WHEP expect.
//!
//! Each benchmark packet's payload is a 1-byte VP8 payload descriptor with S = 1 and PID = 0, a
//! VP8 payload header with P = 0 (so every packet is a keyframe start and a node's layer
//! selector forwards all of them), then an 8-byte big-endian packet id at [`ID_OFFSET`], then
//! filler up to the configured size.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};

/// Payload type the benchmark offers for VP8 (the only codec it registers).
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// VP8 payload descriptor (S = 1, PID = 0) and a payload header with P = 0 (keyframe).
pub const VP8_KEYFRAME_PREFIX: [u8; 5] = [0x10, 0x00, 0x00, 0x00, 0x00];
/// Where the 8-byte packet id starts in the RTP payload.
pub const ID_OFFSET: usize = VP8_KEYFRAME_PREFIX.len();
/// Smallest payload that carries the prefix and the id.
pub const MIN_PAYLOAD: usize = ID_OFFSET + 8;
/// How long ICE + DTLS may take before a session counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of one HTTP exchange with a node.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A node's HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 exchange (`Connection: close`) with `addr`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    })
    .await
    .map_err(|_| anyhow!("{method} http://{addr}{path}: no answer within {HTTP_TIMEOUT:?}"))?
    .with_context(|| format!("{method} http://{addr}{path}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("truncated HTTP response ({} bytes)", raw.len()))?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&data[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Sum of the samples of `name` (or `name_total`) whose labels include every `labels` pair, in
/// Prometheus text format; `None` when there is no such sample.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name && metric.strip_suffix("_total") != Some(name) {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")));
        if matches && let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Peer connections
// ---------------------------------------------------------------------------------------------

/// Connection events a session waits on, and the remote tracks it receives.
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

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// A peer connection on 127.0.0.1 with VP8 only, the default interceptors, no ICE servers and no
/// mDNS; returns it with its gathering/state watchers and the remote-track queue.
async fn new_peer_connection() -> anyhow::Result<(
    Arc<dyn PeerConnection>,
    watch::Receiver<bool>,
    watch::Receiver<RTCPeerConnectionState>,
    mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
)> {
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
        .with_include_loopback_candidate(true)
        .build();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(vec![])
        .build();
    let (gathered_tx, gathered_rx) = watch::channel(false);
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (tracks_tx, tracks_rx) = mpsc::unbounded_channel();
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
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    Ok((Arc::new(pc), gathered_rx, state_rx, tracks_rx))
}

/// Offers, POSTs the complete offer to `path` on `node`, applies the 201 answer and waits until
/// the connection is up. Returns the session's `Location`.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    mut gathered: watch::Receiver<bool>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    node: SocketAddr,
    path: &str,
) -> anyhow::Result<String> {
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(CONNECT_TIMEOUT, gathered.wait_for(|done| *done))
        .await
        .map_err(|_| anyhow!("ICE gathering did not complete"))??;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))?;
    anyhow::ensure!(
        local.sdp.contains("a=candidate:"),
        "the offer carries no ICE candidate:\n{}",
        local.sdp
    );
    let resp = http_request(
        node,
        "POST",
        path,
        Some("application/sdp"),
        local.sdp.as_bytes(),
    )
    .await?;
    if resp.status != 201 {
        bail!(
            "POST {path}: status {}: {}",
            resp.status,
            resp.text().trim()
        );
    }
    let location = resp.header("location").unwrap_or_default().to_owned();
    let answer = RTCSessionDescription::answer(resp.text())?;
    pc.set_remote_description(answer).await?;
    let up = tokio::time::timeout(
        CONNECT_TIMEOUT,
        state.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        }),
    )
    .await
    .map_err(|_| anyhow!("{path}: not connected within {CONNECT_TIMEOUT:?}"))??;
    if *up != RTCPeerConnectionState::Connected {
        bail!("{path}: connection {}", *up);
    }
    Ok(location)
}

/// `DELETE` on a WHIP/WHEP session's `Location`; errors are ignored (the node may be gone).
async fn end_session(node: SocketAddr, location: &str) {
    if location.starts_with('/') {
        let _ = http_request(node, "DELETE", location, None, b"").await;
    }
}

/// A WHIP publisher of one VP8 track whose RTP packets the caller writes.
pub struct Publisher {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    seq: u16,
    /// `Location` of the WHIP session.
    pub location: String,
}

impl Publisher {
    /// Publishes to `POST /whip/{room}` on `node` and waits until connected.
    pub async fn connect(node: SocketAddr, room: &str) -> anyhow::Result<Self> {
        let (pc, gathered, state, _tracks) = new_peer_connection().await?;
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "kaskade-bench".to_owned(),
            "kaskade-bench-video".to_owned(),
            "kaskade-bench-video".to_owned(),
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
        pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await?;
        let location = negotiate(&pc, gathered, state, node, &format!("/whip/{room}"))
            .await
            .context("WHIP publish")?;
        Ok(Self {
            pc,
            track,
            ssrc,
            seq: rand::random(),
            location,
        })
    }

    /// Writes one packet carrying `id`, `payload_len` bytes of payload, as a one-packet
    /// keyframe at `rtp_ts`.
    pub async fn send(&mut self, id: u64, rtp_ts: u32, payload_len: usize) -> anyhow::Result<()> {
        let mut payload = vec![0u8; payload_len.max(MIN_PAYLOAD)];
        payload[..ID_OFFSET].copy_from_slice(&VP8_KEYFRAME_PREFIX);
        payload[ID_OFFSET..ID_OFFSET + 8].copy_from_slice(&id.to_be_bytes());
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
            payload: Bytes::from(payload),
        };
        self.seq = self.seq.wrapping_add(1);
        self.track.write_rtp(packet).await?;
        Ok(())
    }

    /// Ends the session: `DELETE` on its `Location` at `node`, then closes the connection.
    pub async fn close(&self, node: SocketAddr) {
        end_session(node, &self.location).await;
        let _ = self.pc.close().await;
    }
}

/// Arrivals seen by one subscriber: (packet id, receive instant), in arrival order.
pub type Arrivals = Arc<Mutex<Vec<(u64, Instant)>>>;

/// A WHEP subscriber (recvonly video) that timestamps every benchmark packet it receives.
pub struct Subscriber {
    pc: Arc<dyn PeerConnection>,
    /// Filled by the reader task.
    pub arrivals: Arrivals,
    /// `Location` of the WHEP session.
    pub location: String,
}

impl Subscriber {
    /// Watches `POST /whep/{room}` on `node`; the reader task records arrivals from the first
    /// packet on.
    pub async fn connect(node: SocketAddr, room: &str) -> anyhow::Result<Self> {
        let (pc, gathered, state, mut tracks) = new_peer_connection().await?;
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await?;
        let arrivals: Arrivals = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let sink = Arc::clone(&arrivals);
        tokio::spawn(async move {
            while let Some(track) = tracks.recv().await {
                let sink = Arc::clone(&sink);
                tokio::spawn(read_track(track, sink));
            }
        });
        let location = negotiate(&pc, gathered, state, node, &format!("/whep/{room}"))
            .await
            .with_context(|| format!("WHEP subscribe at {node}"))?;
        Ok(Self {
            pc,
            arrivals,
            location,
        })
    }

    /// Arrivals so far.
    pub fn received(&self) -> usize {
        self.arrivals.lock().expect("arrivals lock").len()
    }

    /// Ends the session: `DELETE` on its `Location` at `node`, then closes the connection.
    pub async fn close(&self, node: SocketAddr) {
        end_session(node, &self.location).await;
        let _ = self.pc.close().await;
    }
}

async fn read_track(track: Arc<dyn TrackRemote>, sink: Arrivals) {
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let at = Instant::now();
                if let Some(id) = packet_id(&packet.payload) {
                    sink.lock().expect("arrivals lock").push((id, at));
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// The benchmark id of a payload built by [`Publisher::send`]; `None` for anything else.
pub fn packet_id(payload: &[u8]) -> Option<u64> {
    if payload.len() < MIN_PAYLOAD || payload[..ID_OFFSET] != VP8_KEYFRAME_PREFIX {
        return None;
    }
    let bytes: [u8; 8] = payload[ID_OFFSET..ID_OFFSET + 8].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nLocation: /sessions/s1\r\ncontent-length: 3\r\n\r\nv=0",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.header("location")),
            (201, Some("/sessions/s1"))
        );
        assert_eq!(r.text(), "v=0");
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.text(), "abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn reads_metric_samples_by_label() {
        let text = "# HELP kaskade_relay_link_up up\n\
                    kaskade_relay_link_up{peer=\"n3\"} 1\n\
                    kaskade_relay_link_up{peer=\"n2\"} 0\n\
                    kaskade_relay_media_dropped_total{peer=\"n3\"} 4\n";
        assert_eq!(
            metric_value(text, "kaskade_relay_link_up", &[("peer", "n3")]),
            Some(1.0)
        );
        assert_eq!(
            metric_value(text, "kaskade_relay_media_dropped", &[("peer", "n3")]),
            Some(4.0)
        );
        assert_eq!(
            metric_value(text, "kaskade_relay_link_up", &[("peer", "n9")]),
            None
        );
    }

    #[test]
    fn packet_ids_round_trip_and_reject_foreign_payloads() {
        let mut payload = vec![0u8; 100];
        payload[..ID_OFFSET].copy_from_slice(&VP8_KEYFRAME_PREFIX);
        payload[ID_OFFSET..ID_OFFSET + 8].copy_from_slice(&42u64.to_be_bytes());
        assert_eq!(packet_id(&payload), Some(42));
        assert_eq!(packet_id(&payload[..MIN_PAYLOAD - 1]), None);
        payload[0] = 0x90;
        assert_eq!(packet_id(&payload), None);
    }
}
