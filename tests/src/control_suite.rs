//! Owns: the control-plane behaviour suite — scenarios written once against the
//! [`ControlPlane`] trait and run against every backend through a [`Backend`] fixture
//! ([`MemoryBackend`]: manual clock; [`EtcdBackend`]: a real etcd from [`EtcdProcess`]), so the
//! backends are held to the same observable behaviour. `tests/tests/control_behaviour.rs` runs
//! one test per (scenario × backend); the `etcd_*` scenarios cover what only a remote store has
//! (outages, foreign data in the store).
//!
//! Time: leases the test lets run out use [`SHORT`]; leases that must outlive the test use
//! [`LONG`]. Expiry is never slept for: the memory fixture moves its clock, the etcd fixture waits
//! (with a deadline) until its node view drops the node.

use crate::etcd::EtcdProcess;
use kaskade_control::etcd::{EtcdControlPlane, EtcdOptions};
use kaskade_control::memory::{Clock, MemoryControlPlane};
use kaskade_control::{
    ControlError, ControlPlane, Lease, NodeLoad, NodeRecord, NodeView, RoomShare,
};
use kaskade_proto::signal::{MediaKind, ParticipantInfo, TrackInfo, TrackSource};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A lease the test lets expire (etcd's shortest with the test etcd's raft timings).
pub const SHORT: Duration = Duration::from_secs(1);
/// A lease that outlives any scenario.
pub const LONG: Duration = Duration::from_secs(60);
/// How long a change may take to show in a node view.
pub const VIEW_DEADLINE: Duration = Duration::from_secs(10);
/// The request timeout the etcd fixture configures.
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A backend under test plus what the suite needs to steer it.
pub trait Backend {
    type Cp: ControlPlane + 'static;

    /// The control plane the scenario drives ("this node").
    fn cp(&self) -> &Arc<Self::Cp>;

    /// Another client of the same store ("another node"): the same object for the memory
    /// backend, a second connection for etcd.
    fn peer(&self) -> impl Future<Output = Arc<Self::Cp>>;

    /// Lets `lease` (held by `node`, not kept alive) run out, and returns once the backend has
    /// noticed: `node` is gone from [`ControlPlane::watch_nodes`].
    fn expire(&self, lease: &Lease, node: &str) -> impl Future<Output = ()>;
}

/// The in-memory backend on a clock that moves only when the suite says so.
pub struct MemoryBackend {
    cp: Arc<MemoryControlPlane>,
    millis: Arc<AtomicU64>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        let start = Instant::now();
        let millis = Arc::new(AtomicU64::new(0));
        let now = millis.clone();
        let clock: Clock =
            Arc::new(move || start + Duration::from_millis(now.load(Ordering::SeqCst)));
        Self {
            cp: Arc::new(MemoryControlPlane::with_clock(clock)),
            millis,
        }
    }
}

impl MemoryBackend {
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }
}

impl Backend for MemoryBackend {
    type Cp = MemoryControlPlane;

    fn cp(&self) -> &Arc<MemoryControlPlane> {
        &self.cp
    }

    async fn peer(&self) -> Arc<MemoryControlPlane> {
        self.cp.clone()
    }

    async fn expire(&self, lease: &Lease, node: &str) {
        self.advance(lease.ttl + Duration::from_millis(1));
        // The memory backend notices expiry at its next operation.
        self.cp.live_nodes().await.expect("memory backend answers");
        wait_view(
            &mut self.cp.watch_nodes(),
            &format!("{node} to expire"),
            |v| !v.nodes.contains_key(node),
        )
        .await;
    }
}

/// A fresh etcd on its own loopback address with one connected [`EtcdControlPlane`].
pub struct EtcdBackend {
    cp: Arc<EtcdControlPlane>,
    options: EtcdOptions,
    /// Declared last: the clients go before the server.
    pub etcd: EtcdProcess,
}

impl EtcdBackend {
    /// Starts etcd on `ip` and connects. Call it on the test's own thread (see [`EtcdProcess`]).
    pub async fn start(ip: &str) -> Self {
        let etcd = EtcdProcess::start(ip);
        let options = EtcdOptions {
            endpoints: vec![etcd.client_url()],
            prefix: "/kaskade/".into(),
            request_timeout: ETCD_REQUEST_TIMEOUT,
        };
        let cp = EtcdControlPlane::connect(options.clone())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", etcd.client_url()));
        Self {
            cp: Arc::new(cp),
            options,
            etcd,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.options.prefix
    }
}

impl Backend for EtcdBackend {
    type Cp = EtcdControlPlane;

