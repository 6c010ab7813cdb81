//! The WebSocket signalling protocol between a client and a node (`/ws`), as JSON text frames.
//!
//! Every frame is one JSON object with a `"type"` field naming the message (snake_case). A client
//! holds two peer connections: a *publish* connection that the client offers (it adds and removes
//! its own tracks and renegotiates by sending a new `publish_offer`), and a *subscribe* connection
//! that the node offers (it adds and removes remote tracks and renegotiates by sending a new
//! `subscribe_offer`). Each side offers on one connection only, so offers never collide.
//!
//! The full message flow is described in `docs/signalling.md`.

use crate::ids::{ParticipantId, RoomName, TrackId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest WebSocket message a node accepts; larger ones close the socket with code 1009.
pub const MAX_SIGNAL_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest display name; longer ones are refused with `bad_request`.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;
/// Longest chat text; longer ones are refused with `bad_request`.
pub const MAX_CHAT_LEN: usize = 4096;
/// Longest room password accepted, in bytes.
pub const MAX_ROOM_PASSWORD_BYTES: usize = 256;
/// How the message of an `invalid_sdp` error for a refused `publish_offer` starts.
pub const PUBLISH_OFFER_REFUSED: &str = "publish offer refused";
/// How the message of an `invalid_sdp` error for a refused `subscribe_answer` starts; the node's
/// subscribe offer then still waits for an answer.
pub const SUBSCRIBE_ANSWER_REFUSED: &str = "subscribe answer refused";

/// What a published track carries, as the publisher declared it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
    /// A WHIP publisher or a client that did not say.
    Unknown,
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

/// One published track as the room knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub participant: ParticipantId,
    pub kind: MediaKind,
    pub source: TrackSource,
    /// Simulcast layers (RIDs) the publisher sends, lowest quality first; empty without simulcast.
    #[serde(default)]
    pub layers: Vec<String>,
    /// True while the publisher has it muted.
    #[serde(default)]
    pub muted: bool,
}

/// A STUN or TURN server as `RTCPeerConnection`'s `iceServers` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:host:port?transport=udp`, `stun:host:port`, …
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What a participant may do in a room. Enforced by the node, not by the page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes, and moderates: changes roles, mutes, removes, changes the room's settings.
    Host,
    /// Publishes.
    #[default]
    Speaker,
    /// Subscribes only; may raise a hand to be promoted. Listed to hosts only; everyone else sees
    /// an `audience_count`.
    Audience,
}

impl Role {
    /// May send media into the room.
    pub fn may_publish(self) -> bool {
        !matches!(self, Role::Audience)
    }

    /// May change roles, mute or remove others and change the room's settings.
    pub fn may_moderate(self) -> bool {
        matches!(self, Role::Host)
    }
}

/// One participant as the room knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    #[serde(default)]
    pub role: Role,
    /// When the participant raised its hand (milliseconds since the Unix epoch, clock of the
    /// participant's node); `None` while the hand is down. Hosts order the hand queue by it.
    #[serde(default)]
    pub hand_raised_at: Option<u64>,
}

impl ParticipantInfo {
    /// A speaker with its hand down.
    pub fn new(id: ParticipantId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            role: Role::default(),
            hand_raised_at: None,
        }
    }
}

/// A room's settings, changed by hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    /// Classroom/webinar mode: newcomers join as audience and speakers are moved to the
    /// audience; only hosts publish, and whoever a host promotes.
    #[serde(default)]
    pub only_hosts_publish: bool,
    /// Nobody new gets in (hosts' accounts excepted); who is in stays. Resuming sessions are
    /// not new.
    #[serde(default)]
    pub locked: bool,
    /// Newcomers who may not host wait in a lobby until a host admits (or denies) them.
    #[serde(default)]
    pub lobby: bool,
}

/// One participant waiting in a room's lobby.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobbyEntry {
    pub participant: ParticipantId,
    pub name: String,
}

