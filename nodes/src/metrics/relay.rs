//! Relay link metrics: per peer node (labels `peer`, `peer_site`; a mesh has tens of nodes, not
//! thousands), refusals by reason, and the link reports a node publishes in its registry record
//! so any node can draw the whole mesh.

use super::FloatGauge;
use kaskade_control::LinkReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A relay link's peer node and its site.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
    pub peer_site: String,
}

/// Why a relay connection or frame was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub reason: &'static str,
}

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
    /// The peers seen so far, for the link reports in the registry.
    known: Mutex<BTreeMap<String, (String, RelayPeerMetrics)>>,
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
    pub(super) fn register(r: &mut Registry) -> Self {
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
            known: Mutex::default(),
        }
    }

    /// The counters of the link to `peer` (in `site`), created on first use.
    pub fn peer(&self, peer: &str, site: &str) -> RelayPeerMetrics {
        let l = PeerLabel {
            peer: peer.to_owned(),
            peer_site: site.to_owned(),
        };
        let metrics = RelayPeerMetrics {
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
        };
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.to_owned(), (site.to_owned(), metrics.clone()));
        metrics
    }

    /// Drops the series of `peer`, a node that left the mesh: its link is no longer expected.
    pub fn forget(&self, peer: &str) {
        let Some((site, _)) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer)
        else {
            return;
        };
        let l = PeerLabel {
            peer: peer.to_owned(),
            peer_site: site,
        };
        self.media_bytes_sent.remove(&l);
        self.media_bytes_received.remove(&l);
        self.media_packets_sent.remove(&l);
        self.media_packets_received.remove(&l);
        self.media_dropped.remove(&l);
        self.stream_fallbacks.remove(&l);
        self.nacks_sent.remove(&l);
        self.retransmits.remove(&l);
        self.rtt.remove(&l);
        self.loss.remove(&l);
        self.receive_rate.remove(&l);
        self.link_up.remove(&l);
        self.connects.remove(&l);
    }

    /// The state of every relay link this node has had, as it reports them in the registry.
    pub fn links(&self) -> Vec<LinkReport> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .iter()
            .map(|(peer, (site, m))| LinkReport {
                peer: peer.clone(),
                peer_site: site.clone(),
                up: m.link_up.get() > 0,
                rtt_us: (m.rtt.get().max(0.0) * 1e6) as u64,
                loss_ppm: (m.loss.get().clamp(0.0, 1.0) * 1e6) as u32,
                receive_bps: m.receive_rate.get().max(0.0) as u64,
            })
            .collect()
    }

    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabel { reason }).inc();
    }
}