    fn cp(&self) -> &Arc<EtcdControlPlane> {
        &self.cp
    }

    async fn peer(&self) -> Arc<EtcdControlPlane> {
        let cp = EtcdControlPlane::connect(self.options.clone())
            .await
            .expect("second connection to the test etcd");
        Arc::new(cp)
    }

    async fn expire(&self, lease: &Lease, node: &str) {
        let deadline = lease.ttl + VIEW_DEADLINE;
        let what = format!("{node}'s lease {} to expire", lease.id);
        let mut view = self.cp.watch_nodes();
        tokio::time::timeout(deadline, view.wait_for(|v| !v.nodes.contains_key(node)))
            .await
            .unwrap_or_else(|_| panic!("timed out after {deadline:?} waiting for {what}"))
            .expect("the node watcher lives as long as the control plane");
    }
}

// ---- helpers ------------------------------------------------------------------------------

pub fn node(id: &str, site: &str, sessions: u64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        site: site.into(),
        http_url: format!("http://{id}.test/"),
        media_addr: "127.0.0.1:7000".into(),
        relay_addr: format!("{id}.test:7100"),
        load: NodeLoad {
            sessions,
            ..NodeLoad::default()
        },
        draining: false,
        links: Vec::new(),
    }
}

fn draining(mut n: NodeRecord) -> NodeRecord {
    n.draining = true;
    n
}

pub fn sites(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("valid room name")
}

fn share(node: &str, participants: &[&str], tracks: &[&str]) -> RoomShare {
    RoomShare {
        node: node.into(),
        participants: participants
            .iter()
            .map(|p| ParticipantInfo::new(ParticipantId(p.to_string()), format!("{p} on {node}")))
            .collect(),
        tracks: tracks
            .iter()
            .map(|t| TrackInfo {
                id: TrackId(t.to_string()),
                participant: ParticipantId(participants.first().unwrap_or(&"").to_string()),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                layers: vec!["q".into(), "h".into()],
                muted: false,
            })
            .collect(),
    }
}

