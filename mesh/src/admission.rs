//! Admission of a signalling join: the node-side policy the `Participant` actor asks before it
//! enters a room — whether this node takes the participant, sends it to another node (placement),
//! or refuses it (control plane unreachable, draining) — and the resume tokens that let a client
//! come back as the same participant on another node. The actor knows only this trait; the node
//! implements it over its control plane.

use kaskade_proto::signal::{ErrorCode, IceServer, Role};
use kaskade_proto::{ParticipantId, RoomName};

/// What to do with a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Take it here.
    Here,
    /// Another node serves this room for the participant's site: the client goes to `url`.
    Redirect { url: String },
    /// Refuse it, with a reason for the client.
    Refused { code: ErrorCode, message: String },
}

/// Who a valid resume token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeClaim {
    pub participant: ParticipantId,
    pub name: String,
    /// The role ceiling its first join was authorised with (see [`JoinGrant::ceiling`]).
    pub ceiling: Option<Role>,
}

/// What access control allows a joining participant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGrant {
    /// The authenticated user (for logs and audit); `None` without access control.
    pub user: Option<String>,
    /// The highest role the participant may be given at join; `None` without access control
    /// (the room's own rules apply).
    pub ceiling: Option<Role>,
    /// The display name access control vouches for (an account's), used instead of the one the
    /// client asked for.
    pub name: Option<String>,
    /// The room's lobby applies to this joiner (kept by access control, so it holds from the
    /// first join on a node on).
    pub lobby: bool,
    /// The lock and lobby settings access control keeps for the room, which a room opening on
    /// this node starts with.
    pub kept: Option<KeptSettings>,
}

/// The room settings access control keeps in the room's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptSettings {
    pub locked: bool,
    pub lobby: bool,
}

/// What a join presents to access control.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinCredentials<'a> {
    /// Access token.
    pub token: Option<&'a str>,
    /// The room's password.
    pub password: Option<&'a str>,
}

/// A change to a room's protection, by a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtectionChange {
    /// Set (`Some`) or clear the room's password.
    Password(Option<String>),
    /// The room's lock and lobby settings, as a host just set them.
    Flags { locked: bool, lobby: bool },
}

/// Why access control refused a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinDenied {
    pub code: ErrorCode,
    pub message: String,
}

/// The node's join policy.
#[async_trait::async_trait]
pub trait JoinGate: Send + Sync {
    /// Decides where a join for `room` goes. `site` is the client's wish (default: this node's
    /// site); `resuming` joins are not refused for being the room's first on this node when the
    /// control plane is unreachable (the room already exists in the mesh).
    async fn admit(&self, room: &RoomName, site: Option<&str>, resuming: bool) -> Admission;

    /// Checks the access token (and the room's password, if it has one) a join presents for
    /// `room`. Without access control every join is allowed with the room's own role rules.
    async fn authorize(
        &self,
        _room: &RoomName,
        _credentials: JoinCredentials<'_>,
    ) -> Result<JoinGrant, JoinDenied> {
        Ok(JoinGrant::default())
    }

    /// Changes `room`'s protection for a host (the caller checked the role). Needs access
    /// control: without it there is nowhere to keep it.
    async fn protect(&self, _room: &RoomName, _change: ProtectionChange) -> Result<(), JoinDenied> {
        Err(JoinDenied {
            code: ErrorCode::BadRequest,
            message: "room passwords need a node with access control".into(),
        })
    }

    /// A token the client can present to resume as `participant` of `room`, keeping the role
    /// ceiling it was authorised with.
    fn issue_resume(
        &self,
        room: &RoomName,
        participant: &ParticipantId,
        name: &str,
        ceiling: Option<Role>,
    ) -> String;

    /// Checks a resume token for `room`.
    fn verify_resume(&self, room: &RoomName, token: &str) -> Result<ResumeClaim, String>;

    /// WebSocket URLs of other nodes a client of this node should try if it goes away.
    fn alternates(&self) -> Vec<String>;

    /// STUN/TURN servers (with credentials made for `participant`) for the client's peer
    /// connections; none by default.
    fn ice_servers(&self, _participant: &ParticipantId) -> Vec<IceServer> {
        Vec::new()
    }
}

/// The single-node policy: every join is taken here; resume tokens are the participant id
/// (a single node has nobody to resume at but itself).
pub struct AdmitAll;

#[async_trait::async_trait]
impl JoinGate for AdmitAll {
    async fn admit(&self, _room: &RoomName, _site: Option<&str>, _resuming: bool) -> Admission {
        Admission::Here
    }

    fn issue_resume(
        &self,
        _room: &RoomName,
        _participant: &ParticipantId,
        _name: &str,
        _ceiling: Option<Role>,
    ) -> String {
        String::new()
    }

    fn verify_resume(&self, _room: &RoomName, _token: &str) -> Result<ResumeClaim, String> {
        Err("this node does not resume sessions".into())
    }

    fn alternates(&self) -> Vec<String> {
        Vec::new()
    }
}
