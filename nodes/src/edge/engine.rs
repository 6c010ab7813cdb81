//! The media engine: one event loop on its own thread that owns the shared UDP socket, every peer
//! connection (sans-I/O `rtc`) and every track forwarder. A datagram is routed to its session by
//! remote address (or, for a new address, by the ICE ufrag in its STUN request); RTP that comes
//! out of a publisher's session goes through the track's forwarder straight into the subscribers'
//! sessions and onto the socket in the same turn of the loop — no task or mailbox in between.
//! Tracks published on other nodes arrive over the relay and are forwarded the same way
//! (`relay_side`).

mod allocation;
mod dynacast;
mod relay_side;

use super::bandwidth::SharedEstimate;
use super::batch_send::DatagramBatch;
use super::datagram::{DatagramClass, classify, stun_local_ufrag};
use super::offer::{check_answer, parse_offer};
use super::peer_factory::{NewPeer, PeerRole, new_peer};
use crate::metrics::{self, Metrics};
use crate::relay::bridge::{EngineRelayPorts, EngineToRelay, RelayPacketIn, RelayToEngine};
use allocation::SessionAllocation;
use bytes::BytesMut;
use kaskade_mesh::core::{AudioLevelWindow, LayerBitrateMeter, PublishedLayerGate, VideoCodec};
use kaskade_mesh::engine_api::{
    EdgeError, EdgeEvent, EngineCommand, EngineHandle, EngineStats, EventSink, PublishOutcome,
    SessionKey, SubscribeOffer, TrackDescriptor,
};
use kaskade_mesh::forwarder::{
    DownstreamSpec, Forwarded, ForwardedMedia, KeyframeRequest, RtxSpec, TrackForwarder,
};
use kaskade_proto::signal::{MediaKind, TrackSource};
use kaskade_proto::{ParticipantId, TrackId};
use relay_side::{RelayLeg, RelayState, RemoteSource};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use rtc::shared::marshal::Unmarshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How often the engine reports audio levels and re-allocates subscribers' bandwidth.
const TICK: Duration = Duration::from_millis(200);
/// Datagrams read in one turn before the loop flushes what they produced.
const READ_BATCH: usize = 64;
const MAX_DATAGRAM: usize = 2048;
/// What an RTP header adds to a payload on the wire (fixed part), for bitrate accounting.
const RTP_HEADER_BYTES: usize = 12;

/// Starts the engine on its own thread. `bind` is the media socket; `advertised` the address put in
/// ICE candidates. Returns the handle and the bound address.
pub fn spawn(
    bind: SocketAddr,
    advertised_ip: Option<std::net::IpAddr>,
    metrics: Arc<Metrics>,
    relay: Option<EngineRelayPorts>,
) -> std::io::Result<(EngineHandle, SocketAddr)> {
    let std_socket = std::net::UdpSocket::bind(bind)?;
    std_socket.set_nonblocking(true)?;
    let local = std_socket.local_addr()?;
    let advertised = SocketAddr::new(advertised_ip.unwrap_or(local.ip()), local.port());
    let (handle, rx) = EngineHandle::new();
    std::thread::Builder::new()
        .name("kaskade-media".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "media engine runtime failed to start");
                    return;
                }
            };
            runtime.block_on(async move {
                let socket = match UdpSocket::from_std(std_socket) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "media socket failed");
                        return;
                    }
                };
                let mut engine = Engine::new(socket, local, advertised, metrics);
                let (relay_commands, relay_media) = match relay {
                    Some(ports) => {
                        engine.relay_demand = Some(ports.demand);
                        (Some(ports.commands), Some(ports.media))
                    }
                    None => (None, None),
                };
                engine.run(rx, relay_commands, relay_media).await;
            });
        })?;
    Ok((handle, local))
}

struct Inbound {
    track: TrackId,
    receiver: RTCRtpReceiverId,
    /// Header-extension id of the audio level (RFC 6464), when negotiated for an audio track.
    audio_level_ext: Option<u8>,
}

struct Outbound {
    sender: RTCRtpSenderId,
    ssrc: u32,
    rtx_ssrc: Option<u32>,
    /// Registered with the track's forwarder (after negotiation settled the payload types).
    attached: bool,
    wanted_layer: u8,
}

struct Session {
    participant: ParticipantId,
    pc: RTCPeerConnection,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    events: EventSink,
    /// Publisher side: what each offered mid publishes.
    published: BTreeMap<String, TrackDescriptor>,
    inbound: HashMap<String, Inbound>,
    ssrc_layers: HashMap<u32, (TrackId, u8)>,
    /// Subscriber side.
    outbound: HashMap<TrackId, Outbound>,
    node_offers: bool,
    awaiting_answer: bool,
    offer_pending: bool,
    deadline: Option<Instant>,
    connected: bool,
    /// Subscriber side: the bandwidth estimate and what it allocates.
    estimate: Option<SharedEstimate>,
    allocation: SessionAllocation,
}

struct TrackEntry {
    desc: TrackDescriptor,
    /// The local session publishing it; `None` for a track published on another node.
    publisher: Option<SessionKey>,
    receiver: Option<RTCRtpReceiverId>,
    /// Publisher codecs as negotiated: (payload type, codec).
    codecs: Vec<(u8, RTCRtpCodec)>,
    forwarder: TrackForwarder<SessionKey>,
    /// Set for a track published on another node.
    remote: Option<RemoteSource>,
    /// Other nodes this track is sent to.
    relay_legs: Vec<RelayLeg>,
    /// A host muted it: nothing is forwarded until its publisher unmutes.
    paused: bool,
    /// Audio levels since the last report to the publisher's owner.
    audio_level: AudioLevelWindow,
    /// Bitrate of each layer as it arrives (for bandwidth allocation).
    bitrate: LayerBitrateMeter,
    /// A local simulcast track: which layers its publisher should send (dynacast).
    layer_gate: Option<PublishedLayerGate>,
}

struct Engine {
    socket: UdpSocket,
    local: SocketAddr,
    advertised: SocketAddr,
    metrics: Arc<Metrics>,
    sessions: HashMap<SessionKey, Session>,
    by_ufrag: HashMap<String, SessionKey>,
    by_addr: HashMap<SocketAddr, SessionKey>,
    tracks: HashMap<TrackId, TrackEntry>,
    next_key: SessionKey,
    /// Copies produced by forwarders this turn, and the track they belong to.
    forwarded: Vec<Forwarded<SessionKey>>,
    keyframe_requests: Vec<(TrackId, KeyframeRequest)>,
    /// Reused buffer for a forwarder's keyframe requests.
    requests_scratch: Vec<KeyframeRequest>,
    dirty: Vec<SessionKey>,
    /// Datagrams of this turn, sent together at its end.
    outbox: DatagramBatch,
    /// (subscriber, arrival) of every copy forwarded this turn, for the latency histogram.
    latency: Vec<(SessionKey, Instant)>,
    /// Sessions whose DTLS came up this turn: their subscriber legs start now.
    newly_connected: Vec<SessionKey>,
    closing: Vec<(SessionKey, String)>,
    relay: RelayState,
    relay_demand: Option<mpsc::UnboundedSender<EngineToRelay>>,
    /// When the periodic work (audio levels, bandwidth allocation) runs next.
    next_tick: Instant,
}