fn ids(nodes: &[NodeRecord]) -> Vec<&str> {
    let mut ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

async fn live_ids<C: ControlPlane>(cp: &C) -> Vec<String> {
    let live = cp.live_nodes().await.expect("live_nodes");
    ids(&live).into_iter().map(String::from).collect()
}

async fn placed<C: ControlPlane>(cp: &C, room_name: &str, site_list: &[&str]) -> String {
    cp.place_room(&room(room_name), &sites(site_list))
        .await
        .unwrap_or_else(|e| panic!("place_room({room_name}, {site_list:?}): {e}"))
        .id
}

/// Waits until the view satisfies `pred`, failing the test after [`VIEW_DEADLINE`] with the
/// last view seen.
pub async fn wait_view(
    view: &mut watch::Receiver<NodeView>,
    what: &str,
    pred: impl FnMut(&NodeView) -> bool,
) -> NodeView {
    let outcome = match tokio::time::timeout(VIEW_DEADLINE, view.wait_for(pred)).await {
        Ok(Ok(v)) => Ok(v.clone()),
        Ok(Err(_)) => Err("the node view closed"),
        Err(_) => Err("timed out"),
    };
    outcome.unwrap_or_else(|why| {
        panic!(
            "{why} after at most {VIEW_DEADLINE:?} waiting for {what}; last view: {:?}",
            *view.borrow()
        )
    })
}

// ---- scenarios for every backend ------------------------------------------------------------

/// Registered nodes are live; a keep-alive carrying a new record (load, draining) is what every
/// reader sees afterwards.
pub async fn register_and_update<B: Backend>(b: &B) {
    let cp = b.cp();
    let l1 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    cp.register_node(node("n2", "b", 3), LONG).await.unwrap();
    assert!(
        l1.ttl >= LONG,
        "granted ttl {:?} is shorter than asked",
        l1.ttl
    );
    let live = cp.live_nodes().await.unwrap();
    assert_eq!(ids(&live), ["n1", "n2"]);
    assert!(live.contains(&node("n2", "b", 3)), "{live:?}");

    let mut busy = draining(node("n1", "a", 7));
    busy.load.tracks = 2;
    busy.load.cpu_percent = 140;
    cp.keep_alive(&l1, busy.clone()).await.unwrap();
    let live = cp.live_nodes().await.unwrap();
    assert!(live.contains(&busy), "{live:?}");
    let peer = b.peer().await;
    assert!(peer.live_nodes().await.unwrap().contains(&busy));
    wait_view(&mut peer.watch_nodes(), "n1's new load in the view", |v| {
        v.reachable && v.nodes.get("n1") == Some(&busy)
    })
    .await;
    // An unchanged record is kept alive just the same.
    cp.keep_alive(&l1, busy.clone()).await.unwrap();
    assert_eq!(live_ids(&**cp).await, ["n1", "n2"]);
}

/// A lease that is not kept alive takes its node away; other nodes stay.
pub async fn lease_expiry_removes_node<B: Backend>(b: &B) {
    let cp = b.cp();
    let l1 = cp.register_node(node("n1", "a", 0), SHORT).await.unwrap();
    cp.register_node(node("n2", "a", 0), LONG).await.unwrap();
    let mut view = cp.watch_nodes();
    wait_view(&mut view, "both nodes", |v| v.nodes.len() == 2).await;
    b.expire(&l1, "n1").await;
    assert_eq!(live_ids(&**cp).await, ["n2"]);
    let v = wait_view(&mut view, "n1 to leave the view", |v| {
        !v.nodes.contains_key("n1")
    })
    .await;
    assert!(v.reachable);
    assert_eq!(v.nodes.keys().collect::<Vec<_>>(), ["n2"]);
}

/// Keeping an expired lease alive fails with `LeaseExpired`; registering again works and gives
/// a new lease, and the old one stays dead.
pub async fn keep_alive_after_expiry_fails<B: Backend>(b: &B) {
    let cp = b.cp();
    let l1 = cp.register_node(node("n1", "a", 0), SHORT).await.unwrap();
    b.expire(&l1, "n1").await;
    assert_eq!(
        cp.keep_alive(&l1, node("n1", "a", 1)).await,
        Err(ControlError::LeaseExpired(l1.id))
    );
    assert!(
        live_ids(&**cp).await.is_empty(),
        "a failed keep-alive must not revive the node"
    );
    let l2 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    assert_ne!(l2.id, l1.id);
    cp.keep_alive(&l2, node("n1", "a", 4)).await.unwrap();
    assert_eq!(cp.live_nodes().await.unwrap(), [node("n1", "a", 4)]);
    assert_eq!(
        cp.keep_alive(&l1, node("n1", "a", 5)).await,
        Err(ControlError::LeaseExpired(l1.id))
    );
}

/// Registering a node id again replaces its lease: the old lease can no longer be kept alive
/// and what was published under it is gone.
pub async fn registering_again_replaces_the_lease<B: Backend>(b: &B) {
    let cp = b.cp();
    let class = room("class");
    let l1 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    cp.publish_room_share(&l1, &class, share("n1", &["p1"], &[]))
        .await
        .unwrap();
    let l2 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    assert_ne!(l1.id, l2.id);
    assert_eq!(
        cp.keep_alive(&l1, node("n1", "a", 0)).await,
        Err(ControlError::LeaseExpired(l1.id))
    );
    cp.keep_alive(&l2, node("n1", "a", 2)).await.unwrap();
    assert_eq!(cp.live_nodes().await.unwrap(), [node("n1", "a", 2)]);
    assert_eq!(cp.room_shares(&class).await.unwrap(), []);
}

/// A room goes to the least-loaded node of the participants' site and stays there while that
/// node lives, even when loads change; `release_room` forgets only the named node's placement.
pub async fn placement_least_loaded_and_sticky<B: Backend>(b: &B) {
    let cp = b.cp();
    cp.register_node(node("a1", "a", 9), LONG).await.unwrap();
    let la2 = cp.register_node(node("a2", "a", 2), LONG).await.unwrap();
    cp.register_node(node("b1", "b", 0), LONG).await.unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "a2");
    cp.register_node(node("a3", "a", 0), LONG).await.unwrap();
    cp.keep_alive(&la2, node("a2", "a", 50)).await.unwrap();
    assert_eq!(
        placed(&**cp, "class", &["a"]).await,
        "a2",
        "placements are sticky"
    );
    let peer = b.peer().await;
    assert_eq!(
        placed(&*peer, "class", &["a"]).await,
        "a2",
        "every node sees the placement"
    );
    cp.release_room(&room("class"), "a3").await.unwrap();
    assert_eq!(
        placed(&**cp, "class", &["a"]).await,
        "a2",
        "releasing another node's placement"
    );
    cp.release_room(&room("class"), "a2").await.unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "a3");
    // Releasing a room nobody placed is fine.
    cp.release_room(&room("nowhere"), "a1").await.unwrap();
}

