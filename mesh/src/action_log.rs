//! What a room reports of its hosts' actions, for the node's audit log: role changes, mutes,
//! removals, setting changes and ended meetings, each once, by the node of the host who acted
//! (the only node that knows the host's account). The room knows only this trait; the node
//! implements it over its audit log.

use kaskade_proto::RoomName;

/// A moderation action a room applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeratedAction {
    RoleChanged,
    Muted,
    Removed,
    SettingsChanged,
    MeetingEnded,
    Admitted,
    Denied,
}

/// One applied action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerationEntry {
    pub room: RoomName,
    /// The acting host's user id, or its participant id without access control.
    pub actor: String,
    pub action: ModeratedAction,
    /// The participant acted on (its user id when known here); `None` for the whole room.
    pub target: Option<String>,
    /// E.g. the new role or setting.
    pub detail: Option<String>,
}

/// Receives what rooms applied.
pub trait ActionLog: Send + Sync {
    fn log(&self, entry: ModerationEntry);
}
