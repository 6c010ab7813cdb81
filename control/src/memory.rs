//! `MemoryControlPlane`: the single-process backend. Leases expire by an injected clock, so the
//! behaviour is the same as a remote backend's and tests control time instead of sleeping.
//!
//! Registrations, placements and room shares live in memory only. Durable records and the mesh
//! secret live in a `RecordStore` (`memory/store.rs`): in memory too by default, or kept in a file
//! ([`MemoryControlPlane::persistent`]) so they survive a restart of the node.

mod store;

use crate::placement::{accepts_placements, choose_node};
use crate::records::{Expect, Record};
use crate::{ControlError, ControlPlane, Lease, NodeRecord, NodeView, RoomShare};
use kaskade_proto::RoomName;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::RecordStore;
use tokio::sync::watch;

/// Where the backend reads the time.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

struct Registration {
    lease: Lease,
    node: NodeRecord,
    expires: Instant,
}

#[derive(Default)]
struct State {
    next_lease: u64,
    nodes: BTreeMap<String, Registration>,
    /// Nodes given by configuration (`--peer`): always taken as live, never expire.
    static_nodes: BTreeMap<String, NodeRecord>,
    /// (room, site of the participants) -> (node, the lease it had when placed; `None` for a
    /// static node). A placement dies with that lease.
    placements: BTreeMap<(RoomName, String), (String, Option<u64>)>,
    /// room -> node -> (lease, share).
    shares: BTreeMap<RoomName, BTreeMap<String, (u64, RoomShare)>>,
}

pub struct MemoryControlPlane {
    clock: Clock,
    state: Mutex<State>,
    view: watch::Sender<NodeView>,
    /// Durable records; its own lock, so a file write never holds up node registrations.
    records: Mutex<RecordStore>,
    secret: [u8; 32],
}

impl Default for MemoryControlPlane {
    fn default() -> Self {
        Self::with_clock(Arc::new(Instant::now))
    }
}

impl MemoryControlPlane {
    /// A backend reading the time from `clock`, whose records and secret last as long as it.
    pub fn with_clock(clock: Clock) -> Self {
        Self::with_store(clock, RecordStore::in_memory())
    }

    /// A backend whose durable records and mesh secret are kept in the file at `path` (see
    /// `memory/store.rs` for the format): loaded from it when it exists, else a new secret is
    /// made and the file created. Every record change rewrites the file (temporary file with
    /// mode 0600, fsync, rename) before it returns. Fails with [`ControlError::Malformed`] when
    /// the file is corrupt, [`ControlError::Unavailable`] when it cannot be read or written.
    pub fn persistent(path: PathBuf) -> Result<Self, ControlError> {
        Self::persistent_with_clock(path, Arc::new(Instant::now))
    }

    /// [`persistent`](Self::persistent) with the time read from `clock`.
    pub fn persistent_with_clock(path: PathBuf, clock: Clock) -> Result<Self, ControlError> {
        Ok(Self::with_store(clock, RecordStore::persistent(path)?))
    }

    fn with_store(clock: Clock, records: RecordStore) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
            view: watch::Sender::new(NodeView {
                nodes: BTreeMap::new(),
                reachable: true,
            }),
            secret: records.secret(),
            records: Mutex::new(records),
        }
    }

    /// Adds a node known from configuration rather than registration (static membership). It
    /// counts as live for as long as this backend exists; a registration of the same id wins.
    pub fn add_static_node(&self, node: NodeRecord) {
        let mut state = self.lock();
        state.static_nodes.insert(node.id.clone(), node);
        self.publish_view(&state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn records(&self) -> std::sync::MutexGuard<'_, RecordStore> {
        // Every change undoes itself before returning an error, so a poisoned store is whole.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(state: &State, now: Instant) -> impl Iterator<Item = &NodeRecord> + Clone {
        let registered = state
            .nodes
            .values()
            .filter(move |r| r.expires > now)
            .map(|r| &r.node);
        let configured = state
            .static_nodes
            .values()
            .filter(|n| !state.nodes.contains_key(&n.id));
        registered.chain(configured)
    }

    fn live_lease(state: &State, lease: u64, now: Instant) -> bool {
        state
            .nodes
            .values()
            .any(|r| r.lease.id == lease && r.expires > now)
    }

    /// Tells watchers the current live set (expiry is noticed at the next operation).
    fn publish_view(&self, state: &State) {
        let now = (self.clock)();
        let nodes = Self::live(state, now)
            .map(|n| (n.id.clone(), n.clone()))
            .collect();
        self.view.send_if_modified(|view| {
            if view.nodes == nodes {
                return false;
            }
            view.nodes = nodes;
            true
        });
    }
}