/// A draining node keeps no placement and takes no new one.
pub async fn placement_leaves_draining_node<B: Backend>(b: &B) {
    let cp = b.cp();
    let l1 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    let l2 = cp.register_node(node("n2", "a", 5), LONG).await.unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n1");
    cp.keep_alive(&l1, draining(node("n1", "a", 0)))
        .await
        .unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n2");
    cp.keep_alive(&l1, node("n1", "a", 0)).await.unwrap();
    assert_eq!(
        placed(&**cp, "class", &["a"]).await,
        "n2",
        "the new placement sticks"
    );
    cp.keep_alive(&l1, draining(node("n1", "a", 0)))
        .await
        .unwrap();
    cp.keep_alive(&l2, draining(node("n2", "a", 5)))
        .await
        .unwrap();
    assert_eq!(
        cp.place_room(&room("other"), &sites(&["a"])).await,
        Err(ControlError::NoNodeAvailable("other".into()))
    );
}

/// When the placed node's lease ends, the room moves to a live node and stays there even when
/// the old node comes back.
pub async fn placement_leaves_dead_node<B: Backend>(b: &B) {
    let cp = b.cp();
    let l1 = cp.register_node(node("n1", "a", 0), SHORT).await.unwrap();
    cp.register_node(node("n2", "a", 5), LONG).await.unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n1");
    b.expire(&l1, "n1").await;
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n2");
    cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n2");
}

/// A placement record dies with the chosen node's lease (trait docs): a node that registers
/// again under the same id does not get its old rooms back; placement decides afresh.
pub async fn placement_dies_with_lease<B: Backend>(b: &B) {
    let cp = b.cp();
    let l1 = cp.register_node(node("n1", "a", 5), SHORT).await.unwrap();
    let l3 = cp
        .register_node(draining(node("n3", "a", 0)), LONG)
        .await
        .unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n1");
    b.expire(&l1, "n1").await;
    cp.register_node(node("n1", "a", 5), LONG).await.unwrap();
    cp.keep_alive(&l3, node("n3", "a", 0)).await.unwrap();
    assert_eq!(
        placed(&**cp, "class", &["a"]).await,
        "n3",
        "the placement on n1 should have ended with n1's first lease"
    );
}

/// Sites are tried in the order given (nearest first); the placement is recorded for the first
/// site of the list, so each participant site of a room has its own.
pub async fn placement_falls_back_to_nearest_site<B: Backend>(b: &B) {
    let cp = b.cp();
    cp.register_node(node("a1", "a", 0), LONG).await.unwrap();
    cp.register_node(node("b1", "b", 0), LONG).await.unwrap();
    cp.register_node(node("c1", "c", 5), LONG).await.unwrap();
    cp.register_node(node("c2", "c", 1), LONG).await.unwrap();
    assert_eq!(placed(&**cp, "r1", &["x", "c", "b"]).await, "c2");
    assert_eq!(placed(&**cp, "r2", &["x", "b", "c"]).await, "b1");
    assert_eq!(
        placed(&**cp, "r1", &["x", "b"]).await,
        "c2",
        "sticky for (r1, x)"
    );
    assert_eq!(
        placed(&**cp, "r1", &["b", "c"]).await,
        "b1",
        "site b has its own placement"
    );
    assert_eq!(placed(&**cp, "r1", &["a"]).await, "a1");
    assert_eq!(
        cp.place_room(&room("r3"), &sites(&["x", "y"])).await,
        Err(ControlError::NoNodeAvailable("r3".into()))
    );
    assert_eq!(
        cp.place_room(&room("r3"), &[]).await,
        Err(ControlError::NoNodeAvailable("r3".into()))
    );
}

