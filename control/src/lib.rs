//! The control plane: where nodes register (under a lease) and where rooms are placed. One trait,
//! [`ControlPlane`], with backends behind it — [`memory::MemoryControlPlane`] for a single node
//! (the default, no external service) and, in a later step, etcd for a mesh. Nodes talk to the
//! trait only, so changing backends is configuration, not code.

pub mod memory;

use kaskade_proto::RoomName;
use std::time::Duration;

/// A node's id, unique within a mesh.
pub type NodeId = String;

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub site: String,
    /// Where browsers reach its HTTP/WebSocket endpoint.
    pub http_url: String,
    /// Its media address (UDP), as put in ICE candidates.
    pub media_addr: String,
    /// Its relay endpoint (QUIC), where other nodes of the mesh connect; empty if it has none.
    pub relay_addr: String,
    /// Peer sessions it currently holds: the load used for placement.
    pub sessions: u64,
    pub draining: bool,
}

/// Proof of a registration; it expires unless kept alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub ttl: Duration,
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
}

/// The operations every backend offers. All are async because remote backends are.
pub trait ControlPlane: Send + Sync {
    /// Registers (or re-registers) a node under a new lease of `ttl`.
    fn register_node(
        &self,
        node: NodeRecord,
        ttl: Duration,
    ) -> impl Future<Output = Result<Lease, ControlError>> + Send;

    /// Extends a lease by its ttl and updates the node's record (load, draining).
    fn keep_alive(
        &self,
        lease: &Lease,
        node: NodeRecord,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;

    /// Nodes whose lease is live.
    fn live_nodes(&self) -> impl Future<Output = Result<Vec<NodeRecord>, ControlError>> + Send;

    /// The node hosting `room`: the current placement if its node is alive, else the least-loaded
    /// live, non-draining node of `site` (any site if that one has none), recorded as the new
    /// placement.
    fn place_room(
        &self,
        room: &RoomName,
        site: &str,
    ) -> impl Future<Output = Result<NodeRecord, ControlError>> + Send;

    /// Forgets a room's placement (the room closed) if it is still on `node`.
    fn release_room(
        &self,
        room: &RoomName,
        node: &str,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;
}
