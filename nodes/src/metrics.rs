//! The node's Prometheus metrics (prometheus-client does the exposition). Labels stay
//! low-cardinality: no room, participant or address ever becomes a label; relay link metrics
//! are labelled by peer node id (a mesh has tens of nodes, not thousands).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Why a datagram on the media port was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropReason {
    pub reason: &'static str,
}

pub const DROP_UNKNOWN_SOURCE: DropReason = DropReason {
    reason: "unknown_source",
};
pub const DROP_GARBAGE: DropReason = DropReason { reason: "garbage" };
pub const DROP_SRTP: DropReason = DropReason { reason: "srtp" };
pub const DROP_SEND_FAILED: DropReason = DropReason {
    reason: "send_failed",
};

/// A relay link's peer node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// Why a relay connection or frame was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub reason: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Relay link metrics, per peer node.
pub struct RelayMetrics {
    media_bytes_sent: Family<PeerLabel, Counter>,
    media_bytes_received: Family<PeerLabel, Counter>,
    media_packets_sent: Family<PeerLabel, Counter>,
    media_packets_received: Family<PeerLabel, Counter>,
    media_dropped: Family<PeerLabel, Counter>,
    stream_fallbacks: Family<PeerLabel, Counter>,
    nacks_sent: Family<PeerLabel, Counter>,
    retransmits: Family<PeerLabel, Counter>,
    rtt: Family<PeerLabel, FloatGauge>,
    loss: Family<PeerLabel, FloatGauge>,
    receive_rate: Family<PeerLabel, FloatGauge>,
    link_up: Family<PeerLabel, Gauge>,
    connects: Family<PeerLabel, Counter>,
    /// Connections or frames refused (bad certificate, bad hello, malformed frame).
    pub refused: Family<RefusalLabel, Counter>,
}

/// One peer's relay counters, cloned out of the families so the packet path needs no lookup.
#[derive(Clone)]
pub struct RelayPeerMetrics {
    pub media_bytes_sent: Counter,
    pub media_bytes_received: Counter,
    pub media_packets_sent: Counter,
    pub media_packets_received: Counter,
    pub media_dropped: Counter,
    pub stream_fallbacks: Counter,
    pub nacks_sent: Counter,
    pub retransmits: Counter,
    pub rtt: FloatGauge,
    pub loss: FloatGauge,
    pub receive_rate: FloatGauge,
    pub link_up: Gauge,
    pub connects: Counter,
}

impl RelayMetrics {
    fn register(r: &mut Registry) -> Self {
        fn family<
            M: Default
                + prometheus_client::metrics::TypedMetric
                + prometheus_client::encoding::EncodeMetric
                + Clone
                + std::fmt::Debug
                + Send
                + Sync
                + 'static,
        >(
            r: &mut Registry,
            name: &str,
            help: &str,
        ) -> Family<PeerLabel, M> {
            let f = Family::<PeerLabel, M>::default();
            r.register(name, help, f.clone());
            f
        }
        let refused = Family::<RefusalLabel, Counter>::default();
        r.register(
            "kaskade_relay_refused",
            "Relay connections or frames refused, by reason",
            refused.clone(),
        );
        Self {
            media_bytes_sent: family(
                r,
                "kaskade_relay_media_bytes_sent",
                "RTP bytes sent to a peer node",
            ),
            media_bytes_received: family(
                r,
                "kaskade_relay_media_bytes_received",
                "RTP bytes received from a peer node",
            ),
            media_packets_sent: family(
                r,
                "kaskade_relay_media_packets_sent",
                "RTP packets sent to a peer node",
            ),
            media_packets_received: family(
                r,
                "kaskade_relay_media_packets_received",
                "RTP packets received from a peer node",
            ),
            media_dropped: family(
                r,
                "kaskade_relay_media_dropped",
                "Relay media packets dropped (queue full, link congested)",
            ),
            stream_fallbacks: family(
                r,
                "kaskade_relay_stream_fallbacks",
                "Packets too large for a datagram, sent on the stream",
            ),
            nacks_sent: family(
                r,
                "kaskade_relay_nacks_sent",
                "Sequence numbers NACKed upstream after relay loss",
            ),
            retransmits: family(
                r,
                "kaskade_relay_retransmits",
                "Packets resent to a peer from the packet cache",
            ),
            rtt: family(
                r,
                "kaskade_relay_rtt_seconds",
                "Smoothed round-trip time of the link",
            ),
            loss: family(
                r,
                "kaskade_relay_loss_ratio",
                "Media loss on the link from the peer, last interval",
            ),
            receive_rate: family(
                r,
                "kaskade_relay_receive_bits_per_second",
                "Media throughput from the peer, last interval",
            ),
            link_up: family(
                r,
                "kaskade_relay_link_up",
                "1 while the QUIC connection to the peer is up",
            ),
            connects: family(
                r,
                "kaskade_relay_connects",
                "QUIC connections established with the peer",
            ),
            refused,
        }
    }

    pub fn peer(&self, peer: &str) -> RelayPeerMetrics {
        let l = PeerLabel {
            peer: peer.to_owned(),
        };
        RelayPeerMetrics {
            media_bytes_sent: self.media_bytes_sent.get_or_create(&l).clone(),
            media_bytes_received: self.media_bytes_received.get_or_create(&l).clone(),
            media_packets_sent: self.media_packets_sent.get_or_create(&l).clone(),
            media_packets_received: self.media_packets_received.get_or_create(&l).clone(),
            media_dropped: self.media_dropped.get_or_create(&l).clone(),
            stream_fallbacks: self.stream_fallbacks.get_or_create(&l).clone(),
            nacks_sent: self.nacks_sent.get_or_create(&l).clone(),
            retransmits: self.retransmits.get_or_create(&l).clone(),
            rtt: self.rtt.get_or_create(&l).clone(),
            loss: self.loss.get_or_create(&l).clone(),
            receive_rate: self.receive_rate.get_or_create(&l).clone(),
            link_up: self.link_up.get_or_create(&l).clone(),
            connects: self.connects.get_or_create(&l).clone(),
        }
    }

    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabel { reason }).inc();
    }
}