/// Several nodes placing the same room at once agree, even while the load that decides the
/// placement keeps flipping under them (n1 is alternately the least and the most loaded).
pub async fn concurrent_placement_agrees<B: Backend>(b: &B) {
    const ROOMS: usize = 24;
    const RACERS: usize = 4;
    let cp = b.cp().clone();
    let mut racers = vec![cp.clone()];
    for _ in 1..RACERS {
        racers.push(b.peer().await);
    }
    let l1 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    cp.register_node(node("n2", "a", 10), LONG).await.unwrap();
    let done = std::cell::Cell::new(false);
    let flip = async {
        let mut flips = 0u64;
        while !done.get() {
            let load = if flips.is_multiple_of(2) { 20 } else { 0 };
            cp.keep_alive(&l1, node("n1", "a", load)).await.unwrap();
            flips += 1;
            tokio::task::yield_now().await;
        }
        flips
    };
    let race = async {
        let mut winners = Vec::new();
        for i in 0..ROOMS {
            let (r, home) = (room(&format!("race-{i}")), sites(&["a"]));
            let picks = futures_join_all(racers.iter().enumerate().map(|(k, racer)| {
                let (r, home) = (&r, &home);
                async move {
                    // Spread the racers' reads over a few flips.
                    tokio::time::sleep(Duration::from_micros(300 * k as u64)).await;
                    racer.place_room(r, home).await.unwrap().id
                }
            }))
            .await;
            assert!(
                picks.iter().all(|p| *p == picks[0]),
                "nodes placed {} differently: {picks:?}",
                r.as_str()
            );
            winners.push((r, picks[0].clone()));
        }
        done.set(true);
        winners
    };
    let (flips, winners) = tokio::join!(flip, race);
    assert!(flips > 1, "the load never changed during the race");
    for (r, winner) in winners {
        let again = cp.place_room(&r, &sites(&["a"])).await.unwrap().id;
        assert_eq!(again, winner, "{} moved", r.as_str());
    }
}

/// Runs `futures` concurrently on this task and returns their outputs in order.
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// Room shares: published per node, replaced by a newer one, withdrawn, ordered by node id, and
/// refused under a lease that does not exist.
pub async fn room_shares_publish_replace_withdraw<B: Backend>(b: &B) {
    let cp = b.cp();
    let class = room("class");
    let l1 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    let l2 = cp.register_node(node("n2", "b", 0), LONG).await.unwrap();
    assert_eq!(cp.room_shares(&class).await.unwrap(), []);
    cp.publish_room_share(&l2, &class, share("n2", &["p2"], &["t2"]))
        .await
        .unwrap();
    cp.publish_room_share(&l1, &class, share("n1", &["p1"], &[]))
        .await
        .unwrap();
    assert_eq!(
        cp.room_shares(&class).await.unwrap(),
        [share("n1", &["p1"], &[]), share("n2", &["p2"], &["t2"])]
    );
    let newer = share("n1", &["p1", "p3"], &["t1"]);
    cp.publish_room_share(&l1, &class, newer.clone())
        .await
        .unwrap();
    let peer = b.peer().await;
    assert_eq!(
        peer.room_shares(&class).await.unwrap(),
        [newer.clone(), share("n2", &["p2"], &["t2"])]
    );
    assert_eq!(cp.room_shares(&room("other")).await.unwrap(), []);
    cp.publish_room_share(&l2, &room("art"), share("n2", &["p4"], &[]))
        .await
        .unwrap();
    cp.place_room(&class, &sites(&["a"])).await.unwrap();
    assert_eq!(
        peer.all_room_shares().await.unwrap(),
        [
            (room("art"), share("n2", &["p4"], &[])),
            (class.clone(), newer.clone()),
            (class.clone(), share("n2", &["p2"], &["t2"])),
        ],
        "every room's shares, by room then node, and no placements"
    );
    cp.withdraw_room_share(&room("art"), "n2").await.unwrap();
    cp.withdraw_room_share(&class, "n2").await.unwrap();
    cp.withdraw_room_share(&class, "n2").await.unwrap();
    assert_eq!(
        cp.room_shares(&class).await.unwrap(),
        std::slice::from_ref(&newer)
    );
    let bogus = Lease {
        id: 0x7777_0000,
        ttl: LONG,
    };
    assert_eq!(
        cp.publish_room_share(&bogus, &class, share("n3", &["p9"], &[]))
            .await,
        Err(ControlError::LeaseExpired(bogus.id))
    );
    assert_eq!(cp.room_shares(&class).await.unwrap(), [newer]);
}

