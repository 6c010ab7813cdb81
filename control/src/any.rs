//! `AnyControlPlane`: the backend chosen by configuration (memory unless `--etcd` is given),
//! behind the same trait, so the node is written once for both.

use crate::etcd::EtcdControlPlane;
use crate::memory::MemoryControlPlane;
use crate::records::{Expect, Record};
use crate::{ControlError, ControlPlane, Lease, NodeRecord, NodeView, RoomShare};
use kaskade_proto::RoomName;
use std::time::Duration;
use tokio::sync::watch;

pub enum AnyControlPlane {
    Memory(MemoryControlPlane),
    Etcd(EtcdControlPlane),
}

impl AnyControlPlane {
    /// The backend's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Etcd(_) => "etcd",
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $cp:ident => $e:expr) => {
        match $self {
            AnyControlPlane::Memory($cp) => $e,
            AnyControlPlane::Etcd($cp) => $e,
        }
    };
}

impl ControlPlane for AnyControlPlane {
    async fn register_node(&self, node: NodeRecord, ttl: Duration) -> Result<Lease, ControlError> {
        dispatch!(self, cp => cp.register_node(node, ttl).await)
    }

    async fn keep_alive(&self, lease: &Lease, node: NodeRecord) -> Result<(), ControlError> {
        dispatch!(self, cp => cp.keep_alive(lease, node).await)
    }

    async fn revoke_lease(&self, lease: &Lease) -> Result<(), ControlError> {
        dispatch!(self, cp => cp.revoke_lease(lease).await)
    }

    async fn live_nodes(&self) -> Result<Vec<NodeRecord>, ControlError> {
        dispatch!(self, cp => cp.live_nodes().await)
    }

    fn watch_nodes(&self) -> watch::Receiver<NodeView> {
        dispatch!(self, cp => cp.watch_nodes())
    }

    async fn place_room(
        &self,
        room: &RoomName,
        sites: &[String],
    ) -> Result<NodeRecord, ControlError> {
        dispatch!(self, cp => cp.place_room(room, sites).await)
    }

    async fn release_room(&self, room: &RoomName, node: &str) -> Result<(), ControlError> {
        dispatch!(self, cp => cp.release_room(room, node).await)
    }

    async fn publish_room_share(
        &self,
        lease: &Lease,
        room: &RoomName,
        share: RoomShare,
    ) -> Result<(), ControlError> {
        dispatch!(self, cp => cp.publish_room_share(lease, room, share).await)
    }

    async fn withdraw_room_share(&self, room: &RoomName, node: &str) -> Result<(), ControlError> {
        dispatch!(self, cp => cp.withdraw_room_share(room, node).await)
    }

    async fn mesh_secret(&self) -> Result<Vec<u8>, ControlError> {
        dispatch!(self, cp => cp.mesh_secret().await)
    }

    async fn room_shares(&self, room: &RoomName) -> Result<Vec<RoomShare>, ControlError> {
        dispatch!(self, cp => cp.room_shares(room).await)
    }

    async fn all_room_shares(&self) -> Result<Vec<(RoomName, RoomShare)>, ControlError> {
        dispatch!(self, cp => cp.all_room_shares().await)
    }

    async fn get_record(&self, key: &str) -> Result<Option<Record>, ControlError> {
        dispatch!(self, cp => cp.get_record(key).await)
    }

    async fn put_record(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<u64, ControlError> {
        dispatch!(self, cp => cp.put_record(key, value, expect).await)
    }

    async fn delete_record(&self, key: &str, expect: Expect) -> Result<bool, ControlError> {
        dispatch!(self, cp => cp.delete_record(key, expect).await)
    }

    async fn list_records(&self, prefix: &str) -> Result<Vec<Record>, ControlError> {
        dispatch!(self, cp => cp.list_records(prefix).await)
    }

    async fn delete_records(&self, prefix: &str) -> Result<u64, ControlError> {
        dispatch!(self, cp => cp.delete_records(prefix).await)
    }
}