/// What a host does to another participant (over the relay when the target is on another node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    SetRole {
        role: Role,
    },
    /// Mutes the target's tracks of one kind: the node stops forwarding them until the target
    /// unmutes itself (a host cannot unmute anyone).
    Mute {
        kind: MediaKind,
    },
    /// Removes the target from the room; `ban` keeps its account out.
    Remove {
        ban: bool,
    },
    /// Ends the meeting: every participant (hosts too) is told and disconnected.
    EndMeeting,
    /// Lets the target in from the lobby.
    Admit,
    /// Turns the target away from the lobby.
    Deny,
}

/// A client's wish for one track's simulcast layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerChoice {
    /// Lowest layer.
    Low,
    Medium,
    /// Highest layer.
    High,
}

impl LayerChoice {
    /// The simulcast layer index, lowest first (0 = low, 2 = high).
    pub fn index(self) -> u8 {
        match self {
            Self::Low => 0,
            Self::Medium => 1,
            Self::High => 2,
        }
    }
}

/// An ICE candidate from the client (trickle ICE), in the browser's `RTCIceCandidateInit` shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, rename = "sdpMid")]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
}

/// Which of the client's two peer connections a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    Publish,
    Subscribe,
}

/// Messages a client sends to a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message: enter `room` as `name`. With `auto_subscribe` (default true) the node
    /// subscribes the client to every track in the room, present and future.
    Join {
        room: RoomName,
        name: String,
        #[serde(default = "default_true")]
        auto_subscribe: bool,
        /// The `resume_token` of an earlier session: come back as the same participant (after the
        /// node died, or when a node asked to `reconnect`).
        #[serde(default)]
        resume: Option<String>,
        /// The site the client wants to be served from; default: the site of the node it asks.
        #[serde(default)]
        site: Option<String>,
        /// The role asked for. `host` is granted when the room has no host yet (until access
        /// control hands out host grants); `audience` is always granted. Default: `host` for the
        /// room's first participant, else the room's default (`speaker`, or `audience` with
        /// `only_hosts_publish`).
        #[serde(default)]
        role: Option<Role>,
        /// Access token (from login or an invite link). Required unless the node runs with
        /// `--insecure-dev`; not needed with a valid `resume` token.
        #[serde(default)]
        token: Option<String>,
        /// The room's password, when a host set one (hosts need none).
        #[serde(default)]
        password: Option<String>,
    },
    /// Offer for the publish connection. `sources` maps the offer's m-line `mid`s to what each
    /// track carries, so other participants can tell the camera from the screen.
    PublishOffer {
        sdp: String,
        #[serde(default)]
        sources: BTreeMap<String, TrackSource>,
    },
    /// Answer to the node's `subscribe_offer`.
    SubscribeAnswer { sdp: String },
    /// A trickled ICE candidate for one of the two connections.
    Candidate {
        role: PeerRole,
        candidate: IceCandidate,
    },
    /// Subscribe to one track (only needed with `auto_subscribe: false`).
    Subscribe {
        track: TrackId,
        #[serde(default)]
        layer: Option<LayerChoice>,
    },
    /// Stop receiving one track.
    Unsubscribe { track: TrackId },
    /// Pick the simulcast layer received for one track.
    SetLayer { track: TrackId, layer: LayerChoice },
    /// Tell the room one's own track is muted or unmuted (media may keep flowing as silence/black).
    SetMuted { track: TrackId, muted: bool },
    /// A chat message to everyone in the room.
    Chat { text: String },
    /// Raise or lower one's hand (to ask a host for the floor).
    RaiseHand { raised: bool },
    /// Host: change a participant's role (promote audience to speaker, demote, make host).
    SetRole {
        participant: ParticipantId,
        role: Role,
    },
    /// Host: mute one participant's tracks of `kind`, or everyone's but the hosts' when
    /// `participant` is absent (mute all).
    MuteParticipant {
        #[serde(default)]
        participant: Option<ParticipantId>,
        #[serde(default = "default_audio")]
        kind: MediaKind,
    },
    /// Host: remove a participant from the room; with `ban`, its account (or invite) may not
    /// come back.
    RemoveParticipant {
        participant: ParticipantId,
        #[serde(default)]
        ban: bool,
    },
    /// Host: set (or with `null` clear) the room's password. Needs access control.
    SetRoomPassword { password: Option<String> },
    /// Host: let a participant waiting in the lobby in.
    AdmitParticipant { participant: ParticipantId },
    /// Host: turn a participant waiting in the lobby away.
    DenyParticipant { participant: ParticipantId },
    /// Host: change the room's settings.
    SetRoomSettings { settings: RoomSettings },
    /// Host: end the meeting for everyone (all participants are disconnected with
    /// `meeting_ended`).
    EndMeeting {},
    /// What the client wants to receive (with `auto_subscribe`): camera video of only the
    /// `last_n` most recent dominant speakers (hosts' cameras and screen shares always), or no
    /// video at all with `audio_only`.
    SetPreferences {
        #[serde(default)]
        last_n: Option<u16>,
        #[serde(default)]
        audio_only: bool,
    },
    /// Leave the room; the node closes the socket afterwards.
    Leave,
}