/// A node's room shares disappear with its lease.
pub async fn room_shares_vanish_with_lease<B: Backend>(b: &B) {
    let cp = b.cp();
    let class = room("class");
    let l1 = cp.register_node(node("n1", "a", 0), SHORT).await.unwrap();
    let l2 = cp.register_node(node("n2", "a", 0), LONG).await.unwrap();
    cp.publish_room_share(&l1, &class, share("n1", &["p1"], &["t1"]))
        .await
        .unwrap();
    cp.publish_room_share(&l2, &class, share("n2", &["p2"], &[]))
        .await
        .unwrap();
    assert_eq!(cp.room_shares(&class).await.unwrap().len(), 2);
    b.expire(&l1, "n1").await;
    assert_eq!(
        cp.room_shares(&class).await.unwrap(),
        [share("n2", &["p2"], &[])]
    );
}

/// `watch_nodes` shows a node joining, its record changing and its lease ending, to this node
/// and to another one.
pub async fn watch_sees_join_update_leave<B: Backend>(b: &B) {
    let cp = b.cp();
    let peer = b.peer().await;
    let mut view = cp.watch_nodes();
    wait_view(&mut view, "a reachable, empty view", |v| {
        v.reachable && v.nodes.is_empty()
    })
    .await;
    let l1 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    wait_view(&mut view, "n1 to join", |v| {
        v.nodes.get("n1") == Some(&node("n1", "a", 0))
    })
    .await;
    cp.keep_alive(&l1, node("n1", "a", 3)).await.unwrap();
    wait_view(&mut view, "n1's load to change", |v| {
        v.nodes.get("n1").is_some_and(|n| n.load.sessions == 3)
    })
    .await;
    let l2 = cp.register_node(node("n2", "b", 0), SHORT).await.unwrap();
    wait_view(&mut view, "n2 to join", |v| v.nodes.contains_key("n2")).await;
    b.expire(&l2, "n2").await;
    let v = wait_view(&mut view, "n2 to leave", |v| !v.nodes.contains_key("n2")).await;
    assert!(v.reachable);
    assert_eq!(v.nodes.keys().collect::<Vec<_>>(), ["n1"]);
    wait_view(
        &mut peer.watch_nodes(),
        "the other node's view to agree",
        |w| w.reachable && w.nodes == v.nodes,
    )
    .await;
}

/// A node that exits cleanly revokes its lease: at once (its lease would live for a minute) it is
/// gone from `live_nodes` and from every watcher's view, its room shares are gone, and the room
/// it held is placed on another node. Its lease can no longer be kept alive; revoking it again,
/// or revoking a lease nobody holds, is fine. Other nodes are untouched.
pub async fn revoke_ends_registration_at_once<B: Backend>(b: &B) {
    let cp = b.cp();
    let peer = b.peer().await;
    let class = room("class");
    let l1 = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    let l2 = cp.register_node(node("n2", "a", 5), LONG).await.unwrap();
    cp.publish_room_share(&l1, &class, share("n1", &["p1"], &["t1"]))
        .await
        .unwrap();
    cp.publish_room_share(&l2, &class, share("n2", &["p2"], &[]))
        .await
        .unwrap();
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n1");
    let mut mine = cp.watch_nodes();
    let mut theirs = peer.watch_nodes();
    for view in [&mut mine, &mut theirs] {
        wait_view(view, "both nodes", |v| {
            v.reachable && v.nodes.contains_key("n1") && v.nodes.contains_key("n2")
        })
        .await;
    }

    let started = Instant::now();
    cp.revoke_lease(&l1).await.expect("revoke_lease");
    assert_eq!(live_ids(&**cp).await, ["n2"]);
    assert_eq!(live_ids(&*peer).await, ["n2"]);
    assert_eq!(
        cp.room_shares(&class).await.unwrap(),
        [share("n2", &["p2"], &[])]
    );
    assert_eq!(
        placed(&*peer, "class", &["a"]).await,
        "n2",
        "the revoked node's placement must be gone"
    );
    for view in [&mut mine, &mut theirs] {
        let v = wait_view(view, "n1 to leave the view", |v| {
            !v.nodes.contains_key("n1")
        })
        .await;
        assert!(v.reachable);
        assert_eq!(v.nodes.keys().collect::<Vec<_>>(), ["n2"]);
    }
    // Far sooner than the lease would have expired: the revocation did it, not the TTL.
    assert!(started.elapsed() < LONG / 4, "took {:?}", started.elapsed());

    assert_eq!(
        cp.keep_alive(&l1, node("n1", "a", 0)).await,
        Err(ControlError::LeaseExpired(l1.id))
    );
    assert_eq!(
        cp.publish_room_share(&l1, &class, share("n1", &["p1"], &[]))
            .await,
        Err(ControlError::LeaseExpired(l1.id))
    );
    cp.revoke_lease(&l1).await.expect("revoking again");
    let bogus = Lease {
        id: 0x7777_0000,
        ttl: LONG,
    };
    cp.revoke_lease(&bogus)
        .await
        .expect("revoking an unknown lease");
    cp.keep_alive(&l2, node("n2", "a", 6)).await.unwrap();
    assert_eq!(cp.live_nodes().await.unwrap(), [node("n2", "a", 6)]);
}

