//! How a room's local part and the parts on other nodes meet. A `Room` actor reports every change
//! made by its local members as a [`LocalRoomEvent`] to the node's [`MeshSink`] (the relay tells
//! interested nodes), and receives what other nodes' members do as [`RemoteRoomEvent`]s, which it
//! merges into what its local members see. Nothing here knows about QUIC or media.

use kaskade_proto::signal::{ModerationAction, ParticipantInfo, RoomSettings, TrackInfo};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use std::sync::Arc;

/// A change made on this node, in the order the room actor made it.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalRoomEvent {
    /// The room has local members now (the first one joined, perhaps a hidden viewer).
    Opened,
    /// The last local member left; the room actor is gone.
    Closed,
    Joined(ParticipantInfo),
    Left(ParticipantId),
    Published(Vec<TrackInfo>),
    Unpublished(Vec<TrackId>),
    Muted {
        track: TrackId,
        muted: bool,
    },
    Chat {
        from: ParticipantId,
        name: String,
        text: String,
        ts: u64,
    },
    /// A local member's role or hand changed.
    Updated(ParticipantInfo),
    /// A local host acts on a member connected to another node.
    Moderate {
        by: ParticipantId,
        target: ParticipantId,
        action: ModerationAction,
    },
    /// A local host changed the room's settings.
    Settings(RoomSettings),
    /// A local member's audio level (RFC 6464 dBov) while it speaks.
    AudioLevel {
        participant: ParticipantId,
        level: u8,
    },
    /// Who waits in the lobby here now (the whole list).
    Lobby(Vec<(ParticipantId, String)>),
}

/// A change made on another node of the mesh, for one room.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteRoomEvent {
    /// The node's whole part of the room: replaces whatever was known of it.
    State {
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
    },
    Joined(ParticipantInfo),
    Left(ParticipantId),
    Published(TrackInfo),
    Unpublished(TrackId),
    Muted {
        track: TrackId,
        muted: bool,
    },
    Chat {
        from: ParticipantId,
        name: String,
        text: String,
        ts: u64,
    },
    Updated(ParticipantInfo),
    Moderate {
        by: ParticipantId,
        target: ParticipantId,
        action: ModerationAction,
    },
    Settings(RoomSettings),
    AudioLevels(Vec<(ParticipantId, u8)>),
    /// Who waits in the lobby on that node (the whole list).
    Lobby(Vec<(ParticipantId, String)>),
    /// The node left the mesh or lost interest: forget its part.
    NodeGone,
}

type Deliver = dyn Fn(&RoomName, LocalRoomEvent) + Send + Sync;

/// Where rooms report their local changes (the relay); a no-op on a single node.
#[derive(Clone)]
pub struct MeshSink(Arc<Deliver>);

impl MeshSink {
    pub fn new(deliver: impl Fn(&RoomName, LocalRoomEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(deliver))
    }

    /// A sink that drops everything: the node is alone.
    pub fn none() -> Self {
        Self::new(|_, _| {})
    }

    pub fn send(&self, room: &RoomName, event: LocalRoomEvent) {
        (self.0)(room, event)
    }
}

impl Default for MeshSink {
    fn default() -> Self {
        Self::none()
    }
}