fn default_audio() -> MediaKind {
    MediaKind::Audio
}

fn default_true() -> bool {
    true
}

/// Messages a node sends to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Reply to `join`: who you are, who is here and what they publish.
    Joined {
        participant: ParticipantId,
        room: RoomName,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackInfo>,
        /// Send as `resume` in a later `join` to come back as this participant.
        #[serde(default)]
        resume_token: String,
        /// WebSocket URLs of other nodes to try, in order, if this one goes away.
        #[serde(default)]
        alternates: Vec<String>,
        /// The role the node granted.
        #[serde(default)]
        role: Role,
        #[serde(default)]
        settings: RoomSettings,
        /// Audience members in the room (they are listed in `participants` to hosts only).
        #[serde(default)]
        audience: u32,
        /// Who speaks now, if anyone.
        #[serde(default)]
        dominant_speaker: Option<ParticipantId>,
        /// STUN/TURN servers for the client's peer connections (TURN with short-lived
        /// credentials); empty when the node has none configured.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// Reply to `join`: this room's participants of your site are served by another node; open
    /// a WebSocket to `url` and send the same `join` there. The node closes this socket.
    Redirect {
        url: String,
    },
    /// The node is going away (maintenance drain): open a WebSocket to `url` and `join` again
    /// with your `resume_token`; republish your tracks there. Then close this socket.
    Reconnect {
        url: String,
        reason: String,
    },
    /// Answer for the publish connection, and the tracks the offer published (by `mid`).
    PublishAnswer {
        sdp: String,
        tracks: BTreeMap<String, TrackId>,
    },
    /// Offer for the subscribe connection; `tracks` maps its `mid`s to the tracks they carry.
    SubscribeOffer {
        sdp: String,
        tracks: BTreeMap<String, TrackId>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant: ParticipantId,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track: TrackId,
    },
    TrackMuted {
        track: TrackId,
        muted: bool,
    },
    /// A participant's role or hand changed (also sent about oneself).
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    /// How many audience members the room has (sent to non-hosts, at most once a second).
    AudienceCount {
        count: u32,
    },
    RoomSettingsChanged {
        settings: RoomSettings,
    },
    /// A host muted one of your tracks; unmute it yourself with `set_muted` when you want to.
    MutedByHost {
        track: TrackId,
        by: ParticipantId,
    },
    /// Dynacast: send only the simulcast layers of `track` marked active (lowest first); nobody
    /// can receive the others now. Resumed the same way as soon as someone can.
    PublishLayers {
        track: TrackId,
        active: Vec<bool>,
    },
    /// The node closed your publish connection (you became audience): close yours too.
    PublishClosed {
        reason: String,
    },
    /// (to the host who sent `set_room_password`) The room's password is now set or cleared.
    RoomPasswordSet {
        protected: bool,
    },
    /// (to a joiner) The room has a lobby: wait until a host lets you in (`joined` follows) or
    /// turns you away (the fatal `lobby_denied`).
    LobbyWaiting {},
    /// (to hosts) Who waits in the lobby now, on every node.
    LobbyChanged {
        waiting: Vec<LobbyEntry>,
    },
    /// (internal: from the room to the waiting participant's session, which joins again; the
    /// client never sees it but gets `joined`) A host let it in.
    LobbyAdmitted {},
    /// The dominant speaker changed; `recent` lists the most recent dominant speakers, newest
    /// first (what `last_n` picks from).
    DominantSpeaker {
        participant: Option<ParticipantId>,
        recent: Vec<ParticipantId>,
    },
    /// What the node sends you: its bandwidth estimate for your subscribe connection and the
    /// simulcast layer it forwards per track (sent when a layer changes, at most once a second).
    ReceiveQuality {
        estimate_bps: u64,
        layers: BTreeMap<TrackId, u8>,
    },
    Chat {
        from: ParticipantId,
        name: String,
        text: String,
        /// Milliseconds since the Unix epoch, node clock.
        ts: u64,
    },
    /// Something the client sent was refused; the session goes on unless `fatal`.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default)]
        fatal: bool,
    },
}

