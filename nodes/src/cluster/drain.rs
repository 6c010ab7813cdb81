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
use tracing::field::Empty;
use tracing::{Instrument, info, info_span, warn};

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
    cluster.metrics.mesh.drains.inc();
    cluster.metrics.mesh.draining.set(1);
    info!(node = %cluster.node, deadline_s = deadline.as_secs(), "drain started");
    // One span for the whole drain; the placements it asks for are its children.
    let span = info_span!("drain", node = %cluster.node, site = %cluster.site,
        deadline_s = deadline.as_secs(), rooms = Empty, rooms_moved = Empty, outcome = Empty);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let (mut rooms, mut moved) = (0u64, 0u64);
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
            rooms += 1;
            match cluster.place(&room, None, true).await {
                Placement::Elsewhere(node) => {
                    info!(node = %cluster.node, room = %room, to = %node.id, "moving the room's participants");
                    if let Some(actor) = cluster.rooms.get(&room) {
                        moved += 1;
                        cluster.metrics.mesh.drain_rooms_moved.inc();
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
        let span = tracing::Span::current();
        span.record("rooms", rooms);
        span.record("rooms_moved", moved);
        loop {
            if engine.stats().await.sessions == 0 {
                span.record("outcome", "empty");
                info!(node = %cluster.node, took_ms = started.elapsed().as_millis() as u64, "drain complete: node empty");
                break;
            }
            if started.elapsed() >= deadline {
                span.record("outcome", "deadline");
                warn!(node = %cluster.node, "drain deadline reached; closing the remaining sessions");
                break;
            }
            tokio::time::sleep(EMPTY_CHECK).await;
        }
        let _ = done.send(true);
    }
    .instrument(span));
    true
}