impl ControlPlane for MemoryControlPlane {
    async fn register_node(&self, node: NodeRecord, ttl: Duration) -> Result<Lease, ControlError> {
        let now = (self.clock)();
        let mut state = self.lock();
        state.next_lease += 1;
        let lease = Lease {
            id: state.next_lease,
            ttl,
        };
        state.nodes.insert(
            node.id.clone(),
            Registration {
                lease: lease.clone(),
                node,
                expires: now + ttl,
            },
        );
        self.publish_view(&state);
        Ok(lease)
    }

    async fn keep_alive(&self, lease: &Lease, node: NodeRecord) -> Result<(), ControlError> {
        let now = (self.clock)();
        let mut state = self.lock();
        let result = match state.nodes.get_mut(&node.id) {
            Some(r) if r.lease.id == lease.id && r.expires > now => {
                r.expires = now + r.lease.ttl;
                r.node = node;
                Ok(())
            }
            _ => Err(ControlError::LeaseExpired(lease.id)),
        };
        self.publish_view(&state);
        result
    }

    async fn revoke_lease(&self, lease: &Lease) -> Result<(), ControlError> {
        let mut state = self.lock();
        state.nodes.retain(|_, r| r.lease.id != lease.id);
        state
            .placements
            .retain(|_, (_, placed_under)| *placed_under != Some(lease.id));
        for shares in state.shares.values_mut() {
            shares.retain(|_, (published_under, _)| *published_under != lease.id);
        }
        state.shares.retain(|_, shares| !shares.is_empty());
        self.publish_view(&state);
        Ok(())
    }

    async fn live_nodes(&self) -> Result<Vec<NodeRecord>, ControlError> {
        let now = (self.clock)();
        let state = self.lock();
        self.publish_view(&state);
        Ok(Self::live(&state, now).cloned().collect())
    }

    fn watch_nodes(&self) -> watch::Receiver<NodeView> {
        self.view.subscribe()
    }

    async fn place_room(
        &self,
        room: &RoomName,
        sites: &[String],
    ) -> Result<NodeRecord, ControlError> {
        let now = (self.clock)();
        let mut state = self.lock();
        let home = sites.first().cloned().unwrap_or_default();
        let key = (room.clone(), home);
        let lease_of = |state: &State, id: &str| state.nodes.get(id).map(|r| r.lease.id);
        if let Some(node) = state
            .placements
            .get(&key)
            .filter(|(id, lease)| lease_of(&state, id) == *lease)
            .and_then(|(id, _)| Self::live(&state, now).find(|n| &n.id == id))
            .filter(|n| accepts_placements(n))
        {
            return Ok(node.clone());
        }
        let pick = choose_node(Self::live(&state, now), sites)
            .cloned()
            .ok_or_else(|| ControlError::NoNodeAvailable(room.to_string()))?;
        let lease = lease_of(&state, &pick.id);
        state.placements.insert(key, (pick.id.clone(), lease));
        Ok(pick)
    }

    async fn release_room(&self, room: &RoomName, node: &str) -> Result<(), ControlError> {
        let mut state = self.lock();
        state
            .placements
            .retain(|(r, _), (n, _)| !(r == room && n == node));
        Ok(())
    }

    async fn publish_room_share(
        &self,
        lease: &Lease,
        room: &RoomName,
        share: RoomShare,
    ) -> Result<(), ControlError> {
        let now = (self.clock)();
        let mut state = self.lock();
        if !Self::live_lease(&state, lease.id, now) {
            return Err(ControlError::LeaseExpired(lease.id));
        }
        state
            .shares
            .entry(room.clone())
            .or_default()
            .insert(share.node.clone(), (lease.id, share));
        Ok(())
    }