/// Receives from an optional channel; pends forever without one.
async fn recv_optional<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_optional_bounded<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Engine {
    fn new(
        socket: UdpSocket,
        local: SocketAddr,
        advertised: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            socket,
            local,
            advertised,
            metrics,
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            tracks: HashMap::new(),
            next_key: 1,
            forwarded: Vec::new(),
            keyframe_requests: Vec::new(),
            requests_scratch: Vec::new(),
            dirty: Vec::new(),
            outbox: DatagramBatch::default(),
            latency: Vec::new(),
            newly_connected: Vec::new(),
            closing: Vec::new(),
            relay: RelayState::default(),
            relay_demand: None,
            next_tick: Instant::now() + TICK,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<EngineCommand>,
        mut relay_commands: Option<mpsc::UnboundedReceiver<RelayToEngine>>,
        mut relay_media: Option<mpsc::Receiver<RelayPacketIn>>,
    ) {
        info!(media = %self.local, "media engine running");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(
                deadline
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1)),
            );
            tokio::select! {
                biased;
                // Relay commands first: a remote track the relay added must exist before a
                // subscription to it, which was sent later but on the other queue, is handled.
                command = recv_optional(&mut relay_commands) => {
                    match command {
                        Some(command) => self.on_relay_command(command),
                        None => relay_commands = None,
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    self.on_command(command);
                }
                packet = recv_optional_bounded(&mut relay_media) => {
                    match packet {
                        Some(packet) => {
                            self.on_relay_packet(packet);
                            // Take what else is queued in the same turn.
                            if let Some(rx) = relay_media.as_mut() {
                                for _ in 0..READ_BATCH {
                                    match rx.try_recv() {
                                        Ok(p) => self.on_relay_packet(p),
                                        Err(_) => break,
                                    }
                                }
                            }
                            self.deliver(Instant::now());
                        }
                        None => relay_media = None,
                    }
                }
                readable = self.socket.readable() => {
                    if readable.is_err() { break; }
                    for _ in 0..READ_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                let now = Instant::now();
                                self.on_datagram(&buf[..n], from, now);
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep => {}
            }
            self.on_timeouts(Instant::now());
            self.flush();
        }
        info!("media engine stopped");
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.sessions.values().filter_map(|s| s.deadline).min();
        Some(sessions.map_or(self.next_tick, |d| d.min(self.next_tick)))
    }

    /// Periodic work: each publisher's audio levels go to its owner (dominant speaker); each
    /// subscriber's layers follow its bandwidth estimate.
    fn on_tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        self.allocate_bandwidth(now);
        self.gate_published_layers(now);
        if !self.forwarded.is_empty() {
            self.deliver(now); // bandwidth probes
        }
        let mut levels: HashMap<SessionKey, Vec<(TrackId, u8)>> = HashMap::new();
        for (id, entry) in &mut self.tracks {
            if let Some(key) = entry.publisher
                && let Some(level) = entry.audio_level.take()
            {
                levels.entry(key).or_default().push((id.clone(), level));
            }
        }
        for (session, levels) in levels {
            if let Some(s) = self.sessions.get(&session) {
                s.events.send(EdgeEvent::AudioLevels { session, levels });
            }
        }
    }

    fn on_timeouts(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.on_tick(now);
        }
        let due: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(s) = self.sessions.get_mut(&key) {
                if let Err(e) = s.pc.handle_timeout(now) {
                    debug!(session = key, error = %e, "timeout handling failed");
                }
                s.deadline = None;
            }
            self.drain_session(key, now);
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        self.metrics.bytes_in.inc_by(data.len() as u64);
        let class = classify(data);
        if class == DatagramClass::Garbage {
            self.metrics
                .dropped_datagrams
                .get_or_create(&metrics::DROP_GARBAGE)
                .inc();
            return;
        }
        let key = match self.by_addr.get(&from) {
            Some(key) => *key,
            None => {
                let found = (class == DatagramClass::Stun)
                    .then(|| stun_local_ufrag(data))
                    .flatten()
                    .and_then(|ufrag| self.by_ufrag.get(&ufrag).copied());
                let Some(key) = found else {
                    self.metrics
                        .dropped_datagrams
                        .get_or_create(&metrics::DROP_UNKNOWN_SOURCE)
                        .inc();
                    return;
                };
                // The remote address is personal data: logged at debug level only, for
                // connectivity troubleshooting.
                debug!(session = key, remote = %crate::logged_address::LoggedAddress(from), "new remote address for session");
                self.by_addr.insert(from, key);
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.addrs.push(from);
                }
                key
            }
        };
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
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
        // A panic inside one peer connection must cost that session only, never the node.
        let result = match catch_unwind(AssertUnwindSafe(|| session.pc.handle_read(input))) {
            Ok(result) => result,
            Err(_) => {
                warn!(
                    session = key,
                    "peer connection panicked on input; closing the session"
                );
                self.closing.push((key, "internal error".into()));
                return;
            }
        };
        if let Err(e) = result {
            let reason = if class == DatagramClass::Rtp {
                &metrics::DROP_SRTP
            } else {
                &metrics::DROP_GARBAGE
            };
            self.metrics.dropped_datagrams.get_or_create(reason).inc();
            debug!(session = key, error = %e, "datagram refused by session");
        }
        if catch_unwind(AssertUnwindSafe(|| self.drain_session(key, now))).is_err() {
            warn!(
                session = key,
                "peer connection panicked while draining; closing the session"
            );
            self.forwarded.clear();
            self.keyframe_requests.clear();
            self.closing.push((key, "internal error".into()));
        }
    }

    /// Takes everything a session produced: events, inbound media (forwarded at once) and feedback.
    fn drain_session(&mut self, key: SessionKey, now: Instant) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        while let Some(event) = session.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let transceivers: Vec<_> = session.pc.get_transceivers().collect();
                    let mid = transceivers.into_iter().find_map(|t| {
                        let tr = session.pc.rtp_transceiver(t)?;
                        (tr.receiver() == Some(init.receiver_id))
                            .then(|| tr.mid().clone())
                            .flatten()
                    });
                    debug!(session = key, ?mid, track = %init.track_id, rid = ?init.rid, ssrc = init.ssrc, "inbound track opened");
                    if let Some(desc) = mid.and_then(|m| session.published.get(&m)) {
                        let audio_level_ext = (desc.kind == MediaKind::Audio)
                            .then(|| session.pc.rtp_receiver(init.receiver_id))
                            .flatten()
                            .and_then(|mut r| {
                                r.get_parameters()
                                    .rtp_parameters
                                    .header_extensions
                                    .iter()
                                    .find(|h| h.uri == AUDIO_LEVEL_URI)
                                    .and_then(|h| u8::try_from(h.id).ok())
                            });
                        if let Some(entry) = self.tracks.get_mut(&desc.id) {
                            entry.receiver = Some(init.receiver_id);
                            if entry.codecs.is_empty()
                                && let Some(mut r) = session.pc.rtp_receiver(init.receiver_id)
                            {
                                entry.codecs = r
                                    .get_parameters()
                                    .rtp_parameters
                                    .codecs
                                    .iter()
                                    .map(|c| (c.payload_type, c.rtp_codec.clone()))
                                    .collect();
                            }
                        }
                        session.inbound.insert(
                            init.track_id.clone(),
                            Inbound {
                                track: desc.id.clone(),
                                receiver: init.receiver_id,
                                audio_level_ext,
                            },
                        );
                    }
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected if !session.connected => {
                        session.connected = true;
                        info!(session = key, participant = %session.participant, "peer connected");
                        session.events.send(EdgeEvent::Connected { session: key });
                        self.newly_connected.push(key);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.closing.push((key, format!("connection {state}")));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage {
            now: arrival,
            message,
        }) = session.pc.poll_read()
        {
            match message {
                RTCMessage::RtpPacket(rtc_track, packet) => {
                    let Some(inbound) = session.inbound.get(&rtc_track) else {
                        debug!(session = key, track = %rtc_track, "RTP for an unknown inbound track");
                        continue;
                    };
                    let Some(entry) = self.tracks.get_mut(&inbound.track) else {
                        continue;
                    };
                    self.metrics.packets_in.inc();
                    if let Some(id) = inbound.audio_level_ext
                        && let Some(mut ext) = packet.header.get_extension(id)
                        && let Ok(level) = AudioLevelExtension::unmarshal(&mut ext)
                    {
                        entry.audio_level.add(level.level);
                    }
                    if entry.paused {
                        continue;
                    }
                    let ssrc = packet.header.ssrc;
                    let layer = match session.ssrc_layers.get(&ssrc) {
                        Some((_, layer)) => *layer,
                        None => {
                            let rid = session
                                .pc
                                .rtp_receiver(inbound.receiver)
                                .and_then(|r| r.track().rid(ssrc).cloned());
                            let layer = rid
                                .and_then(|rid| entry.desc.layers.iter().position(|l| *l == rid))
                                .unwrap_or(0) as u8;
                            session
                                .ssrc_layers
                                .insert(ssrc, (inbound.track.clone(), layer));
                            layer
                        }
                    };
                    entry.bitrate.on_packet(
                        layer,
                        packet.payload.len() + RTP_HEADER_BYTES,
                        arrival,
                    );
                    entry.send_to_legs(layer, &packet, &mut self.relay);
                    let before = self.forwarded.len();
                    entry.forwarder.on_packet(
                        layer,
                        packet,
                        arrival,
                        &mut self.forwarded,
                        &mut self.requests_scratch,
                    );
                    self.latency
                        .extend(self.forwarded[before..].iter().map(|f| (f.key, arrival)));
                    for r in self.requests_scratch.drain(..) {
                        self.keyframe_requests.push((entry.desc.id.clone(), r));
                    }
                }
                RTCMessage::RtcpPacket(rtc_track, packets) => {
                    let track = TrackId(rtc_track);
                    if !session.outbound.contains_key(&track) {
                        continue;
                    }
                    let Some(entry) = self.tracks.get_mut(&track) else {
                        continue;
                    };
                    for p in &packets {
                        let any = p.as_any();
                        if any.downcast_ref::<PictureLossIndication>().is_some()
                            || any.downcast_ref::<FullIntraRequest>().is_some()
                        {
                            self.metrics.plis.inc();
                            let mut requests = Vec::new();
                            entry.forwarder.on_keyframe_request(key, now, &mut requests);
                            debug!(track = %track, session = key, passed_on = requests.len(), "subscriber asked for a keyframe");
                            for r in requests {
                                self.keyframe_requests.push((track.clone(), r));
                            }
                        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                            self.metrics.nacks.inc();
                            let lost = nack.nacks.iter().flat_map(|pair| pair.packet_list());
                            let before = entry.forwarder.stats.retransmitted;
                            entry.forwarder.on_nack(key, lost, now, &mut self.forwarded);
                            self.metrics
                                .retransmits
                                .inc_by(entry.forwarder.stats.retransmitted - before);
                        }
                    }
                }
                _ => {}
            }
        }
        self.dirty.push(key);
        for connected in std::mem::take(&mut self.newly_connected) {
            self.attach_outbound(connected);
        }
        self.deliver(now);
    }

    /// Hands forwarded copies to their subscribers' sessions and keyframe requests to publishers.
    fn deliver(&mut self, now: Instant) {
        let mut forwarded = std::mem::take(&mut self.forwarded);
        for f in forwarded.drain(..) {
            let Some(sub) = self.sessions.get_mut(&f.key) else {
                continue;
            };
            if !sub.connected {
                continue;
            }
            // rtc's write path routes by SSRC and ignores the track id: pass an empty one
            // rather than allocate a copy of the id per packet and subscriber.
            let message = TaggedRTCMessage {
                now,
                message: RTCMessage::RtpPacket(String::new(), f.packet),
            };
            if sub.pc.handle_write(message).is_ok() {
                self.dirty.push(f.key);
            }
        }
        // Hand the (now empty) buffer back so its capacity is reused next turn.
        self.forwarded = forwarded;
        for (track, request) in std::mem::take(&mut self.keyframe_requests) {
            let Some(entry) = self.tracks.get(&track) else {
                continue;
            };
            if entry.remote.is_some() {
                if self.request_upstream_keyframe(entry, request.layer) {
                    debug!(track = %track, layer = request.layer, "keyframe requested upstream");
                    self.metrics.keyframe_requests_sent.inc();
                }
                continue;
            }
            let (Some(publisher_key), Some(receiver)) = (entry.publisher, entry.receiver) else {
                continue;
            };
            let Some(publisher) = self.sessions.get_mut(&publisher_key) else {
                continue;
            };
            if let Some(mut r) = publisher.pc.rtp_receiver(receiver) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: request.ssrc,
                };
                match r.write_rtcp(now, vec![Box::new(pli)]) {
                    Ok(()) => {
                        debug!(track = %track, ssrc = request.ssrc, "keyframe requested");
                        self.metrics.keyframe_requests_sent.inc();
                        self.dirty.push(publisher_key);
                    }
                    Err(e) => debug!(track = %track, error = %e, "keyframe request failed"),
                }
            }
        }
    }

    /// Sends what the touched sessions queued (one `sendmmsg` per [`super::batch_send::BATCH`]
    /// datagrams) and closes sessions that ended.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in &dirty {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            while let Some(out) = session.pc.poll_write() {
                self.outbox.push(out.message, out.transport.peer_addr);
            }
            session.deadline = session.pc.poll_timeout();
        }
        let outcome = self.outbox.flush(&self.socket);
        let sent = Instant::now();
        self.metrics.packets_out.inc_by(outcome.sent);
        self.metrics.bytes_out.inc_by(outcome.bytes);
        if outcome.failed > 0 {
            self.metrics
                .dropped_datagrams
                .get_or_create(&metrics::DROP_SEND_FAILED)
                .inc_by(outcome.failed);
        }
        for (key, arrival) in self.latency.drain(..) {
            if self.sessions.contains_key(&key) {
                self.metrics
                    .forward_latency
                    .observe(sent.saturating_duration_since(arrival).as_secs_f64());
            }
        }
        dirty.clear();
        self.dirty = dirty;
        for (key, reason) in std::mem::take(&mut self.closing) {
            self.close_session(key, &reason);
        }
    }

    fn on_command(&mut self, command: EngineCommand) {
        let now = Instant::now();
        match command {
            EngineCommand::Publish {
                session,
                participant,
                offer,
                sources,
                events,
                reply,
            } => {
                let span = negotiation_span("publish", Some(&participant), session);
                let result = self.publish(session, participant, offer, sources, events, now);
                negotiated(&span, result.as_ref().map(|o| (o.session, o.tracks.len())));
                let _ = reply.send(result);
            }
            EngineCommand::SubscribeAnswering {
                participant,
                offer,
                tracks,
                events,
                reply,
            } => {
                let span = negotiation_span("subscribe", Some(&participant), None);
                let count = tracks.len();
                let result = self.subscribe_answering(participant, offer, tracks, events, now);
                negotiated(&span, result.as_ref().map(|(key, _)| (*key, count)));
                let _ = reply.send(result);
            }
            EngineCommand::SubscribeOffering {
                participant,
                tracks,
                events,
                reply,
            } => {
                let span = negotiation_span("subscribe_offer", Some(&participant), None);
                let result = self.subscribe_offering(participant, tracks, events, now);
                negotiated(&span, result.as_ref().map(|o| (o.session, o.tracks.len())));
                let _ = reply.send(result);
            }
            EngineCommand::UpdateSubscription {
                session,
                add,
                remove,
            } => self.update_subscription(session, add, remove, now),
            EngineCommand::SubscribeAnswer {
                session,
                answer,
                reply,
            } => {
                let owner = self.sessions.get(&session).map(|s| s.participant.clone());
                let span = negotiation_span("subscribe_answer", owner.as_ref(), Some(session));
                let result = self.subscribe_answer(session, answer, now);
                let tracks = self.sessions.get(&session).map_or(0, |s| s.outbound.len());
                negotiated(&span, result.as_ref().map(|()| (session, tracks)));
                let _ = reply.send(result);
            }
            EngineCommand::RemoteCandidate {
                session,
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    let init = RTCIceCandidateInit {
                        candidate,
                        sdp_mid,
                        sdp_mline_index,
                        ..Default::default()
                    };
                    if let Err(e) = s.pc.add_remote_candidate(init) {
                        debug!(session, error = %e, "remote candidate refused");
                    }
                    self.dirty.push(session);
                }
            }
            EngineCommand::SetTrackPaused { track, paused } => {
                if let Some(entry) = self.tracks.get_mut(&track) {
                    info!(track = %track, paused, "track forwarding paused by moderation");
                    entry.paused = paused;
                }
            }
            EngineCommand::SetLayer {
                session,
                track,
                layer,
            } => {
                if let Some(entry) = self.tracks.get_mut(&track) {
                    entry.forwarder.set_wanted_layer(session, layer);
                }
                if let Some(o) = self
                    .sessions
                    .get_mut(&session)
                    .and_then(|s| s.outbound.get_mut(&track))
                {
                    o.wanted_layer = layer;
                }
            }
            EngineCommand::Close { session } => self.close_session(session, "closed by owner"),
            EngineCommand::Stats { reply } => {
                let _ = reply.send(EngineStats {
                    sessions: self.sessions.len(),
                    forwarded_tracks: self.tracks.len(),
                });
            }
        }
        self.refresh_all_demand();
        self.metrics.sessions.set(self.sessions.len() as i64);
    }

    fn insert_session(
        &mut self,
        participant: ParticipantId,
        peer: NewPeer,
        events: EventSink,
        node_offers: bool,
    ) -> SessionKey {
        let NewPeer {
            pc,
            ufrag,
            estimate,
        } = peer;
        let key = self.next_key;
        self.next_key += 1;
        self.by_ufrag.insert(ufrag.clone(), key);
        let mut session = Session {
            participant,
            pc,
            ufrag,
            addrs: Vec::new(),
            events,
            published: BTreeMap::new(),
            inbound: HashMap::new(),
            ssrc_layers: HashMap::new(),
            outbound: HashMap::new(),
            node_offers,
            awaiting_answer: false,
            offer_pending: false,
            deadline: None,
            connected: false,
            estimate,
            allocation: SessionAllocation::default(),
        };
        session.deadline = session.pc.poll_timeout();
        self.sessions.insert(key, session);
        key
    }

    fn publish(
        &mut self,
        existing: Option<SessionKey>,
        participant: ParticipantId,
        offer: String,
        sources: BTreeMap<String, TrackSource>,
        events: EventSink,
        now: Instant,
    ) -> Result<PublishOutcome, EdgeError> {
        let offered = parse_offer(&offer).map_err(|e| EdgeError::InvalidSdp(e.to_string()))?;
        let description = RTCSessionDescription::offer(offer)
            .map_err(|e| EdgeError::InvalidSdp(e.to_string()))?;
        let key = match existing {
            Some(key) => {
                if !self.sessions.contains_key(&key) {
                    return Err(EdgeError::UnknownSession);
                }
                key
            }
            None => {
                let peer = new_peer(self.advertised, PeerRole::Publisher, now)
                    .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
                self.insert_session(participant.clone(), peer, events, false)
            }
        };
        let answer = {
            let session = self
                .sessions
                .get_mut(&key)
                .ok_or(EdgeError::UnknownSession)?;
            negotiate_answer(&mut session.pc, description, now)
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                if existing.is_none() {
                    self.close_session(key, "negotiation failed");
                }
                return Err(e);
            }
        };
        let session = self
            .sessions
            .get_mut(&key)
            .ok_or(EdgeError::UnknownSession)?;
        let mut tracks = BTreeMap::new();
        for o in &offered {
            let desc = match session.published.get(&o.mid) {
                Some(d) => d.clone(),
                None => TrackDescriptor {
                    id: new_track_id(),
                    participant: participant.clone(),
                    kind: o.kind,
                    source: sources.get(&o.mid).copied().unwrap_or(match o.kind {
                        MediaKind::Audio => TrackSource::Microphone,
                        MediaKind::Video => TrackSource::Camera,
                    }),
                    layers: o.rids.clone(),
                },
            };
            tracks.insert(o.mid.clone(), desc);
        }
        let removed: Vec<TrackId> = session
            .published
            .iter()
            .filter(|(mid, _)| !tracks.contains_key(*mid))
            .map(|(_, d)| d.id.clone())
            .collect();
        session.published = tracks.clone();
        self.dirty.push(key);
        for (mid, desc) in &tracks {
            if self.tracks.contains_key(&desc.id) {
                continue;
            }
            let media = match desc.kind {
                MediaKind::Audio => ForwardedMedia::Audio,
                // The real codec is learnt from the receiver at the first packet; VP8 until then.
                MediaKind::Video => ForwardedMedia::Video(VideoCodec::Vp8),
            };
            let Some(session) = self.sessions.get_mut(&key) else {
                break;
            };
            let codecs = negotiated_codecs(&mut session.pc, mid);
            let (media, clock_rate) = match codecs.first() {
                Some((_, c)) if desc.kind == MediaKind::Video => (
                    ForwardedMedia::Video(VideoCodec::from_mime(&c.mime_type)),
                    c.clock_rate,
                ),
                Some((_, c)) => (media, c.clock_rate),
                None => (media, 90_000),
            };
            info!(participant = %desc.participant, track = %desc.id, kind = ?desc.kind,
                  layers = desc.layers.len(), "track published");
            self.tracks.insert(
                desc.id.clone(),
                TrackEntry {
                    desc: desc.clone(),
                    publisher: Some(key),
                    receiver: None,
                    codecs,
                    forwarder: TrackForwarder::new(media, clock_rate, desc.layers.len().max(1)),
                    remote: None,
                    relay_legs: Vec::new(),
                    paused: false,
                    audio_level: AudioLevelWindow::default(),
                    bitrate: LayerBitrateMeter::new(),
                    layer_gate: (desc.layers.len() > 1)
                        .then(|| PublishedLayerGate::new(desc.layers.len())),
                },
            );
        }
        for id in &removed {
            self.remove_track(id);
        }
        self.metrics.tracks.set(self.tracks.len() as i64);
        Ok(PublishOutcome {
            session: key,
            answer,
            tracks,
            removed,
        })
    }

    fn remove_track(&mut self, id: &TrackId) {
        if let Some(entry) = self.tracks.remove(id) {
            info!(track = %id, "track removed");
            for leg in &entry.relay_legs {
                self.relay.forget_leg(leg);
            }
            if let Some(remote) = &entry.remote {
                self.relay.forget_upstream(remote);
                if !remote.is_idle() {
                    self.tell_relay(EngineToRelay::Demand {
                        track: id.clone(),
                        layers: kaskade_proto::relay::LayerSet::default(),
                    });
                }
            }
        }
        self.metrics.tracks.set(self.tracks.len() as i64);
    }

    fn add_outbound(&mut self, key: SessionKey, desc: &TrackDescriptor) -> Result<(), EdgeError> {
        let entry = self.tracks.get(&desc.id).ok_or(EdgeError::UnknownTrack)?;
        let codec = entry
            .codecs
            .first()
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| default_codec(desc.kind));
        let session = self
            .sessions
            .get_mut(&key)
            .ok_or(EdgeError::UnknownSession)?;
        if session.outbound.contains_key(&desc.id) {
            return Ok(());
        }
        let ssrc = rand::random::<u32>();
        let rtx_ssrc = (desc.kind == MediaKind::Video).then(rand::random::<u32>);
        let kind = match desc.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let track = MediaStreamTrack::new(
            desc.participant.0.clone(),
            desc.id.0.clone(),
            format!("{:?}", desc.source),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                    ..Default::default()
                },
                active: true,
                codec,
                ..Default::default()
            }],
        );
        let sender = session
            .pc
            .add_track(track)
            .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
        let wanted_layer = desc.layers.len().saturating_sub(1) as u8;
        session.outbound.insert(
            desc.id.clone(),
            Outbound {
                sender,
                ssrc,
                rtx_ssrc,
                attached: false,
                wanted_layer,
            },
        );
        Ok(())
    }

    /// Registers every not-yet-attached outbound leg of a connected session with its track's
    /// forwarder, mapping payload types by codec now that negotiation has settled them. Legs wait
    /// for DTLS: what would be forwarded before could not be sent, and a layer selector that saw
    /// a keyframe nobody received would wait forever for the next.
    fn attach_outbound(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if !session.connected {
            return;
        }
        for (id, out) in session.outbound.iter_mut().filter(|(_, o)| !o.attached) {
            let Some(entry) = self.tracks.get_mut(id) else {
                continue;
            };
            let Some(mut sender) = session.pc.rtp_sender(out.sender) else {
                continue;
            };
            let theirs = &sender.get_parameters().rtp_parameters.codecs;
            let payload_types: Vec<(u8, u8)> = entry
                .codecs
                .iter()
                .filter_map(|(pt, c)| {
                    theirs
                        .iter()
                        .find(|t| {
                            t.rtp_codec.mime_type.eq_ignore_ascii_case(&c.mime_type)
                                && fmtp_compatible(&t.rtp_codec.sdp_fmtp_line, &c.sdp_fmtp_line)
                        })
                        .map(|t| (*pt, t.payload_type))
                })
                .collect();
            if payload_types.is_empty() {
                warn!(session = key, track = %id, "no common codec with subscriber");
                continue;
            }
            let rtx = out.rtx_ssrc.and_then(|ssrc| {
                let payload_types = rtx_payload_types(theirs, &payload_types);
                (!payload_types.is_empty()).then_some(RtxSpec {
                    ssrc,
                    payload_types,
                })
            });
            debug!(session = key, track = %id, ?payload_types, rtx = rtx.is_some(), "subscriber leg attached");
            entry.forwarder.add_downstream(DownstreamSpec {
                key,
                ssrc: out.ssrc,
                payload_types,
                wanted_layer: out.wanted_layer,
                rtx,
            });
            out.attached = true;
            // A leg added to a connected session (renegotiation) needs a keyframe to start;
            // a new session gets one when it connects.
            if session.connected {
                let mut requests = Vec::new();
                entry
                    .forwarder
                    .on_keyframe_request(key, Instant::now(), &mut requests);
                for r in requests {
                    self.keyframe_requests.push((id.clone(), r));
                }
            }
        }
    }

    fn subscribe_answering(
        &mut self,
        participant: ParticipantId,
        offer: String,
        tracks: Vec<TrackDescriptor>,
        events: EventSink,
        now: Instant,
    ) -> Result<(SessionKey, String), EdgeError> {
        parse_offer(&offer).map_err(|e| EdgeError::InvalidSdp(e.to_string()))?;
        let description = RTCSessionDescription::offer(offer)
            .map_err(|e| EdgeError::InvalidSdp(e.to_string()))?;
        let peer = new_peer(self.advertised, PeerRole::Subscriber, now)
            .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
        let key = self.insert_session(participant, peer, events, false);
        for desc in &tracks {
            if let Err(e) = self.add_outbound(key, desc) {
                self.close_session(key, "subscription failed");
                return Err(e);
            }
        }
        let session = self
            .sessions
            .get_mut(&key)
            .ok_or(EdgeError::UnknownSession)?;
        match negotiate_answer(&mut session.pc, description, now) {
            Ok(answer) => {
                self.attach_outbound(key);
                self.dirty.push(key);
                self.deliver(now);
                Ok((key, answer))
            }
            Err(e) => {
                self.close_session(key, "negotiation failed");
                Err(e)
            }
        }
    }

    /// A new subscribe session that the node offers, carrying those of `tracks` that still
    /// exist. A track can vanish between the room announcing it and this command (its publisher
    /// left, or resumed on another node and the relay dropped the old copy): it is left out, and
    /// the `track_unpublished` already on its way tells the participant. When nothing is left,
    /// no session is made: an offer without m-lines cannot be answered usefully (Chromium
    /// answers it without m-lines and without ICE credentials, which `rtc` refuses, and the
    /// session would wait for a valid answer forever).
    fn subscribe_offering(
        &mut self,
        participant: ParticipantId,
        tracks: Vec<TrackDescriptor>,
        events: EventSink,
        now: Instant,
    ) -> Result<SubscribeOffer, EdgeError> {
        let (present, gone): (Vec<_>, Vec<_>) = tracks
            .into_iter()
            .partition(|d| self.tracks.contains_key(&d.id));
        for desc in &gone {
            debug!(participant = %participant, track = %desc.id, "track gone before its subscription; left out");
        }
        if present.is_empty() {
            return Err(EdgeError::UnknownTrack);
        }
        let peer = new_peer(self.advertised, PeerRole::Subscriber, now)
            .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
        let key = self.insert_session(participant.clone(), peer, events, true);
        let mut refused = None;
        for desc in &present {
            if let Err(e) = self.add_outbound(key, desc) {
                debug!(session = key, participant = %participant, track = %desc.id, error = %e, "subscription not added");
                refused.get_or_insert(e);
            }
        }
        if self
            .sessions
            .get(&key)
            .is_some_and(|s| s.outbound.is_empty())
        {
            self.close_session(key, "nothing to offer");
            return Err(refused.unwrap_or(EdgeError::UnknownTrack));
        }
        match self.make_offer(key, now) {
            Ok(offer) => Ok(offer),
            Err(e) => {
                self.close_session(key, "offer failed");
                Err(e)
            }
        }
    }

    fn make_offer(&mut self, key: SessionKey, now: Instant) -> Result<SubscribeOffer, EdgeError> {
        let session = self
            .sessions
            .get_mut(&key)
            .ok_or(EdgeError::UnknownSession)?;
        let offer = session
            .pc
            .create_offer(None)
            .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
        session
            .pc
            .set_local_description(now, offer)
            .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
        let sdp = session
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| EdgeError::Negotiation("no local description".into()))?;
        session.awaiting_answer = true;
        session.offer_pending = false;
        let mut tracks = BTreeMap::new();
        let transceivers: Vec<_> = session.pc.get_transceivers().collect();
        for t in transceivers {
            let Some(tr) = session.pc.rtp_transceiver(t) else {
                continue;
            };
            let (Some(mid), Some(sender)) = (tr.mid().clone(), tr.sender()) else {
                continue;
            };
            if let Some((id, _)) = session.outbound.iter().find(|(_, o)| o.sender == sender) {
                tracks.insert(mid, id.clone());
            }
        }
        self.dirty.push(key);
        Ok(SubscribeOffer {
            session: key,
            offer: sdp,
            tracks,
        })
    }

    fn update_subscription(
        &mut self,
        key: SessionKey,
        add: Vec<TrackDescriptor>,
        remove: Vec<TrackId>,
        now: Instant,
    ) {
        let mut changed = false;
        for desc in &add {
            let before = self.sessions.get(&key).map(|s| s.outbound.len());
            match self.add_outbound(key, desc) {
                Ok(()) => changed |= self.sessions.get(&key).map(|s| s.outbound.len()) != before,
                Err(e) => {
                    debug!(session = key, track = %desc.id, error = %e, "subscription not added")
                }
            }
        }
        for id in &remove {
            if let Some(entry) = self.tracks.get_mut(id) {
                entry.forwarder.remove_downstream(key);
            }
            if let Some(session) = self.sessions.get_mut(&key)
                && let Some(out) = session.outbound.remove(id)
            {
                changed = true;
                if let Err(e) = session.pc.remove_track(out.sender) {
                    debug!(session = key, track = %id, error = %e, "remove_track failed");
                }
            }
        }
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        // Nothing to renegotiate when every change named a track that is gone (or was there).
        if !session.node_offers || !changed {
            return;
        }
        if session.awaiting_answer {
            session.offer_pending = true;
            return;
        }
        self.send_offer(key, now);
    }

    fn send_offer(&mut self, key: SessionKey, now: Instant) {
        let owner = self.sessions.get(&key).map(|s| s.participant.clone());
        let span = negotiation_span("subscribe_reoffer", owner.as_ref(), Some(key));
        let result = self.make_offer(key, now);
        negotiated(&span, result.as_ref().map(|o| (o.session, o.tracks.len())));
        match result {
            Ok(offer) => {
                if let Some(s) = self.sessions.get(&key) {
                    s.events.send(EdgeEvent::SubscribeOffer {
                        session: key,
                        offer: offer.offer,
                        tracks: offer.tracks,
                    });
                }
            }
            Err(e) => warn!(session = key, error = %e, "renegotiation offer failed"),
        }
    }

    fn subscribe_answer(
        &mut self,
        key: SessionKey,
        answer: String,
        now: Instant,
    ) -> Result<(), EdgeError> {
        let session = self
            .sessions
            .get_mut(&key)
            .ok_or(EdgeError::UnknownSession)?;
        let offer = session
            .pc
            .pending_local_description()
            .filter(|_| session.awaiting_answer)
            .ok_or_else(|| EdgeError::Negotiation("no offer is waiting for an answer".into()))?;
        // `rtc` takes an answer in (signalling state, negotiated codecs) before it finds what is
        // wrong with it, so check first: a refused answer leaves the offer waiting and the session
        // as it was.
        check_answer(&offer.sdp, &answer).map_err(|e| EdgeError::InvalidSdp(e.to_string()))?;
        let description = RTCSessionDescription::answer(answer)
            .map_err(|e| EdgeError::InvalidSdp(e.to_string()))?;
        if let Err(e) = session.pc.set_remote_description(now, description) {
            warn!(session = key, participant = %session.participant, error = %e, "subscribe answer failed after its checks");
            // If the connection took the answer in halfway it waits for none any more: offer
            // the next change anew rather than queue it forever.
            if session.pc.pending_local_description().is_none() {
                session.awaiting_answer = false;
                if session.offer_pending {
                    self.send_offer(key, now);
                }
            }
            return Err(EdgeError::InvalidSdp(e.to_string()));
        }
        session.awaiting_answer = false;
        let pending = session.offer_pending;
        self.attach_outbound(key);
        self.dirty.push(key);
        self.deliver(now);
        if pending {
            self.send_offer(key, now);
        }
        Ok(())
    }

    fn close_session(&mut self, key: SessionKey, reason: &str) {
        let Some(mut session) = self.sessions.remove(&key) else {
            return;
        };
        let _ = session.pc.close();
        while let Some(out) = session.pc.poll_write() {
            let _ = self
                .socket
                .try_send_to(&out.message, out.transport.peer_addr);
        }
        self.by_ufrag.remove(&session.ufrag);
        for addr in &session.addrs {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        for desc in session.published.values() {
            self.remove_track(&desc.id);
        }
        for id in session.outbound.keys() {
            if let Some(entry) = self.tracks.get_mut(id) {
                entry.forwarder.remove_downstream(key);
            }
        }
        if self.relay_demand.is_some() {
            for id in session.outbound.keys() {
                self.refresh_demand(id);
            }
        }
        info!(session = key, participant = %session.participant, reason, "peer session closed");
        session.events.send(EdgeEvent::Closed {
            session: key,
            reason: reason.to_owned(),
        });
        self.metrics.sessions.set(self.sessions.len() as i64);
    }
}