// ---- etcd only --------------------------------------------------------------------------------

/// Ids and sites end up in keys, so `/` in them is refused instead of corrupting the layout.
pub async fn etcd_refuses_slashes_in_key_parts(b: &EtcdBackend) {
    let cp = b.cp();
    for bad in [node("n/1", "a", 0), node("n1", "a/b", 0), node("", "a", 0)] {
        assert!(
            matches!(
                cp.register_node(bad.clone(), LONG).await,
                Err(ControlError::Malformed(_))
            ),
            "{bad:?} was accepted"
        );
    }
    let lease = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    assert!(matches!(
        cp.publish_room_share(&lease, &room("class"), share("x/y", &[], &[]))
            .await,
        Err(ControlError::Malformed(_))
    ));
    assert!(matches!(
        cp.place_room(&room("class"), &sites(&["a/b", "a"])).await,
        Err(ControlError::Malformed(_))
    ));
    assert_eq!(live_ids(&**cp).await, ["n1"]);
}

/// Data the backend would never write (not JSON, a record under another id, a placement that is
/// not UTF-8) is skipped, not trusted and not a panic.
pub async fn etcd_skips_malformed_data(b: &EtcdBackend) {
    let cp = b.cp();
    let p = b.prefix();
    let lease = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    let wrong_id = serde_json::to_vec(&node("n7", "a", 0)).unwrap();
    b.etcd
        .put_raw(&format!("{p}nodes/bad"), b"not json")
        .unwrap();
    b.etcd.put_raw(&format!("{p}nodes/n9"), &wrong_id).unwrap();
    b.etcd.put_raw(&format!("{p}nodes/"), b"{}").unwrap();
    b.etcd
        .put_raw(&format!("{p}rooms/class/shares/n8"), b"{")
        .unwrap();
    let foreign = serde_json::to_vec(&share("n6", &["p6"], &[])).unwrap();
    b.etcd
        .put_raw(&format!("{p}rooms/class/shares/n5"), &foreign)
        .unwrap();
    b.etcd
        .put_raw(&format!("{p}rooms/class/placement/a"), &[0xff, 0xfe])
        .unwrap();
    cp.publish_room_share(&lease, &room("class"), share("n1", &["p1"], &[]))
        .await
        .unwrap();

    assert_eq!(live_ids(&**cp).await, ["n1"]);
    assert_eq!(
        cp.room_shares(&room("class")).await.unwrap(),
        [share("n1", &["p1"], &[])]
    );
    assert_eq!(placed(&**cp, "class", &["a"]).await, "n1");
    // The watcher saw the same writes and kept following.
    cp.keep_alive(&lease, node("n1", "a", 8)).await.unwrap();
    let v = wait_view(&mut cp.watch_nodes(), "n1's update after the junk", |v| {
        v.nodes.get("n1").is_some_and(|n| n.load.sessions == 8)
    })
    .await;
    assert!(v.reachable);
    assert_eq!(v.nodes.keys().collect::<Vec<_>>(), ["n1"]);
}

