//! What operators alert on besides media: the node's identity and capacity, its view of the
//! control plane (reachable, lease held, errors, registrations), live nodes per site as the
//! registry shows them, failover events and drains. Labels: `node`/`site`/`version` on the info
//! metric only, `site` and `kind` elsewhere — all bounded by the mesh's size, never by users.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeInfoLabels {
    node: String,
    site: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// What a failover event was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverKind {
    /// A peer node's relay link stayed down past the grace period (or it left the registry):
    /// its part of the rooms was removed and subscriptions re-routed.
    PeerLost,
    /// A participant from another (failed or draining) node resumed its session here.
    SessionResumed,
    /// A subscription was moved to another upstream node.
    SubscriptionRerouted,
}

impl FailoverKind {
    const ALL: [FailoverKind; 3] = [
        FailoverKind::PeerLost,
        FailoverKind::SessionResumed,
        FailoverKind::SubscriptionRerouted,
    ];

    fn label(self) -> &'static str {
        match self {
            FailoverKind::PeerLost => "peer_lost",
            FailoverKind::SessionResumed => "session_resumed",
            FailoverKind::SubscriptionRerouted => "subscription_rerouted",
        }
    }
}

pub struct MeshMetrics {
    node_info: Family<NodeInfoLabels, Gauge>,
    pub capacity_sessions: Gauge,
    failovers: Family<KindLabel, Counter>,
    pub drains: Counter,
    pub draining: Gauge,
    pub drain_rooms_moved: Counter,
    pub control_plane_reachable: Gauge,
    pub control_plane_lease_held: Gauge,
    pub control_plane_errors: Counter,
    pub control_plane_registrations: Counter,
    live_nodes: Family<SiteLabel, Gauge>,
    sites_seen: Mutex<BTreeSet<String>>,
}

impl MeshMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let m = Self {
            node_info: Family::default(),
            capacity_sessions: Gauge::default(),
            failovers: Family::default(),
            drains: Counter::default(),
            draining: Gauge::default(),
            drain_rooms_moved: Counter::default(),
            control_plane_reachable: Gauge::default(),
            control_plane_lease_held: Gauge::default(),
            control_plane_errors: Counter::default(),
            control_plane_registrations: Counter::default(),
            live_nodes: Family::default(),
            sites_seen: Mutex::default(),
        };
        r.register(
            "kaskade_node_info",
            "Always 1; labels name this node, its site and its version",
            m.node_info.clone(),
        );
        r.register(
            "kaskade_capacity_sessions",
            "Sessions this node is sized for (--capacity-sessions; 0 when not set)",
            m.capacity_sessions.clone(),
        );
        r.register(
            "kaskade_failover_events",
            "Failover events: peer node lost, session resumed here, subscription re-routed",
            m.failovers.clone(),
        );
        r.register(
            "kaskade_drains",
            "Drains this node started",
            m.drains.clone(),
        );
        r.register(
            "kaskade_draining",
            "1 while this node drains",
            m.draining.clone(),
        );
        r.register(
            "kaskade_drain_rooms_moved",
            "Rooms whose participants a drain sent to another node",
            m.drain_rooms_moved.clone(),
        );
        r.register(
            "kaskade_control_plane_reachable",
            "1 while the control plane (etcd or the in-memory store) answers",
            m.control_plane_reachable.clone(),
        );
        r.register(
            "kaskade_control_plane_lease_held",
            "1 while this node holds its registration lease",
            m.control_plane_lease_held.clone(),
        );
        r.register(
            "kaskade_control_plane_errors",
            "Failed control-plane operations of the registration loop",
            m.control_plane_errors.clone(),
        );
        r.register(
            "kaskade_control_plane_registrations",
            "Registrations under a new lease (1 at start; more after a lost lease)",
            m.control_plane_registrations.clone(),
        );
        r.register(
            "kaskade_mesh_live_nodes",
            "Live nodes per site in the registry, as this node sees it (0 once a site is gone)",
            m.live_nodes.clone(),
        );
        for kind in FailoverKind::ALL {
            let _ = m.failovers.get_or_create(&KindLabel { kind: kind.label() });
        }
        m
    }

    /// Names this node in `kaskade_node_info`.
    pub fn set_identity(&self, node: &str, site: &str) {
        self.node_info
            .get_or_create(&NodeInfoLabels {
                node: node.to_owned(),
                site: site.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
    }

    pub fn failover(&self, kind: FailoverKind) {
        self.failovers
            .get_or_create(&KindLabel { kind: kind.label() })
            .inc();
    }

    /// Every site this node has seen in the registry since it started.
    pub fn sites_seen(&self) -> Vec<String> {
        let seen = self.sites_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().cloned().collect()
    }

    /// Sets the live nodes per site; sites seen before and absent now drop to 0 (a vanished
    /// series could not fire a "site down" alert).
    pub fn set_live_nodes<'a>(&self, sites: impl IntoIterator<Item = &'a str>) {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for site in sites {
            *counts.entry(site).or_default() += 1;
        }
        let mut known = self.sites_seen.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(counts.keys().map(|s| s.to_string()));
        for site in known.iter() {
            let n = counts.get(site.as_str()).copied().unwrap_or(0);
            self.live_nodes
                .get_or_create(&SiteLabel { site: site.clone() })
                .set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(m: &MeshMetrics, r: &Registry) -> String {
        let _ = m;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, r).unwrap();
        text
    }

    #[test]
    fn a_site_that_vanishes_stays_listed_at_zero() {
        let mut r = Registry::default();
        let m = MeshMetrics::register(&mut r);
        m.set_live_nodes(["a", "a", "b"]);
        let text = exposition(&m, &r);
        assert!(
            text.contains("kaskade_mesh_live_nodes{site=\"a\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("kaskade_mesh_live_nodes{site=\"b\"} 1"),
            "{text}"
        );
        m.set_live_nodes(["a"]);
        let text = exposition(&m, &r);
        assert!(
            text.contains("kaskade_mesh_live_nodes{site=\"a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kaskade_mesh_live_nodes{site=\"b\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn every_failover_kind_is_exposed_from_the_start() {
        let mut r = Registry::default();
        let m = MeshMetrics::register(&mut r);
        m.failover(FailoverKind::PeerLost);
        let text = exposition(&m, &r);
        assert!(
            text.contains("kaskade_failover_events_total{kind=\"peer_lost\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kaskade_failover_events_total{kind=\"session_resumed\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("kaskade_failover_events_total{kind=\"subscription_rerouted\"} 0"),
            "{text}"
        );
    }
}
