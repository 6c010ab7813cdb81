//! The node's place in the mesh's control plane: its registration (lease, load, draining flag),
//! the live-node view it reads placement and alternates from, the join gate (placement and
//! resume), the room shares it keeps in the control plane and the maintenance drain. It talks to
//! the control plane through the `ControlPlane` trait only, so the same code runs on the memory
//! backend (single node, static peers) and on etcd.

pub mod drain;
pub mod gate;
pub mod load;
pub mod registration;
pub mod resume;
pub mod room_shares;

use crate::config::SiteDistance;
use kaskade_control::any::AnyControlPlane;
use kaskade_control::placement::{accepts_placements, sites_by_distance};
use kaskade_control::{ControlPlane, Lease, NodeRecord, NodeView};
use kaskade_mesh::RoomDirectory;
use resume::ResumeKeys;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

/// How many more sessions than the site's least-loaded node the entry node may hold and still
/// take a join itself: loads are sampled once per keep-alive, so without slack a burst of joins
/// would all be sent to the node that looked emptiest a second ago.
pub const PLACEMENT_SLACK_SESSIONS: u64 = 8;
/// Most alternates a client is given.
pub const MAX_ALTERNATES: usize = 4;

/// This node as a member of the mesh.
pub struct Cluster {
    pub control: Arc<AnyControlPlane>,
    pub node: String,
    pub site: String,
    pub rooms: Arc<RoomDirectory>,
    record: Mutex<NodeRecord>,
    lease: Mutex<Option<Lease>>,
    draining: AtomicBool,
    /// Set when a drain starts, so the registration loop publishes the flag at once.
    pub changed: Notify,
    distances: Vec<SiteDistance>,
    resume: ResumeKeys,
    view: watch::Receiver<NodeView>,
    /// Drains, resumed sessions and the control plane's state are counted here.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Cluster {
    pub fn new(
        control: Arc<AnyControlPlane>,
        record: NodeRecord,
        rooms: Arc<RoomDirectory>,
        distances: Vec<SiteDistance>,
        resume_secret: &[u8],
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let view = control.watch_nodes();
        Arc::new(Self {
            node: record.id.clone(),
            site: record.site.clone(),
            control,
            rooms,
            record: Mutex::new(record),
            lease: Mutex::new(None),
            draining: AtomicBool::new(false),
            changed: Notify::new(),
            distances,
            resume: ResumeKeys::new(resume_secret),
            view,
            metrics,
        })
    }

    pub fn record(&self) -> NodeRecord {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update_record(&self, f: impl FnOnce(&mut NodeRecord)) -> NodeRecord {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut r);
        r.clone()
    }

    pub fn lease(&self) -> Option<Lease> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_lease(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Marks the node draining; true if it was not already.
    pub fn set_draining(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::SeqCst);
        self.update_record(|r| r.draining = true);
        self.changed.notify_one();
        first
    }

    /// A receiver of the control plane's live-node view.
    pub fn control_view(&self) -> watch::Receiver<NodeView> {
        self.view.clone()
    }

    /// The live nodes as the control plane last told.
    pub fn view(&self) -> NodeView {
        self.view.borrow().clone()
    }

    fn distance(&self, a: &str, b: &str) -> Option<u32> {
        self.distances
            .iter()
            .find(|d| (d.a == a && d.b == b) || (d.a == b && d.b == a))
            .map(|d| d.distance)
    }

    /// Sites in order of preference for a participant of `home`.
    pub fn sites_for(&self, home: &str, view: &NodeView) -> Vec<String> {
        let known = view.nodes.values().map(|n| n.site.clone()).chain(
            self.distances
                .iter()
                .flat_map(|d| [d.a.clone(), d.b.clone()]),
        );
        sites_by_distance(home, known, |a, b| self.distance(a, b))
    }

    /// WebSocket URLs of other live, non-draining nodes with a web endpoint: this site's first,
    /// then the nearest sites'.
    pub fn alternates(&self) -> Vec<String> {
        let view = self.view();
        let sites = self.sites_for(&self.site, &view);
        let mut out = Vec::new();
        for site in &sites {
            let mut nodes: Vec<&NodeRecord> = view
                .nodes
                .values()
                .filter(|n| &n.site == site && n.id != self.node && accepts_placements(n))
                .filter(|n| !n.http_url.is_empty())
                .collect();
            nodes.sort_by_key(|n| (n.load.sessions, n.id.clone()));
            out.extend(nodes.into_iter().map(|n| ws_url(&n.http_url)));
        }
        out.truncate(MAX_ALTERNATES);
        out
    }
}

/// The signalling WebSocket URL of a node whose web endpoint is `http_url`.
pub fn ws_url(http_url: &str) -> String {
    let base = http_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{base}/ws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_http_scheme() {
        assert_eq!(ws_url("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("https://meet.example/"), "wss://meet.example/ws");
    }
}