/// etcd stops: the view turns unreachable but keeps its nodes (they are not proven dead), calls
/// fail with `Unavailable` within the request timeout instead of hanging; etcd comes back: the
/// view is reachable again and the same lease can be kept alive.
pub async fn etcd_outage_keeps_last_view_and_recovers(b: &mut EtcdBackend) {
    let cp = b.cp().clone();
    let lease = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    let mut view = cp.watch_nodes();
    wait_view(&mut view, "n1 in a reachable view", |v| {
        v.reachable && v.nodes.contains_key("n1")
    })
    .await;

    b.etcd.stop();
    let v = wait_view(&mut view, "the view to turn unreachable", |v| !v.reachable).await;
    assert!(v.nodes.contains_key("n1"), "nodes were dropped: {v:?}");
    let bound = ETCD_REQUEST_TIMEOUT + Duration::from_secs(1);
    let started = Instant::now();
    assert!(matches!(
        cp.live_nodes().await,
        Err(ControlError::Unavailable(_))
    ));
    assert!(matches!(
        cp.keep_alive(&lease, node("n1", "a", 1)).await,
        Err(ControlError::Unavailable(_))
    ));
    assert!(matches!(
        cp.place_room(&room("class"), &sites(&["a"])).await,
        Err(ControlError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < bound * 3,
        "three calls took {:?}",
        started.elapsed()
    );
    assert!(!cp.watch_nodes().borrow().reachable);

    b.etcd.restart();
    let v = wait_view(&mut view, "the view to be reachable again", |v| v.reachable).await;
    assert!(v.nodes.contains_key("n1"));
    // The tonic channel may need a moment to reconnect; the lease itself survived the restart.
    let deadline = Instant::now() + VIEW_DEADLINE;
    loop {
        match cp.keep_alive(&lease, node("n1", "a", 2)).await {
            Ok(()) => break,
            Err(ControlError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("keep-alive after etcd came back: {e}"),
        }
    }
    assert_eq!(cp.live_nodes().await.unwrap(), [node("n1", "a", 2)]);
    wait_view(&mut view, "the update after the outage", |v| {
        v.reachable && v.nodes.get("n1").is_some_and(|n| n.load.sessions == 2)
    })
    .await;
}

/// etcd hangs (SIGSTOP: connections stay open, nothing answers): the watcher notices through its
/// progress probe and turns the view unreachable, calls fail within the request timeout; once
/// etcd answers again the view recovers.
pub async fn etcd_hung_store_is_unreachable_not_a_hang(b: &EtcdBackend) {
    let cp = b.cp();
    let lease = cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    let mut view = cp.watch_nodes();
    wait_view(&mut view, "n1 in a reachable view", |v| {
        v.reachable && v.nodes.contains_key("n1")
    })
    .await;

    b.etcd.pause();
    let call = async {
        let started = Instant::now();
        let result = cp.live_nodes().await;
        (result, started.elapsed())
    };
    let unreachable = wait_view(&mut view, "the view to turn unreachable", |v| !v.reachable);
    let ((result, took), v) = tokio::join!(call, unreachable);
    assert!(
        matches!(result, Err(ControlError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        took < ETCD_REQUEST_TIMEOUT + Duration::from_secs(1),
        "live_nodes took {took:?}"
    );
    assert!(v.nodes.contains_key("n1"), "nodes were dropped: {v:?}");

    b.etcd.resume();
    wait_view(&mut view, "the view to be reachable again", |v| {
        v.reachable && v.nodes.contains_key("n1")
    })
    .await;
    cp.keep_alive(&lease, node("n1", "a", 4)).await.unwrap();
    assert_eq!(cp.live_nodes().await.unwrap(), [node("n1", "a", 4)]);
}

/// An idle but healthy etcd keeps the view reachable: the watcher's liveness probes (progress
/// requests) are answered, so quiet periods are not mistaken for an outage.
pub async fn etcd_idle_view_stays_reachable(b: &EtcdBackend) {
    let cp = b.cp();
    cp.register_node(node("n1", "a", 0), LONG).await.unwrap();
    let mut view = cp.watch_nodes();
    wait_view(&mut view, "n1 in a reachable view", |v| {
        v.reachable && v.nodes.contains_key("n1")
    })
    .await;
    // Longer than a probe round (a probe after 1 s of silence, answered within the timeout).
    let quiet = Duration::from_secs(1) + ETCD_REQUEST_TIMEOUT + Duration::from_millis(500);
    let flapped = tokio::time::timeout(quiet, view.wait_for(|v| !v.reachable)).await;
    assert!(
        flapped.is_err(),
        "the view turned unreachable while etcd was idle"
    );
}

/// Every node of the mesh reads the same shared secret, long enough to sign tokens with.
pub async fn mesh_secret_is_shared<B: Backend>(b: &B) {
    let first = b.cp().mesh_secret().await.expect("secret");
    let again = b
        .peer()
        .await
        .mesh_secret()
        .await
        .expect("secret from another node");
    assert!(first.len() >= 16, "secret of {} bytes", first.len());
    assert_eq!(first, again, "two nodes must read the same secret");
}