pub struct Metrics {
    registry: Registry,
    pub relay: RelayMetrics,
    pub rooms: Gauge,
    pub participants: Gauge,
    pub tracks: Gauge,
    pub sessions: Gauge,
    pub packets_in: Counter,
    pub bytes_in: Counter,
    pub packets_out: Counter,
    pub bytes_out: Counter,
    pub nacks: Counter,
    pub retransmits: Counter,
    pub plis: Counter,
    pub keyframe_requests_sent: Counter,
    pub dropped_datagrams: Family<DropReason, Counter>,
    /// Arrival of a packet at the socket to its send to one subscriber, in seconds.
    pub forward_latency: Histogram,
    /// Subscriber sessions' bandwidth estimates (bit/s), sampled at each report to the client.
    pub bandwidth_estimate: Histogram,
    /// Simulcast layer changes made by bandwidth allocation.
    pub layer_changes: Counter,
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let metric = Counter::default();
    registry.register(name, help, metric.clone());
    metric
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let metric = Gauge::default();
    registry.register(name, help, metric.clone());
    metric
}

/// Latency buckets from 1 µs to 1 s, dense where the in-node targets are (30 µs / 200 µs) and
/// wide enough for a node queueing behind a large fan-out.
/// Bandwidth-estimate buckets, 100 kbit/s to 50 Mbit/s.
const ESTIMATE_BUCKETS: [f64; 12] = [
    1e5, 2e5, 3e5, 5e5, 7.5e5, 1e6, 1.5e6, 2e6, 3e6, 5e6, 1e7, 5e7,
];

const LATENCY_BUCKETS: [f64; 20] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2,
    1e-1, 2e-1, 5e-1, 1.0,
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut r = Registry::default();
        let dropped_datagrams = Family::<DropReason, Counter>::default();
        r.register(
            "kaskade_dropped_datagrams",
            "Datagrams dropped on the media port, by reason",
            dropped_datagrams.clone(),
        );
        let relay = RelayMetrics::register(&mut r);
        let forward_latency = Histogram::new(LATENCY_BUCKETS);
        r.register(
            "kaskade_forward_latency_seconds",
            "In-node forwarding latency: packet arrival to its send to one subscriber",
            forward_latency.clone(),
        );
        let bandwidth_estimate = Histogram::new(ESTIMATE_BUCKETS);
        r.register(
            "kaskade_bandwidth_estimate_bits_per_second",
            "Subscriber sessions' send-side bandwidth estimates, sampled when reported",
            bandwidth_estimate.clone(),
        );
        Arc::new(Metrics {
            rooms: gauge(&mut r, "kaskade_rooms", "Rooms on this node"),
            participants: gauge(
                &mut r,
                "kaskade_participants",
                "Participants (signalling, WHIP and WHEP sessions) on this node",
            ),
            tracks: gauge(&mut r, "kaskade_tracks", "Published tracks"),
            sessions: gauge(
                &mut r,
                "kaskade_peer_sessions",
                "Peer connections held by the media engine",
            ),
            packets_in: counter(
                &mut r,
                "kaskade_packets_in",
                "RTP packets received from publishers",
            ),
            bytes_in: counter(
                &mut r,
                "kaskade_bytes_in",
                "Bytes of datagrams received on the media port",
            ),
            packets_out: counter(
                &mut r,
                "kaskade_packets_out",
                "Datagrams sent on the media port",
            ),
            bytes_out: counter(
                &mut r,
                "kaskade_bytes_out",
                "Bytes of datagrams sent on the media port",
            ),
            nacks: counter(&mut r, "kaskade_nacks", "NACK requests received"),
            retransmits: counter(
                &mut r,
                "kaskade_retransmits",
                "Packets retransmitted from the packet cache",
            ),
            plis: counter(
                &mut r,
                "kaskade_plis",
                "Keyframe requests (PLI/FIR) received from subscribers",
            ),
            keyframe_requests_sent: counter(
                &mut r,
                "kaskade_keyframe_requests_sent",
                "Keyframe requests sent to publishers after throttling",
            ),
            dropped_datagrams,
            forward_latency,
            bandwidth_estimate,
            layer_changes: counter(
                &mut r,
                "kaskade_layer_changes",
                "Simulcast layer changes made by subscribers' bandwidth allocation",
            ),
            relay,
            registry: r,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_documented_metrics() {
        let m = Metrics::new();
        m.dropped_datagrams.get_or_create(&DROP_GARBAGE).inc();
        m.forward_latency.observe(12e-6);
        let peer = m.relay.peer("n3");
        peer.media_bytes_sent.inc_by(1200);
        peer.rtt.set(0.05);
        m.relay.refuse("tls");
        let text = m.encode();
        for name in [
            "kaskade_rooms ",
            "kaskade_packets_in_total ",
            "kaskade_dropped_datagrams_total{reason=\"garbage\"} 1",
            "kaskade_forward_latency_seconds_bucket",
            "kaskade_forward_latency_seconds_count 1",
            "kaskade_relay_media_bytes_sent_total{peer=\"n3\"} 1200",
            "kaskade_relay_rtt_seconds{peer=\"n3\"} 0.05",
            "kaskade_relay_refused_total{reason=\"tls\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
