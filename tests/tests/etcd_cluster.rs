//! Owns: the etcd control plane against a real 3-member etcd cluster — a node configured with
//! all three endpoints keeps registering, keeping its lease alive, placing rooms and following
//! the node list when the member it talks to dies (SIGKILL, the leader, so an election runs on
//! top of the failover) or hangs (SIGSTOP, a follower: every request to it times out).
//!
//! Each test starts its own cluster on its own loopback addresses in 127.0.0.80–127.0.0.89
//! (127.0.0.60–79 belong to `control_behaviour.rs`). Needs `/usr/bin/etcd` (Debian
//! `etcd-server`, installed by `.ci/setup`).

use kaskade_control::etcd::{EtcdControlPlane, EtcdOptions};
use kaskade_control::{ControlError, ControlPlane, Lease, NodeRecord, NodeView};
use kaskade_tests::control_suite::{LONG, node, room, sites, wait_view};
use kaskade_tests::etcd::EtcdCluster;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The lease the test node keeps alive (etcd's shortest with the test raft timings is 1 s).
const TTL: Duration = Duration::from_secs(2);
/// What a node configures (`nodes/src/lib.rs`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the node must stay listed after the failure: several TTLs.
const STAY_LISTED: Duration = Duration::from_secs(6);
/// How long a hung member may delay a request: about one keep-alive interval (1 s with the
/// default 3 s lease) — one attempt on the hung member (a third of the request timeout with three
/// members) and the next member's answer, with slack for a busy 2-core machine — not the request
/// timeout (2 s) it held every request for before the failover, nor a lost lease.
const HUNG_MEMBER_DELAY: Duration = Duration::from_millis(1500);

async fn connect(endpoints: Vec<String>) -> Arc<EtcdControlPlane> {
    let options = EtcdOptions {
        endpoints: endpoints.clone(),
        prefix: "/kaskade/".into(),
        request_timeout: REQUEST_TIMEOUT,
    };
    let cp = EtcdControlPlane::connect(options)
        .await
        .unwrap_or_else(|e| panic!("connecting to {endpoints:?}: {e}"));
    Arc::new(cp)
}

/// One keep-alive, as the node's registration loop sends it.
#[derive(Debug)]
struct Beat {
    at: Instant,
    took: Duration,
    result: Result<(), ControlError>,
}

/// The node's registration loop in small: a keep-alive every third of the TTL, each with a new
/// load figure (so the watch has something to carry), every outcome recorded.
struct KeepAlive {
    beats: Arc<Mutex<Vec<Beat>>>,
    task: JoinHandle<()>,
}

impl KeepAlive {
    fn spawn(cp: Arc<EtcdControlPlane>, lease: Lease, mut record: NodeRecord) -> Self {
        let beats = Arc::new(Mutex::new(Vec::new()));
        let log = beats.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TTL / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                record.load.sessions += 1;
                let at = Instant::now();
                let result = cp.keep_alive(&lease, record.clone()).await;
                let beat = Beat {
                    at,
                    took: at.elapsed(),
                    result,
                };
                log.lock().unwrap().push(beat);
            }
        });
        Self { beats, task }
    }

    /// The load the last successful keep-alive published.
    fn last_load(&self) -> u64 {
        self.beats
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.result.is_ok())
            .count() as u64
    }

    /// Keep-alives sent since `since`, checked: none failed, none took longer than `bound`.
    /// Returns how many there were and the slowest.
    fn check_since(&self, since: Instant, bound: Duration) -> (usize, Duration) {
        let beats = self.beats.lock().unwrap();
        let after: Vec<&Beat> = beats.iter().filter(|b| b.at >= since).collect();
        let failed: Vec<&&Beat> = after.iter().filter(|b| b.result.is_err()).collect();
        assert!(failed.is_empty(), "keep-alives failed: {failed:?}");
        let slowest = after.iter().map(|b| b.took).max().unwrap_or_default();
        assert!(
            slowest < bound,
            "a keep-alive took {slowest:?} (bound {bound:?}): {after:?}"
        );
        (after.len(), slowest)
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records whether a node view ever turned unreachable.
fn watch_reachability(mut view: watch::Receiver<NodeView>) -> Arc<Mutex<Vec<Instant>>> {
    let lost = Arc::new(Mutex::new(Vec::new()));
    let log = lost.clone();
    tokio::spawn(async move {
        loop {
            if !view.borrow_and_update().reachable {
                log.lock().unwrap().push(Instant::now());
            }
            if view.changed().await.is_err() {
                return;
            }
        }
    });
    lost
}

/// Polls `live_nodes` for `period`: every call succeeds within `bound` and lists `id`.
async fn stays_listed(cp: &EtcdControlPlane, id: &str, period: Duration, bound: Duration) {
    let until = Instant::now() + period;
    let mut calls = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let live = cp
            .live_nodes()
            .await
            .unwrap_or_else(|e| panic!("live_nodes failed after {calls} calls: {e}"));
        let took = started.elapsed();
        assert!(took < bound, "live_nodes took {took:?}");
        assert!(
            live.iter().any(|n| n.id == id),
            "{id} dropped out of the registry after {calls} calls: {live:?}"
        );
        calls += 1;
        // Observing that the node stays listed over time is the point: pace the polls.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_member_in_use_keeps_the_control_plane_working() {
    let mut cluster = EtcdCluster::start(&["127.0.0.81", "127.0.0.82", "127.0.0.83"]);
    // The leader first: the member this node talks to is then also the leader, so killing it
    // forces an election on top of the failover.
    let leader = cluster.leader_url();
    let mut endpoints = cluster.client_urls();
    endpoints.sort_by_key(|url| *url != leader);
    let cp = connect(endpoints.clone()).await;
    // Another node, talking to another member first.
    let other = connect(endpoints.iter().rev().cloned().collect()).await;
    assert_eq!(cp.endpoint_in_use(), leader);
    assert_ne!(other.endpoint_in_use(), leader);

    let n1 = node("n1", "a", 0);
    let lease = cp.register_node(n1.clone(), TTL).await.unwrap();
    let keeper = KeepAlive::spawn(cp.clone(), lease, n1);
    assert_eq!(
        cp.place_room(&room("r1"), &sites(&["a"])).await.unwrap().id,
        "n1"
    );
    let mut view = cp.watch_nodes();
    wait_view(&mut view, "n1 in the view before the kill", |v| {
        v.reachable && v.nodes.contains_key("n1")
    })
    .await;
    let lost_mine = watch_reachability(cp.watch_nodes());
    let lost_theirs = watch_reachability(other.watch_nodes());

    let killed = Instant::now();
    cluster.member(&leader).kill();

    // Registration through the node whose member died.
    let started = Instant::now();
    let l2 = cp
        .register_node(node("n2", "b", 0), LONG)
        .await
        .expect("registering after the member died");
    let register_took = started.elapsed();
    assert_ne!(cp.endpoint_in_use(), leader, "still using the dead member");
    // Placement: the existing one holds, a new one is made.
    assert_eq!(
        cp.place_room(&room("r1"), &sites(&["a"])).await.unwrap().id,
        "n1"
    );
    assert_eq!(
        cp.place_room(&room("r2"), &sites(&["b"])).await.unwrap().id,
        "n2"
    );
    // The watch: both nodes' views carry the new node and n1's fresh load figures.
    let load_after_kill = keeper.last_load() + 2;
    for (who, cp) in [("this node", &cp), ("the other node", &other)] {
        wait_view(
            &mut cp.watch_nodes(),
            &format!("{who}'s view to show n2 and n1's load reach {load_after_kill}"),
            |v| {
                v.reachable
                    && v.nodes.contains_key("n2")
                    && v.nodes
                        .get("n1")
                        .is_some_and(|n| n.load.sessions >= load_after_kill)
            },
        )
        .await;
    }
    // Keep-alive: n1 stays listed for several TTLs.
    stays_listed(&cp, "n1", STAY_LISTED, REQUEST_TIMEOUT).await;
    let (beats, slowest) = keeper.check_since(killed, REQUEST_TIMEOUT);
    assert!(beats >= 6, "only {beats} keep-alives since the kill");
    // Neither view was ever taken for unreachable.
    assert_eq!(
        *lost_mine.lock().unwrap(),
        [],
        "this node's view turned unreachable"
    );
    assert_eq!(
        *lost_theirs.lock().unwrap(),
        [],
        "the other node's view turned unreachable"
    );

    // A clean exit through the surviving members: gone at once for everyone.
    cp.revoke_lease(&l2).await.unwrap();
    for cp in [&cp, &other] {
        wait_view(&mut cp.watch_nodes(), "n2 to leave", |v| {
            !v.nodes.contains_key("n2")
        })
        .await;
    }
    eprintln!(
        "after the kill: register took {register_took:?}; {beats} keep-alives, slowest {slowest:?}; now on {}",
        cp.endpoint_in_use()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_member_delays_requests_by_about_one_keep_alive_interval() {
    let cluster = EtcdCluster::start(&["127.0.0.84", "127.0.0.85", "127.0.0.86"]);
    // A follower first (the leader last): the cluster keeps its leader while that member hangs.
    let leader = cluster.leader_url();
    let mut endpoints = cluster.client_urls();
    endpoints.sort_by_key(|url| *url == leader);
    let cp = connect(endpoints.clone()).await;
    let hung = cp.endpoint_in_use().to_string();
    assert_ne!(hung, leader);

    let n1 = node("n1", "a", 0);
    let lease = cp.register_node(n1.clone(), TTL).await.unwrap();
    let keeper = KeepAlive::spawn(cp.clone(), lease, n1);
    let mut view = cp.watch_nodes();
    wait_view(&mut view, "n1 in the view before the hang", |v| {
        v.reachable && v.nodes.contains_key("n1")
    })
    .await;
    let lost = watch_reachability(cp.watch_nodes());

    let paused = Instant::now();
    let mut cluster = cluster;
    cluster.member(&hung).pause();

    let started = Instant::now();
    cp.register_node(node("n2", "b", 0), LONG)
        .await
        .expect("registering while a member hangs");
    let register_took = started.elapsed();
    // Three requests (read, grant, put); only the first can meet the hung member.
    assert!(
        register_took < HUNG_MEMBER_DELAY,
        "registering took {register_took:?}"
    );
    assert_ne!(cp.endpoint_in_use(), hung, "still using the hung member");
    assert_eq!(
        cp.place_room(&room("r1"), &sites(&["b"])).await.unwrap().id,
        "n2"
    );
    let load_after_pause = keeper.last_load() + 2;
    wait_view(
        &mut view,
        &format!("the view to show n2 and n1's load reach {load_after_pause}"),
        |v| {
            v.reachable
                && v.nodes.contains_key("n2")
                && v.nodes
                    .get("n1")
                    .is_some_and(|n| n.load.sessions >= load_after_pause)
        },
    )
    .await;
    stays_listed(&cp, "n1", STAY_LISTED, HUNG_MEMBER_DELAY).await;
    let (beats, slowest) = keeper.check_since(paused, HUNG_MEMBER_DELAY);
    assert!(beats >= 6, "only {beats} keep-alives since the pause");
    assert_eq!(*lost.lock().unwrap(), [], "the view turned unreachable");
    eprintln!(
        "while a member hung: register took {register_took:?}; {beats} keep-alives, slowest {slowest:?}"
    );
    cluster.member(&hung).resume();
}
