//! The node's Prometheus metrics (prometheus-client does the exposition): media counters here,
//! relay links in [`relay`], control plane / failover / drain in [`mesh`], the process in
//! [`process`], forwarding latency in [`latency`]. Labels stay low-cardinality: no room,
//! participant or address ever becomes a label; relay link metrics are labelled by peer node
//! and its site (a mesh has tens of nodes, not thousands).

pub mod latency;
pub mod mesh;
pub mod process;
pub mod relay;

pub use latency::ForwardLatency;
pub use mesh::{FailoverKind, MeshMetrics};
pub use process::ProcessMetrics;
pub use relay::{RelayMetrics, RelayPeerMetrics};

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

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub relay: RelayMetrics,
    pub mesh: MeshMetrics,
    pub process: ProcessMetrics,
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
    pub forward_latency: ForwardLatency,
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

/// Bandwidth-estimate buckets, 100 kbit/s to 50 Mbit/s.
const ESTIMATE_BUCKETS: [f64; 12] = [
    1e5, 2e5, 3e5, 5e5, 7.5e5, 1e6, 1.5e6, 2e6, 3e6, 5e6, 1e7, 5e7,
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
        let mesh = MeshMetrics::register(&mut r);
        let process = ProcessMetrics::register(&mut r);
        let forward_latency = ForwardLatency::new();
        r.register(
            "kaskade_forward_latency_seconds",
            "In-node forwarding latency: packet arrival to its send to one subscriber",
            forward_latency.histogram.clone(),
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
            mesh,
            process,
            registry: r,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.process.refresh();
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
        let peer = m.relay.peer("n3", "b");
        peer.media_bytes_sent.inc_by(1200);
        peer.rtt.set(0.05);
        m.relay.refuse("tls");
        let text = m.encode();
        let links = m.relay.links();
        assert_eq!(links.len(), 1);
        assert_eq!(
            (links[0].peer.as_str(), links[0].peer_site.as_str()),
            ("n3", "b")
        );
        assert_eq!(links[0].rtt_us, 50_000);
        m.relay.forget("n3");
        assert!(m.relay.links().is_empty());
        assert!(
            !m.encode().contains("peer=\"n3\""),
            "a node that left has no series"
        );
        for name in [
            "kaskade_rooms ",
            "kaskade_packets_in_total ",
            "kaskade_dropped_datagrams_total{reason=\"garbage\"} 1",
            "kaskade_forward_latency_seconds_bucket",
            "kaskade_forward_latency_seconds_count 1",
            "kaskade_relay_media_bytes_sent_total{peer=\"n3\",peer_site=\"b\"} 1200",
            "kaskade_relay_rtt_seconds{peer=\"n3\",peer_site=\"b\"} 0.05",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "kaskade_control_plane_reachable ",
            "kaskade_failover_events_total{kind=\"peer_lost\"} 0",
            "kaskade_relay_refused_total{reason=\"tls\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