/// Machine-readable reason of an `error` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not JSON, not an object, or a field had the wrong type.
    InvalidJson,
    /// The frame's `type` is not a message this node knows.
    UnknownMessage,
    /// A field's value was refused (bad room name, empty or too long text, …).
    BadRequest,
    /// A message other than `join` arrived before `join`, or `join` came twice.
    NotJoined,
    AlreadyJoined,
    /// The SDP could not be parsed or negotiated. The message starts with
    /// [`PUBLISH_OFFER_REFUSED`] or [`SUBSCRIBE_ANSWER_REFUSED`] to say which SDP it was.
    InvalidSdp,
    /// The named track does not exist (any more).
    UnknownTrack,
    /// A binary frame was sent; only text frames carry signalling.
    BinaryNotSupported,
    /// The node failed; the message may be retried.
    Internal,
    /// The mesh cannot take this request now (control plane unreachable, node draining, no
    /// node for the room); existing sessions are unaffected. Retry later.
    Unavailable,
    /// The `resume` token was not valid for this room (expired, forged); join without it.
    ResumeRejected,
    /// Your role does not allow this (publish as audience, moderate as non-host).
    Forbidden,
    /// The named participant is not in the room.
    UnknownParticipant,
    /// A host removed you from the room (fatal).
    Removed,
    /// No access token, or one that is invalid, expired or not good for this room. Log in (or
    /// ask the host for a new invite) and join again.
    Unauthorized,
    /// The room does not exist (for you): a host has to open it first.
    UnknownRoom,
    /// Too many joins, logins or messages; the message says how long to wait. Nothing else
    /// changed.
    RateLimited,
    /// A cap was reached (rooms of the organisation, participants of the room, tracks of a
    /// participant).
    LimitReached,
    /// The room is locked: nobody new gets in until a host unlocks it.
    RoomLocked,
    /// (fatal) A host ended the meeting for everyone.
    MeetingEnded,
    /// The room has a password and the join gave none or a wrong one.
    PasswordRequired,
    /// A host banned this account (or invite) from the room.
    Banned,
    /// (internal, never sent) The join waits in the room's lobby.
    InLobby,
    /// (fatal) A host turned you away from the lobby.
    LobbyDenied,
}

/// Why a client frame could not be decoded into a [`ClientMessage`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is larger than {MAX_SIGNAL_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("not a JSON object: {0}")]
    InvalidJson(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid {kind} message: {reason}")]
    InvalidFields { kind: String, reason: String },
}

