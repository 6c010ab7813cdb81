//! Maintenance drain: the node stops taking placements (its registry record says `draining`),
//! asks every signalling participant to reconnect to the node the room is placed on now (a
//! `reconnect` message; the client resumes there with its token and republishes), waits until
//! its sessions are gone or the deadline passes, and then tells the node to stop. WHIP/WHEP
//! sessions cannot be moved by the protocol: they end at the deadline and their clients re-POST.

use super::Cluster;
use super::gate::Placement;
use crate::edge::EngineHandle;
use kaskade_mesh::RoomMsg;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How long the drain waits for the registry to show the node draining before it moves
/// participants (so the placement it asks for does not name this node again).
const FLAG_PROPAGATION: Duration = Duration::from_secs(2);
/// How often the drain checks whether the node is empty.
const EMPTY_CHECK: Duration = Duration::from_millis(100);

/// Starts a drain unless one is running; `done` is set when the node should stop.
pub fn start(
    cluster: Arc<Cluster>,
    engine: EngineHandle,
    deadline: Duration,
    done: watch::Sender<bool>,
) -> bool {
    if !cluster.set_draining() {
        return false;
    }
    info!(node = %cluster.node, deadline_s = deadline.as_secs(), "drain started");
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        // Wait until the control plane's view carries the flag (or give up waiting).
        let mut view = cluster.control_view();
        let _ = tokio::time::timeout(FLAG_PROPAGATION, async {
            let node = cluster.node.clone();
            let _ = view
                .wait_for(|v| v.nodes.get(&node).is_none_or(|n| n.draining))
                .await;
        })
        .await;
        for (room, _) in cluster.rooms.list() {
            match cluster.place(&room, None, true).await {
                Placement::Elsewhere(node) => {
                    info!(node = %cluster.node, room = %room, to = %node.id, "moving the room's participants");
                    if let Some(actor) = cluster.rooms.get(&room) {
                        let _ = actor.cast(RoomMsg::Reconnect {
                            url: super::ws_url(&node.http_url),
                            reason: "node draining for maintenance".into(),
                        });
                    }
                }
                other => {
                    warn!(node = %cluster.node, room = %room, placement = ?other, "no other node for the room; its participants stay until the deadline");
                }
            }
        }
        loop {
            if engine.stats().await.sessions == 0 {
                info!(node = %cluster.node, took_ms = started.elapsed().as_millis() as u64, "drain complete: node empty");
                break;
            }
            if started.elapsed() >= deadline {
                warn!(node = %cluster.node, "drain deadline reached; closing the remaining sessions");
                break;
            }
            tokio::time::sleep(EMPTY_CHECK).await;
        }
        let _ = done.send(true);
    });
    true
}
