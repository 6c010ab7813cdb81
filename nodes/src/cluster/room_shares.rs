//! Keeps this node's part of each room (its local, listed members and their tracks) in the
//! control plane, so any node can describe any room (`GET /api/rooms/{room}` answers from it):
//! a share is written when it changed, withdrawn when the room closed here, and written again
//! under a new lease after the old one was lost.

use super::Cluster;
use kaskade_control::{ControlPlane, Lease, RoomShare};
use kaskade_proto::RoomName;
use std::collections::BTreeMap;
use tracing::debug;

/// What was last written, per room, and under which lease.
#[derive(Default)]
pub struct RoomSharePublisher {
    written: BTreeMap<RoomName, RoomShare>,
    lease: Option<u64>,
}

impl RoomSharePublisher {
    /// Writes changed shares and withdraws closed rooms.
    pub async fn sync(&mut self, cluster: &Cluster, lease: &Lease) {
        if self.lease != Some(lease.id) {
            self.written.clear();
            self.lease = Some(lease.id);
        }
        let mut current = BTreeMap::new();
        for (room, _) in cluster.rooms.list() {
            if let Some(share) = cluster.rooms.local_share(&room).await {
                current.insert(
                    room,
                    RoomShare {
                        node: cluster.node.clone(),
                        participants: share.participants,
                        tracks: share.tracks,
                    },
                );
            }
        }
        let closed: Vec<RoomName> = self
            .written
            .keys()
            .filter(|r| !current.contains_key(*r))
            .cloned()
            .collect();
        for room in closed {
            match cluster
                .control
                .withdraw_room_share(&room, &cluster.node)
                .await
            {
                Ok(()) => {
                    self.written.remove(&room);
                    let _ = cluster.control.release_room(&room, &cluster.node).await;
                }
                Err(e) => debug!(room = %room, error = %e, "withdrawing the room share failed"),
            }
        }
        for (room, share) in current {
            if self.written.get(&room) == Some(&share) {
                continue;
            }
            match cluster
                .control
                .publish_room_share(lease, &room, share.clone())
                .await
            {
                Ok(()) => {
                    self.written.insert(room, share);
                }
                Err(e) => debug!(room = %room, error = %e, "publishing the room share failed"),
            }
        }
    }
}
