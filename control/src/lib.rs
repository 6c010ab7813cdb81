//! The control plane: where nodes register (under a lease), find each other, and where rooms are
//! placed. One trait, [`ControlPlane`], with two backends behind it — [`memory::MemoryControlPlane`]
//! for a single node (the default, no external service) and [`etcd::EtcdControlPlane`] for a mesh
//! — plus [`any::AnyControlPlane`] to pick one at run time. Nodes talk to the trait only, so
//! changing backends is configuration, not code. Placement decisions themselves are a pure
//! function ([`placement`]) shared by both backends.

pub mod accounts;
pub mod any;
pub mod audit;
pub mod etcd;
pub mod memory;
pub mod placement;
pub mod records;
pub mod room_records;

use kaskade_proto::RoomName;
use kaskade_proto::signal::{ParticipantInfo, TrackInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A node's id, unique within a mesh.
pub type NodeId = String;

/// How busy a node is; placement prefers the node with the smallest load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Peer sessions (WebSocket participants' connections, WHIP and WHEP sessions).
    pub sessions: u64,
    /// Tracks published on this node.
    pub tracks: u64,
    /// RTP packets per second the node sends to clients and relays.
    pub packets_per_sec: u64,
    /// Process CPU use, in percent of one core (may exceed 100 on several cores).
    pub cpu_percent: u32,
    /// In-node forwarding latency over the last sample period, median and 99th percentile, in
    /// microseconds (0 when nothing was forwarded).
    #[serde(default)]
    pub forward_latency_p50_us: u64,
    #[serde(default)]
    pub forward_latency_p99_us: u64,
    /// Sessions the node is sized for (`--capacity-sessions`); 0 when not configured.
    #[serde(default)]
    pub capacity_sessions: u64,
}

/// One relay link as the node at its near end sees it; published in the node's record so any
/// node (and its operator page) can draw the whole mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The node at the far end.
    pub peer: NodeId,
    pub peer_site: String,
    pub up: bool,
    /// Round-trip time in microseconds.
    pub rtt_us: u64,
    /// Media loss on the link, in parts per million.
    pub loss_ppm: u32,
    /// Media received over the link, in bits per second.
    pub receive_bps: u64,
}

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub site: String,
    /// Where browsers reach its HTTP/WebSocket endpoint (`http://host:port/`).
    pub http_url: String,
    /// Its media address (UDP), as put in ICE candidates.
    pub media_addr: String,
    /// Its relay endpoint (QUIC), where other nodes of the mesh connect; empty if it has none.
    pub relay_addr: String,
    #[serde(default)]
    pub load: NodeLoad,
    /// A draining node takes no new placements and is moving its participants away.
    #[serde(default)]
    pub draining: bool,
    /// Its relay links, as it measures them.
    #[serde(default)]
    pub links: Vec<LinkReport>,
}

/// Proof of a registration; it expires unless kept alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub ttl: Duration,
}

/// The live nodes as last seen by a backend, delivered through [`ControlPlane::watch_nodes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// False while the backend cannot reach its store: `nodes` is then the last known view and
    /// must not be taken as proof that a node died.
    pub reachable: bool,
}