impl DecodeError {
    /// The error code a client is sent for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge | DecodeError::InvalidFields { .. } => ErrorCode::BadRequest,
            DecodeError::InvalidJson(_) => ErrorCode::InvalidJson,
            DecodeError::UnknownType(_) => ErrorCode::UnknownMessage,
        }
    }
}

const CLIENT_TYPES: &[&str] = &[
    "join",
    "publish_offer",
    "subscribe_answer",
    "candidate",
    "subscribe",
    "unsubscribe",
    "set_layer",
    "set_muted",
    "chat",
    "raise_hand",
    "set_role",
    "mute_participant",
    "remove_participant",
    "set_room_settings",
    "end_meeting",
    "set_room_password",
    "admit_participant",
    "deny_participant",
    "set_preferences",
    "leave",
];

impl ClientMessage {
    /// Decodes one text frame, telling apart "not JSON", "unknown type" and "bad fields", and
    /// checking the field limits that serde cannot express.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        if text.len() > MAX_SIGNAL_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge);
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        let kind = match value.get("type") {
            Some(serde_json::Value::String(t)) => t.clone(),
            _ if !value.is_object() => {
                return Err(DecodeError::InvalidJson("expected a JSON object".into()));
            }
            _ => return Err(DecodeError::UnknownType(String::new())),
        };
        if !CLIENT_TYPES.contains(&kind.as_str()) {
            return Err(DecodeError::UnknownType(kind));
        }
        let msg: ClientMessage =
            serde_json::from_value(value).map_err(|e| DecodeError::InvalidFields {
                kind: kind.clone(),
                reason: e.to_string(),
            })?;
        msg.check_limits()
            .map_err(|reason| DecodeError::InvalidFields { kind, reason })?;
        Ok(msg)
    }

    fn check_limits(&self) -> Result<(), String> {
        match self {
            ClientMessage::Join {
                name,
                resume,
                site,
                token,
                password,
                ..
            } => {
                if resume.as_ref().is_some_and(|r| r.len() > 4096) {
                    return Err("resume token is longer than 4096 bytes".into());
                }
                if token.as_ref().is_some_and(|t| t.len() > 4096) {
                    return Err("access token is longer than 4096 bytes".into());
                }
                if password
                    .as_ref()
                    .is_some_and(|p| p.len() > MAX_ROOM_PASSWORD_BYTES)
                {
                    return Err(format!(
                        "room password is longer than {MAX_ROOM_PASSWORD_BYTES} bytes"
                    ));
                }
                if site
                    .as_ref()
                    .is_some_and(|s| s.is_empty() || s.len() > 64 || s.contains('/'))
                {
                    return Err("site must be 1-64 characters without '/'".into());
                }
                let name = name.trim();
                if name.is_empty() {
                    return Err("display name is empty".into());
                }
                if name.chars().count() > MAX_DISPLAY_NAME_LEN {
                    return Err(format!(
                        "display name is longer than {MAX_DISPLAY_NAME_LEN} characters"
                    ));
                }
                if name.chars().any(char::is_control) {
                    return Err("display name contains control characters".into());
                }
            }
            ClientMessage::SetRoomPassword {
                password: Some(password),
            } => {
                if password.is_empty() {
                    return Err("room password is empty (send null to clear it)".into());
                }
                if password.len() > MAX_ROOM_PASSWORD_BYTES {
                    return Err(format!(
                        "room password is longer than {MAX_ROOM_PASSWORD_BYTES} bytes"
                    ));
                }
            }
            ClientMessage::Chat { text } => {
                if text.trim().is_empty() {
                    return Err("chat text is empty".into());
                }
                if text.chars().count() > MAX_CHAT_LEN {
                    return Err(format!(
                        "chat text is longer than {MAX_CHAT_LEN} characters"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl ServerMessage {
    /// Encodes for a text frame.
    pub fn encode(&self) -> String {
        // A ServerMessage holds only strings, numbers, maps and enums: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encoding failed","fatal":false}"#.into()
        })
    }

    /// Shorthand for a non-fatal error.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            fatal: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_decodes_with_default_auto_subscribe() {
        let m = ClientMessage::decode(r#"{"type":"join","room":"r1","name":"Ada"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Join {
                room: RoomName::parse("r1").unwrap(),
                name: "Ada".into(),
                auto_subscribe: true,
                resume: None,
                site: None,
                role: None,
                token: None,
                password: None,
            }
        );
        let long = format!(
            r#"{{"type":"join","room":"r1","name":"Ada","token":"{}"}}"#,
            "x".repeat(4097)
        );
        assert!(ClientMessage::decode(&long).is_err());
    }

    #[test]
    fn publish_offer_carries_sources_by_mid() {
        let m = ClientMessage::decode(
            r#"{"type":"publish_offer","sdp":"v=0","sources":{"0":"microphone","2":"screen"}}"#,
        )
        .unwrap();
        let ClientMessage::PublishOffer { sources, .. } = m else {
            panic!("wrong variant")
        };
        assert_eq!(sources.get("2"), Some(&TrackSource::Screen));
    }

    #[test]
    fn garbage_is_invalid_json() {
        let e = ClientMessage::decode("not json{").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        let e = ClientMessage::decode("[1,2]").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidJson);
    }

    #[test]
    fn unknown_type_is_reported_as_such() {
        let e = ClientMessage::decode(r#"{"type":"fly","to":"moon"}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownMessage);
        let e = ClientMessage::decode(r#"{"no_type":1}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownMessage);
    }

    #[test]
    fn bad_fields_are_bad_request() {
        for bad in [
            r#"{"type":"join","room":"a b","name":"x"}"#,
            r#"{"type":"join","room":"r","name":"   "}"#,
            r#"{"type":"join","room":"r"}"#,
            r#"{"type":"chat","text":""}"#,
            r#"{"type":"chat","text":5}"#,
            r#"{"type":"set_layer","track":"t1","layer":"ultra"}"#,
        ] {
            let e = ClientMessage::decode(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn oversized_text_is_refused_before_parsing() {
        let big = format!(
            r#"{{"type":"chat","text":"{}"}}"#,
            "x".repeat(MAX_SIGNAL_MESSAGE_BYTES)
        );
        assert!(matches!(
            ClientMessage::decode(&big),
            Err(DecodeError::TooLarge)
        ));
    }

    #[test]
    fn moderation_messages_decode() {
        let m = ClientMessage::decode(r#"{"type":"set_role","participant":"p1","role":"speaker"}"#)
            .unwrap();
        assert!(matches!(
            m,
            ClientMessage::SetRole {
                role: Role::Speaker,
                ..
            }
        ));
        let m = ClientMessage::decode(r#"{"type":"mute_participant"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::MuteParticipant {
                participant: None,
                kind: MediaKind::Audio
            }
        );
        let e = ClientMessage::decode(r#"{"type":"set_role","participant":"p1","role":"king"}"#)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn participant_info_defaults_to_a_speaker_with_the_hand_down() {
        let p: ParticipantInfo = serde_json::from_str(r#"{"id":"p1","name":"Ada"}"#).unwrap();
        assert_eq!(p.role, Role::Speaker);
        assert_eq!(p.hand_raised_at, None);
        assert!(Role::Host.may_moderate() && !Role::Speaker.may_moderate());
        assert!(!Role::Audience.may_publish());
    }

    #[test]
    fn server_messages_are_tagged_snake_case() {
        let s = ServerMessage::error(ErrorCode::UnknownTrack, "no such track").encode();
        assert!(s.contains(r#""type":"error""#));
        assert!(s.contains(r#""code":"unknown_track""#));
    }
}