    async fn withdraw_room_share(&self, room: &RoomName, node: &str) -> Result<(), ControlError> {
        let mut state = self.lock();
        if let Some(shares) = state.shares.get_mut(room) {
            shares.remove(node);
            if shares.is_empty() {
                state.shares.remove(room);
            }
        }
        Ok(())
    }

    async fn mesh_secret(&self) -> Result<Vec<u8>, ControlError> {
        Ok(self.secret.to_vec())
    }

    async fn room_shares(&self, room: &RoomName) -> Result<Vec<RoomShare>, ControlError> {
        let now = (self.clock)();
        let state = self.lock();
        Ok(state
            .shares
            .get(room)
            .map(|shares| {
                shares
                    .values()
                    .filter(|(lease, _)| Self::live_lease(&state, *lease, now))
                    .map(|(_, share)| share.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn all_room_shares(&self) -> Result<Vec<(RoomName, RoomShare)>, ControlError> {
        let now = (self.clock)();
        let state = self.lock();
        let mut all: Vec<(RoomName, RoomShare)> = state
            .shares
            .iter()
            .flat_map(|(room, shares)| {
                shares
                    .values()
                    .filter(|(lease, _)| Self::live_lease(&state, *lease, now))
                    .map(|(_, share)| (room.clone(), share.clone()))
            })
            .collect();
        all.sort_by(|a, b| (a.0.as_str(), &a.1.node).cmp(&(b.0.as_str(), &b.1.node)));
        Ok(all)
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, ControlError> {
        self.records().get(key)
    }

    async fn put_record(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<u64, ControlError> {
        self.records().put(key, value, expect)
    }

    async fn delete_record(&self, key: &str, expect: Expect) -> Result<bool, ControlError> {
        self.records().delete(key, expect)
    }

    async fn list_records(&self, prefix: &str) -> Result<Vec<Record>, ControlError> {
        self.records().list(prefix)
    }

    async fn delete_records(&self, prefix: &str) -> Result<u64, ControlError> {
        self.records().delete_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock that only moves when the test says so.
    fn manual_clock() -> (Clock, Arc<AtomicU64>) {
        let start = Instant::now();
        let millis = Arc::new(AtomicU64::new(0));
        let m = millis.clone();
        (
            Arc::new(move || start + Duration::from_millis(m.load(Ordering::SeqCst))),
            millis,
        )
    }

    fn node(id: &str, site: &str, sessions: u64) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            site: site.into(),
            http_url: format!("http://{id}"),
            media_addr: "127.0.0.1:7000".into(),
            relay_addr: String::new(),
            load: crate::NodeLoad {
                sessions,
                ..Default::default()
            },
            draining: false,
            links: Vec::new(),
        }
    }

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn leases_expire_unless_kept_alive() {
        let (clock, millis) = manual_clock();
        let cp = MemoryControlPlane::with_clock(clock);
        block(async {
            let lease = cp
                .register_node(node("n1", "a", 0), Duration::from_secs(3))
                .await
                .unwrap();
            cp.register_node(node("n2", "a", 0), Duration::from_secs(3))
                .await
                .unwrap();
            millis.store(2_000, Ordering::SeqCst);
            cp.keep_alive(&lease, node("n1", "a", 5)).await.unwrap();
            millis.store(4_000, Ordering::SeqCst);
            let live = cp.live_nodes().await.unwrap();
            assert_eq!(live.len(), 1);
            assert_eq!(live[0].load.sessions, 5);
            millis.store(6_000, Ordering::SeqCst);
            assert!(cp.live_nodes().await.unwrap().is_empty());
            assert_eq!(
                cp.keep_alive(&lease, node("n1", "a", 5)).await,
                Err(ControlError::LeaseExpired(lease.id))
            );
        });
    }

    #[test]
    fn rooms_go_to_the_least_loaded_node_of_the_site_and_stay_there() {
        let (clock, _) = manual_clock();
        let cp = MemoryControlPlane::with_clock(clock);
        let room = RoomName::parse("class").unwrap();
        block(async {
            let ttl = Duration::from_secs(3);
            cp.register_node(node("a1", "a", 9), ttl).await.unwrap();
            cp.register_node(node("a2", "a", 2), ttl).await.unwrap();
            cp.register_node(node("b1", "b", 0), ttl).await.unwrap();
            assert_eq!(
                cp.place_room(&room, &["a".to_string()]).await.unwrap().id,
                "a2"
            );
            // Sticky even when loads change.
            cp.register_node(node("a3", "a", 0), ttl).await.unwrap();
            assert_eq!(
                cp.place_room(&room, &["a".to_string()]).await.unwrap().id,
                "a2"
            );
            cp.release_room(&room, "a2").await.unwrap();
            assert_eq!(
                cp.place_room(&room, &["a".to_string()]).await.unwrap().id,
                "a3"
            );
            // A site with no node falls back to another site.
            let other = RoomName::parse("other").unwrap();
            assert_eq!(
                cp.place_room(&other, &["c".to_string(), "a".to_string()])
                    .await
                    .unwrap()
                    .id,
                "a3"
            );
        });
    }

    #[test]
    fn placement_moves_off_dead_and_draining_nodes() {
        let (clock, millis) = manual_clock();
        let cp = MemoryControlPlane::with_clock(clock);
        let room = RoomName::parse("r").unwrap();
        block(async {
            let l1 = cp
                .register_node(node("n1", "a", 0), Duration::from_secs(1))
                .await
                .unwrap();
            let _ = l1;
            let mut draining = node("n2", "a", 0);
            draining.draining = true;
            cp.register_node(draining, Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(
                cp.place_room(&room, &["a".to_string()]).await.unwrap().id,
                "n1"
            );
            millis.store(2_000, Ordering::SeqCst);
            assert_eq!(
                cp.place_room(&room, &["a".to_string()]).await,
                Err(ControlError::NoNodeAvailable("r".into()))
            );
            cp.register_node(node("n3", "a", 0), Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(
                cp.place_room(&room, &["a".to_string()]).await.unwrap().id,
                "n3"
            );
        });
    }

    #[test]
    fn revoking_a_lease_drops_its_node_placements_and_shares_at_once() {
        let (clock, _) = manual_clock();
        let cp = MemoryControlPlane::with_clock(clock);
        let room = RoomName::parse("r").unwrap();
        block(async {
            let ttl = Duration::from_secs(60);
            let l1 = cp.register_node(node("n1", "a", 0), ttl).await.unwrap();
            let l2 = cp.register_node(node("n2", "a", 5), ttl).await.unwrap();
            let share = |n: &str| RoomShare {
                node: n.into(),
                participants: vec![],
                tracks: vec![],
            };
            cp.publish_room_share(&l1, &room, share("n1"))
                .await
                .unwrap();
            cp.publish_room_share(&l2, &room, share("n2"))
                .await
                .unwrap();
            assert_eq!(cp.place_room(&room, &["a".into()]).await.unwrap().id, "n1");
            let view = cp.watch_nodes();
            cp.revoke_lease(&l1).await.unwrap();
            assert_eq!(view.borrow().nodes.keys().collect::<Vec<_>>(), ["n2"]);
            assert_eq!(cp.room_shares(&room).await.unwrap(), [share("n2")]);
            assert_eq!(cp.place_room(&room, &["a".into()]).await.unwrap().id, "n2");
            assert_eq!(
                cp.keep_alive(&l1, node("n1", "a", 0)).await,
                Err(ControlError::LeaseExpired(l1.id))
            );
            // Already gone: still fine.
            cp.revoke_lease(&l1).await.unwrap();
        });
    }

    #[tokio::test]
    async fn static_nodes_are_live_and_registration_wins() {
        let cp = MemoryControlPlane::default();
        cp.add_static_node(node("n2", "b", 0));
        let live = cp.live_nodes().await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].site, "b");
        cp.register_node(node("n2", "c", 0), Duration::from_secs(3))
            .await
            .unwrap();
        let live = cp.live_nodes().await.unwrap();
        assert_eq!(live.len(), 1, "one record per node id");
        assert_eq!(live[0].site, "c");
    }
}
