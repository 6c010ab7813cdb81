//! What crosses between the relay (QUIC links, the mesh manager) and the media engine: the
//! commands the relay sends in, the demand the engine reports out, the media packets that arrive
//! over a link, and [`LinkTx`], the sending half of a link that the engine uses directly from its
//! own thread (a QUIC datagram send is a synchronous call, so outgoing relay media pays no hop).

use crate::metrics::RelayPeerMetrics;
use bytes::Bytes;
use kaskade_proto::TrackId;
use kaskade_proto::relay::{LayerSet, MediaDatagram, RelayCodec, RelayMessage, RelayTrack};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Identifies one QUIC connection (a reconnect gets a new id).
pub type LinkId = u64;

/// The sending half of a relay link.
pub struct LinkTx {
    pub id: LinkId,
    pub peer: String,
    pub peer_site: String,
    conn: quinn::Connection,
    control: mpsc::UnboundedSender<RelayMessage>,
    link_seq: AtomicU32,
    pub metrics: RelayPeerMetrics,
}

impl LinkTx {
    pub fn new(
        id: LinkId,
        peer: String,
        peer_site: String,
        conn: quinn::Connection,
        control: mpsc::UnboundedSender<RelayMessage>,
        metrics: RelayPeerMetrics,
    ) -> Self {
        Self {
            id,
            peer,
            peer_site,
            conn,
            control,
            link_seq: AtomicU32::new(0),
            metrics,
        }
    }

    /// Queues a control message on the link's stream; false if the link is gone.
    pub fn send_control(&self, message: RelayMessage) -> bool {
        self.control.send(message).is_ok()
    }

    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// Sends one RTP packet of a subscription: as a datagram, or on the stream when too large
    /// for one (never silently dropped for size). `scratch` is reused between calls.
    pub fn send_media(&self, channel: u32, layer: u8, rtp: &[u8], scratch: &mut Vec<u8>) {
        let link_seq = self.link_seq.fetch_add(1, Ordering::Relaxed);
        let datagram = MediaDatagram {
            channel,
            layer,
            link_seq,
            rtp,
        };
        if kaskade_proto::relay::encode_datagram(&datagram, scratch).is_err() {
            self.metrics.media_dropped.inc();
            return;
        }
        // `max_datagram_size` is `None` when the peer does not take datagrams at all.
        let fits = self
            .conn
            .max_datagram_size()
            .is_some_and(|max| scratch.len() <= max);
        if fits {
            let len = scratch.len() as u64;
            match self.conn.send_datagram(Bytes::copy_from_slice(scratch)) {
                Ok(()) => {
                    self.metrics.media_bytes_sent.inc_by(len);
                    self.metrics.media_packets_sent.inc();
                }
                Err(_) => {
                    self.metrics.media_dropped.inc();
                }
            }
        } else {
            self.metrics.stream_fallbacks.inc();
            self.metrics.media_bytes_sent.inc_by(rtp.len() as u64);
            self.metrics.media_packets_sent.inc();
            let _ = self.control.send(RelayMessage::Media {
                channel,
                layer,
                link_seq,
                rtp: rtp.to_vec(),
            });
        }
    }
}

/// One media packet that arrived over a link, for the engine.
#[derive(Debug)]
pub struct RelayPacketIn {
    pub link: LinkId,
    pub channel: u32,
    pub layer: u8,
    /// The RTP packet (no SRTP: the link is encrypted).
    pub rtp: Bytes,
    pub arrival: Instant,
}

/// Commands from the relay to the engine.
pub enum RelayToEngine {
    /// A track published on another node of a room this node hosts members of.
    AddRemoteTrack {
        track: RelayTrack,
    },
    RemoveRemoteTrack {
        track: TrackId,
    },
    /// Packets of `track` now arrive on (`link`, `channel`); keyframe requests and NACKs go back
    /// through `link`.
    AttachUpstream {
        track: TrackId,
        link: std::sync::Arc<LinkTx>,
        channel: u32,
    },
    DetachUpstream {
        track: TrackId,
    },
    /// Serve `track` to a subscriber behind `link` on its `channel`.
    AddRelayLeg {
        track: TrackId,
        link: std::sync::Arc<LinkTx>,
        channel: u32,
        layers: LayerSet,
        reply: oneshot::Sender<bool>,
    },
    SetRelayLayers {
        link: LinkId,
        channel: u32,
        layers: LayerSet,
    },
    RemoveRelayLeg {
        link: LinkId,
        channel: u32,
    },
    /// The link is gone: drop its legs and detach the upstreams that came through it.
    LinkDown {
        link: LinkId,
    },
    KeyframeRequest {
        link: LinkId,
        channel: u32,
        layer: u8,
    },
    Nack {
        link: LinkId,
        channel: u32,
        layer: u8,
        seqs: Vec<u16>,
    },
    /// The negotiated codecs of a locally published track, for announcing it.
    TrackCodecs {
        track: TrackId,
        reply: oneshot::Sender<Vec<RelayCodec>>,
    },
}

/// What the engine tells the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineToRelay {
    /// The layers of a remote track that someone on this node (or behind it) wants; empty when
    /// nobody does any more.
    Demand { track: TrackId, layers: LayerSet },
    /// An upstream detached because its link went down: subscribe again elsewhere.
    UpstreamLost { track: TrackId },
}

/// Capacity of the relay → engine media queue; beyond it packets are dropped and counted.
pub const RELAY_MEDIA_QUEUE: usize = 8192;

/// The engine's ends of the relay bridge.
pub struct EngineRelayPorts {
    pub commands: mpsc::UnboundedReceiver<RelayToEngine>,
    pub media: mpsc::Receiver<RelayPacketIn>,
    pub demand: mpsc::UnboundedSender<EngineToRelay>,
}

/// The relay's ends of the bridge.
#[derive(Clone)]
pub struct RelayEnginePorts {
    pub commands: mpsc::UnboundedSender<RelayToEngine>,
    pub media: mpsc::Sender<RelayPacketIn>,
}

/// Creates the bridge: the engine's ports, the relay's ports, and the demand stream.
pub fn bridge() -> (
    EngineRelayPorts,
    RelayEnginePorts,
    mpsc::UnboundedReceiver<EngineToRelay>,
) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::channel(RELAY_MEDIA_QUEUE);
    let (demand_tx, demand_rx) = mpsc::unbounded_channel();
    (
        EngineRelayPorts {
            commands: cmd_rx,
            media: media_rx,
            demand: demand_tx,
        },
        RelayEnginePorts {
            commands: cmd_tx,
            media: media_tx,
        },
        demand_rx,
    )
}