/// The `negotiation` span of one SDP step of a peer session (an offer or answer handled, never
/// a packet): `kind` is publish, subscribe (the client offered), subscribe_offer (the node
/// offered), subscribe_answer or subscribe_reoffer.
fn negotiation_span(
    kind: &'static str,
    participant: Option<&ParticipantId>,
    session: Option<SessionKey>,
) -> tracing::span::EnteredSpan {
    tracing::info_span!(
        "negotiation",
        kind,
        participant = participant.map(tracing::field::display),
        session,
        tracks = tracing::field::Empty,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty
    )
    .entered()
}

/// Records how a negotiation step ended: the session and its track count, or the kind of error
/// (never its text, which can quote the SDP).
fn negotiated(span: &tracing::Span, result: Result<(SessionKey, usize), &EdgeError>) {
    match result {
        Ok((session, tracks)) => {
            span.record("session", session);
            span.record("tracks", tracks);
            span.record("outcome", "ok");
        }
        Err(e) => {
            let (outcome, failed) = match e {
                EdgeError::InvalidSdp(_) => ("invalid_sdp", true),
                EdgeError::Negotiation(_) => ("failed", true),
                EdgeError::UnknownSession => ("unknown_session", false),
                EdgeError::UnknownTrack => ("unknown_track", false),
                EdgeError::EngineGone => ("engine_gone", true),
            };
            span.record("outcome", outcome);
            if failed {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

fn negotiate_answer(
    pc: &mut RTCPeerConnection,
    offer: RTCSessionDescription,
    now: Instant,
) -> Result<String, EdgeError> {
    pc.set_remote_description(now, offer)
        .map_err(|e| EdgeError::InvalidSdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
    pc.set_local_description(now, answer)
        .map_err(|e| EdgeError::Negotiation(e.to_string()))?;
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| EdgeError::Negotiation("no local description".into()))
}

/// The codecs negotiated on the receiver of the transceiver with this `mid`.
fn negotiated_codecs(pc: &mut RTCPeerConnection, mid: &str) -> Vec<(u8, RTCRtpCodec)> {
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    let receiver = transceivers.into_iter().find_map(|t| {
        let tr = pc.rtp_transceiver(t)?;
        (tr.mid().as_deref() == Some(mid))
            .then(|| tr.receiver())
            .flatten()
    });
    let Some(mut receiver) = receiver.and_then(|r| pc.rtp_receiver(r)) else {
        return Vec::new();
    };
    receiver
        .get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .map(|c| (c.payload_type, c.rtp_codec.clone()))
        .collect()
}

/// For each subscriber media payload type in `media`, the RTX payload type whose `apt` names it.
fn rtx_payload_types(codecs: &[RTCRtpCodecParameters], media: &[(u8, u8)]) -> Vec<(u8, u8)> {
    media
        .iter()
        .filter_map(|(_, theirs)| {
            codecs
                .iter()
                .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx"))
                .find(|c| {
                    c.rtp_codec
                        .sdp_fmtp_line
                        .split(';')
                        .filter_map(|kv| kv.trim().split_once('='))
                        .any(|(k, v)| k == "apt" && v.parse::<u8>().ok() == Some(*theirs))
                })
                .map(|c| (*theirs, c.payload_type))
        })
        .collect()
}

fn default_codec(kind: MediaKind) -> RTCRtpCodec {
    match kind {
        MediaKind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        MediaKind::Video => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

/// H264 profiles and packetization modes must match; other codecs match by name.
/// Whether a publisher's codec parameters `sent` suit a subscriber's `accepted` ones: for H.264
/// a profile the subscriber decodes ([`super::h264_profile`]; the level may differ) and the
/// same packetization mode; codecs without a profile always.
fn fmtp_compatible(accepted: &str, sent: &str) -> bool {
    fn param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
        fmtp.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
    }
    use super::h264_profile::{decodable, profile_of};
    let profiles = match (
        param(accepted, "profile-level-id"),
        param(sent, "profile-level-id"),
    ) {
        (None, None) => return true,
        (Some(a), Some(s)) => match (profile_of(a), profile_of(s)) {
            (Some(a), Some(s)) => decodable(s, a),
            _ => a.eq_ignore_ascii_case(s),
        },
        _ => false,
    };
    profiles && param(accepted, "packetization-mode") == param(sent, "packetization-mode")
}

fn new_track_id() -> TrackId {
    TrackId(format!("t{:016x}", rand::random::<u64>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaskade_proto::relay::RelayTrack;
    use kaskade_proto::signal::TrackInfo;

    #[test]
    fn h264_streams_reach_subscribers_that_spell_the_profile_differently() {
        let x264 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42c01f";
        let chrome = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        let baseline = "packetization-mode=1;profile-level-id=42001f";
        let high = "packetization-mode=1;profile-level-id=640032";
        let mode0 = "profile-level-id=42e01f";
        assert!(
            fmtp_compatible(chrome, x264),
            "constrained baseline either way"
        );
        assert!(fmtp_compatible(x264, chrome));
        assert!(fmtp_compatible(baseline, x264), "to a baseline decoder");
        assert!(
            !fmtp_compatible(x264, baseline),
            "baseline is more than constrained"
        );
        assert!(!fmtp_compatible(chrome, high));
        assert!(
            !fmtp_compatible(chrome, mode0),
            "packetization modes differ"
        );
        assert!(fmtp_compatible("", ""), "VP8, Opus: no profile");
        assert!(!fmtp_compatible(chrome, ""));
    }

    async fn engine() -> Engine {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        Engine::new(socket, local, local, Metrics::new())
    }

    fn info(id: &str, kind: MediaKind) -> TrackInfo {
        TrackInfo {
            id: TrackId(id.into()),
            participant: ParticipantId("pother".into()),
            kind,
            source: match kind {
                MediaKind::Audio => TrackSource::Microphone,
                MediaKind::Video => TrackSource::Camera,
            },
            layers: vec![],
            muted: false,
        }
    }

    /// A track of a participant on another node, as the relay adds it.
    fn add_remote(engine: &mut Engine, track: &TrackInfo) {
        engine.on_relay_command(RelayToEngine::AddRemoteTrack {
            track: RelayTrack {
                info: track.clone(),
                origin: "n3".into(),
                origin_site: "a".into(),
                codecs: vec![],
            },
        });
    }

    fn media_lines(sdp: &str) -> usize {
        sdp.lines().filter(|l| l.starts_with("m=")).count()
    }

    /// A browser-like answer to `offer`: every m-line accepted as `recvonly`, with the codecs
    /// offered, one set of ICE credentials and a DTLS fingerprint.
    fn answer_to(offer: &str) -> String {
        let mut sections: Vec<Vec<&str>> = Vec::new();
        for line in offer.lines() {
            if line.starts_with("m=") {
                sections.push(vec![line]);
            } else if let Some(section) = sections.last_mut() {
                section.push(line);
            }
        }
        let mids: Vec<&str> = sections
            .iter()
            .filter_map(|s| s.iter().find_map(|l| l.strip_prefix("a=mid:")))
            .collect();
        let mut sdp = format!(
            "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n",
            mids.join(" ")
        );
        for section in &sections {
            sdp.push_str(section[0]);
            sdp.push_str(
                "\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:page\r\na=ice-pwd:pagepasswordpagepassword\r\n\
a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
a=setup:active\r\na=rtcp-mux\r\na=recvonly\r\n",
            );
            for line in &section[1..] {
                let keep = ["a=mid:", "a=rtpmap:", "a=fmtp:", "a=rtcp-fb:", "a=extmap:"];
                if keep.iter().any(|k| line.starts_with(k)) {
                    sdp.push_str(line);
                    sdp.push_str("\r\n");
                }
            }
        }
        sdp
    }

    /// Seen after a drain: the room announced a remote participant's tracks, that participant
    /// resumed on this node and the relay dropped the old copies before the subscribe request
    /// reached the engine. The engine used to offer a session without m-lines, which Chromium
    /// answers without ICE credentials and `rtc` then refuses ("no ice-ufrag").
    #[tokio::test(flavor = "current_thread")]
    async fn a_subscription_to_tracks_that_are_gone_is_not_offered_empty() {
        let mut engine = engine().await;
        let (audio, video) = (
            info("taudio", MediaKind::Audio),
            info("tvideo", MediaKind::Video),
        );
        add_remote(&mut engine, &audio);
        add_remote(&mut engine, &video);
        for id in [&audio.id, &video.id] {
            engine.on_relay_command(RelayToEngine::RemoveRemoteTrack { track: id.clone() });
        }
        let wanted = vec![TrackDescriptor::from(&audio), TrackDescriptor::from(&video)];
        let (events, _rx) = EventSink::channel();
        let me = ParticipantId("pme".into());
        let result = engine.subscribe_offering(me.clone(), wanted.clone(), events, Instant::now());
        assert!(matches!(result, Err(EdgeError::UnknownTrack)), "{result:?}");
        assert!(engine.sessions.is_empty(), "no session is left behind");

        // One of the two is back: the offer carries it alone.
        add_remote(&mut engine, &audio);
        let (events, _rx) = EventSink::channel();
        let offer = engine
            .subscribe_offering(me, wanted, events, Instant::now())
            .unwrap();
        assert_eq!(media_lines(&offer.offer), 1);
        assert_eq!(offer.tracks.values().collect::<Vec<_>>(), vec![&audio.id]);
    }

    /// A subscribe answer the node cannot use is refused with a reason, and refusing it changes
    /// nothing: the offer still waits, and a good answer sent afterwards is taken.
    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_subscribe_answer_leaves_the_offer_waiting() {
        let mut engine = engine().await;
        let (audio, video) = (
            info("taudio", MediaKind::Audio),
            info("tvideo", MediaKind::Video),
        );
        add_remote(&mut engine, &audio);
        add_remote(&mut engine, &video);
        let (events, mut event_rx) = EventSink::channel();
        let offer = engine
            .subscribe_offering(
                ParticipantId("pme".into()),
                vec![TrackDescriptor::from(&audio), TrackDescriptor::from(&video)],
                events,
                Instant::now(),
            )
            .unwrap();
        let key = offer.session;
        assert_eq!(media_lines(&offer.offer), 2);

        let good = answer_to(&offer.offer);
        let bad = [
            // What Chromium answers to an offer without m-lines.
            "v=0\r\no=- 5 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=msid-semantic: WMS\r\n"
                .to_owned(),
            // Every m-line rejected: port 0, and no ICE credentials.
            good.replace("m=audio 9", "m=audio 0")
                .replace("m=video 9", "m=video 0")
                .replace("a=ice-ufrag:page\r\n", ""),
            good.replace("a=ice-ufrag:page\r\n", ""),
            good.replace("a=mid:1", "a=mid:7"),
        ];
        for answer in bad {
            let result = engine.subscribe_answer(key, answer, Instant::now());
            let Err(EdgeError::InvalidSdp(reason)) = result else {
                panic!("a bad answer was taken: {result:?}");
            };
            assert!(!reason.contains("set_remote_description"), "{reason}");
            let session = &engine.sessions[&key];
            assert!(session.awaiting_answer);
            assert_eq!(
                session.pc.pending_local_description().map(|d| d.sdp),
                session.pc.local_description().map(|d| d.sdp),
                "the offer is still pending"
            );
        }
        engine
            .subscribe_answer(key, good, Instant::now())
            .expect("a good answer after bad ones is taken");
        assert!(!engine.sessions[&key].awaiting_answer);
        assert!(
            engine.sessions[&key]
                .pc
                .pending_local_description()
                .is_none()
        );

        // A change that names only a track that is gone renegotiates nothing.
        let gone = TrackDescriptor::from(&info("tgone", MediaKind::Video));
        engine.update_subscription(key, vec![gone], vec![], Instant::now());
        assert!(event_rx.try_recv().is_err(), "no offer for no change");
        // A real change is offered.
        engine.update_subscription(key, vec![], vec![video.id.clone()], Instant::now());
        assert!(matches!(
            event_rx.try_recv(),
            Ok(EdgeEvent::SubscribeOffer { .. })
        ));
    }
}