/// One node's part of a room, kept in the control plane so any node can describe any room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomShare {
    pub node: NodeId,
    pub participants: Vec<ParticipantInfo>,
    pub tracks: Vec<TrackInfo>,
}

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("lease {0} has expired or does not exist")]
    LeaseExpired(u64),
    #[error("no live node can take room {0}")]
    NoNodeAvailable(String),
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    #[error("control plane returned malformed data: {0}")]
    Malformed(String),
    /// A conditional record write or delete found the record in another state than expected
    /// (see [`records::Expect`]); the message names the key. Read again and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A record key, prefix or value the store refuses (see [`records::check_record_key`]).
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// The operations every backend offers. All are async because remote backends are; each one
/// either completes or fails within the backend's request timeout (a few seconds at most), so
/// callers never hang on an unreachable store.
pub trait ControlPlane: Send + Sync {
    /// Registers (or re-registers) a node under a new lease of `ttl`.
    fn register_node(
        &self,
        node: NodeRecord,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, ControlError>> + Send;

    /// Extends a lease by its ttl and updates the node's record (load, draining). Fails with
    /// [`ControlError::LeaseExpired`] when the lease is gone: the caller registers again.
    fn keep_alive(
        &self,
        lease: &Lease,
        node: NodeRecord,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// Ends `lease` now, for a node that exits cleanly: the node registered under it, the
    /// placements that name it and the room shares published under it vanish at once instead of
    /// when the lease would have expired, and [`watch_nodes`](Self::watch_nodes) shows the node
    /// leave. Revoking a lease that is already gone (expired, revoked, replaced) succeeds.
    fn revoke_lease(&self, lease: &Lease) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// Nodes whose lease is live.
    fn live_nodes(&self) -> impl Future<Output = Result<Vec<NodeRecord>, ControlError>> + Send;

    /// A view of the live nodes that changes as nodes come, go (lease expiry) and update their
    /// records. Backed by a watch, not by polling, where the store has watches.
    fn watch_nodes(&self) -> tokio::sync::watch::Receiver<NodeView>;

    /// The node that takes participants of `sites[0]` in `room`: the current placement for that
    /// (room, site) if its node is alive and not draining, else the least-loaded live,
    /// non-draining node of the first site in `sites` that has one (nearest sites first), recorded
    /// as the new placement for `(room, sites[0])`. Placement records die with the chosen node's
    /// lease.
    fn place_room(
        &self,
        room: &RoomName,
        sites: &[String],
    ) -> impl Future<Output = Result<NodeRecord, ControlError>> + Send;

    /// Forgets `node`'s placements of `room` (the room closed there).
    fn release_room(
        &self,
        room: &RoomName,
        node: &str,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// Stores (or replaces) `share.node`'s part of `room` under `lease`: it disappears when the
    /// node's lease does.
    fn publish_room_share(
        &self,
        lease: &Lease,
        room: &RoomName,
        share: RoomShare,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// Removes `node`'s part of `room` (the room closed there).
    fn withdraw_room_share(
        &self,
        room: &RoomName,
        node: &str,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// A secret shared by every node of the mesh (32 random bytes, created by the first node
    /// that asks and kept in the store), for tokens one node issues and another checks.
    fn mesh_secret(&self) -> impl Future<Output = Result<Vec<u8>, ControlError>> + Send {
        async {
            Err(ControlError::Unavailable(
                "this backend keeps no shared secret".into(),
            ))
        }
    }

    /// Every live node's part of `room`, ordered by node id.
    fn room_shares(
        &self,
        room: &RoomName,
    ) -> impl Future<Output = Result<Vec<RoomShare>, ControlError>> + Send;

    /// Every live node's part of every room, ordered by room, then node id: the mesh-wide room
    /// listing of the operators' view.
    fn all_room_shares(
        &self,
    ) -> impl Future<Output = Result<Vec<(RoomName, RoomShare)>, ControlError>> + Send;

    /// The durable record at `key` (see [`records`]), if there is one. Fails with
    /// [`ControlError::Invalid`] for a key [`records::check_record_key`] refuses.
    fn get_record(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<records::Record>, ControlError>> + Send;

    /// Writes the durable record at `key` if `expect` holds, and returns its new version. Fails
    /// with [`ControlError::Conflict`] when `expect` does not hold (nothing is written), with
    /// [`ControlError::Invalid`] for a refused key or a value over
    /// [`records::MAX_RECORD_VALUE_LEN`]. After an `Unavailable` the write may or may not have
    /// happened (a conditional write retried then may report a `Conflict` with itself): read
    /// the record again to know.
    fn put_record(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: records::Expect,
    ) -> impl Future<Output = Result<u64, ControlError>> + Send;

    /// Deletes the durable record at `key` if `expect` holds; true if a record was deleted.
    /// Deleting a missing key under [`records::Expect::Any`] (or `Absent`) is `Ok(false)`;
    /// fails with [`ControlError::Conflict`] when `expect` does not hold.
    fn delete_record(
        &self,
        key: &str,
        expect: records::Expect,
    ) -> impl Future<Output = Result<bool, ControlError>> + Send;

    /// Every durable record whose key starts with `prefix` (a plain string prefix: `"a/"` lists
    /// the records under `a`, `"a"` also `ab`), ordered by key (byte order); an empty prefix
    /// lists them all. Fails with [`ControlError::Invalid`] for a prefix
    /// [`records::check_record_prefix`] refuses.
    fn list_records(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<records::Record>, ControlError>> + Send;

    /// Deletes every durable record whose key starts with `prefix` (e.g. everything of a
    /// tenant) and returns how many there were. `prefix` may not be empty.
    fn delete_records(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<u64, ControlError>> + Send;
}
