//! The `Room` actor: one per room on a node. It owns the room's membership and track directory,
//! and tells every member what changes (joins, leaves, tracks published and unpublished, mutes,
//! chat) through the member's own event sink. In a mesh, it also holds what other nodes' members
//! of the room are and publish (merged from [`RemoteRoomEvent`]s) and reports its own local changes
//! to the [`MeshSink`]. It also owns the room's roles and settings (who may publish, moderation,
//! raised hands; rules in [`crate::roles`]) and its dominant speaker, fed with audio levels. The
//! actor lives while the room has local members. It never sees media.

use crate::action_log::{ActionLog, ModeratedAction, ModerationEntry};
use crate::core::DominantSpeakerDetector;
use crate::core::dominant_speaker::NOISE_FLOOR_DBOV;
use crate::directory::RoomDirectory;
use crate::federation::{LocalRoomEvent, MeshSink, RemoteRoomEvent};
use crate::roles::{self, JoinAccess, JoinContext, ListingChange};
use crate::room_guard::RoomGuard;
use kaskade_proto::signal::{
    ErrorCode, LobbyEntry, ModerationAction, ParticipantInfo, Role, RoomSettings, ServerMessage,
    TrackInfo,
};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Non-hosts hear the audience count at most this often.
pub const AUDIENCE_COUNT_INTERVAL: Duration = Duration::from_secs(1);
/// How many recent dominant speakers `dominant_speaker` messages list.
pub const RECENT_SPEAKERS: usize = 8;

/// Where a member receives the room's events (its Participant actor's mailbox, or a channel).
#[derive(Clone)]
pub struct MemberSink(Arc<dyn Fn(ServerMessage) + Send + Sync>);

impl MemberSink {
    pub fn new(deliver: impl Fn(ServerMessage) + Send + Sync + 'static) -> Self {
        Self(Arc::new(deliver))
    }

    pub fn send(&self, message: ServerMessage) {
        (self.0)(message)
    }
}

/// What a joining member learns about the room.
#[derive(Debug, Clone)]
pub struct RoomSnapshot {
    pub name: RoomName,
    /// The joining member's epoch (0 when the snapshot was only asked for): a `Leave` carrying
    /// it removes that session only, not a later session that resumed the same participant.
    pub epoch: u64,
    pub participants: Vec<ParticipantInfo>,
    pub tracks: Vec<TrackInfo>,
    /// The joining member's granted role, and why not the one it asked for.
    pub role: Role,
    pub role_note: Option<&'static str>,
    pub settings: RoomSettings,
    pub audience: u32,
    pub dominant_speaker: Option<ParticipantId>,
}

/// Why the room refused a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRefused {
    pub code: ErrorCode,
    pub message: String,
}

/// The `by` of moderation an operator does through the admin API (never a participant id:
/// those start with `p`).
pub const OPERATOR_ACTOR: &str = "operator";

pub enum RoomMsg {
    /// Enter the room. Hidden members (WHEP viewers) receive nothing and are not listed.
    Join {
        info: ParticipantInfo,
        sink: Option<MemberSink>,
        hidden: bool,
        role: JoinAccess,
        reply: RpcReplyPort<Result<RoomSnapshot, JoinRefused>>,
    },
    /// A participant waiting in the lobby went away.
    LeaveLobby {
        participant: ParticipantId,
    },
    Leave {
        participant: ParticipantId,
        /// The epoch the join returned; `None` removes whatever session has the id.
        epoch: Option<u64>,
    },
    Publish {
        tracks: Vec<TrackInfo>,
    },
    Unpublish {
        tracks: Vec<TrackId>,
    },
    SetMuted {
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
    },
    Chat {
        from: ParticipantId,
        text: String,
    },
    RaiseHand {
        participant: ParticipantId,
        raised: bool,
    },
    /// A local member asks to moderate `target` (all non-hosts for a mute without target).
    Moderate {
        by: ParticipantId,
        target: Option<ParticipantId>,
        action: ModerationAction,
    },
    SetSettings {
        by: ParticipantId,
        settings: RoomSettings,
    },
    /// A local publisher's audio level over the last interval (RFC 6464 dBov, 0 loudest).
    AudioLevel {
        participant: ParticipantId,
        level: u8,
    },
    /// Time to tell non-hosts the audience count, if it changed.
    FlushAudienceCount,
    Snapshot(RpcReplyPort<RoomSnapshot>),
    /// Ask this node's signalling members to reconnect to `url` (maintenance drain).
    Reconnect {
        url: String,
        reason: String,
    },
    /// An operator (admin API) removes `target`, or with `None` ends the meeting, for this
    /// node's own members; the API asks every node holding a part of the room.
    Operator {
        target: Option<ParticipantId>,
    },
    /// Only this node's listed members and their tracks (what the control plane keeps of it).
    LocalShare(RpcReplyPort<RoomSnapshot>),
    /// What another node's members did.
    Remote {
        node: String,
        event: RemoteRoomEvent,
    },
}

struct Member {
    info: ParticipantInfo,
    sink: Option<MemberSink>,
    hidden: bool,
    /// The node the member is connected to; `None` for this node.
    node: Option<String>,
    epoch: u64,
    /// Its account (members of this node with access control), for the audit log.
    user: Option<String>,
}

pub struct RoomState {
    name: RoomName,
    directory: Arc<RoomDirectory>,
    mesh: MeshSink,
    action_log: Option<Arc<dyn ActionLog>>,
    guard: Option<Arc<dyn RoomGuard>>,
    myself: ActorRef<RoomMsg>,
    members: BTreeMap<ParticipantId, Member>,
    /// In publication order, so "the room's first publisher" means what it says.
    tracks: Vec<TrackInfo>,
    next_epoch: u64,
    settings: RoomSettings,
    speakers: DominantSpeakerDetector<ParticipantId>,
    /// The audience count non-hosts were last told, and whether a flush is scheduled.
    audience_announced: u32,
    audience_flush_pending: bool,
    /// Joiners of this node waiting for a host (with the lobby on), in arrival order.
    lobby: Vec<Waiting>,
    /// Who waits on other nodes, as they last said.
    remote_lobby: BTreeMap<String, Vec<(ParticipantId, String)>>,
    /// Let in by a host: their next join passes the lobby.
    admitted: std::collections::BTreeSet<ParticipantId>,
}

/// A joiner waiting in the lobby.
struct Waiting {
    id: ParticipantId,
    name: String,
    sink: Option<MemberSink>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RoomState {
    /// Everything listed, as a viewer of `role` may see it.
    fn snapshot_for(&self, role: Role) -> RoomSnapshot {
        RoomSnapshot {
            name: self.name.clone(),
            epoch: 0,
            participants: self
                .members
                .values()
                .filter(|m| !m.hidden && roles::listed_to(role, m.info.role, false))
                .map(|m| m.info.clone())
                .collect(),
            tracks: self.tracks.clone(),
            role,
            role_note: None,
            settings: self.settings,
            audience: self.audience(),
            dominant_speaker: self.speakers.dominant().cloned(),
        }
    }

    /// Everything, for the node itself (admin API, mesh share).
    fn snapshot(&self) -> RoomSnapshot {
        self.snapshot_for(Role::Host)
    }

    fn audience(&self) -> u32 {
        self.members
            .values()
            .filter(|m| !m.hidden && m.info.role == Role::Audience)
            .count() as u32
    }

    fn has_host(&self) -> bool {
        self.members.values().any(|m| m.info.role == Role::Host)
    }

    fn role_of(&self, participant: &ParticipantId) -> Option<Role> {
        self.members.get(participant).map(|m| m.info.role)
    }

    /// Tells every member that may know about `subject` (see [`roles::listed_to`]).
    fn tell_about(&self, subject: &ParticipantId, subject_role: Role, message: &ServerMessage) {
        for (id, member) in &self.members {
            if let Some(sink) = &member.sink
                && roles::listed_to(member.info.role, subject_role, id == subject)
            {
                sink.send(message.clone());
            }
        }
    }

    fn tell(&self, participant: &ParticipantId, message: ServerMessage) {
        if let Some(sink) = self.members.get(participant).and_then(|m| m.sink.as_ref()) {
            sink.send(message);
        }
    }

    /// Schedules telling everyone the audience count, at most once per interval.
    fn audience_changed(&mut self) {
        if !self.audience_flush_pending && self.audience() != self.audience_announced {
            self.audience_flush_pending = true;
            self.myself
                .send_after(AUDIENCE_COUNT_INTERVAL, || RoomMsg::FlushAudienceCount);
        }
    }

    fn flush_audience_count(&mut self) {
        self.audience_flush_pending = false;
        let count = self.audience();
        if count != self.audience_announced {
            self.audience_announced = count;
            self.broadcast(&ServerMessage::AudienceCount { count }, None);
        }
    }

    /// Replaces a member's info (role, hand) and tells each member what it means for them:
    /// an update, or a join or leave when the subject moves in or out of what they may see.
    fn update_member(&mut self, info: ParticipantInfo) {
        let Some(member) = self.members.get_mut(&info.id) else {
            return;
        };
        let old = member.info.role;
        let new = info.role;
        member.info = info.clone();
        if member.hidden {
            return;
        }
        for (id, viewer) in &self.members {
            let Some(sink) = &viewer.sink else { continue };
            let is_subject = *id == info.id;
            // A viewer whose own role changed sees with its new eyes.
            let message = match roles::listing_change(viewer.info.role, old, new, is_subject) {
                ListingChange::Updated => ServerMessage::ParticipantUpdated {
                    participant: info.clone(),
                },
                ListingChange::Appears => ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
                ListingChange::Disappears => ServerMessage::ParticipantLeft {
                    participant: info.id.clone(),
                },
                ListingChange::Nothing => continue,
            };
            sink.send(message);
        }
        // Becoming or ceasing to be a host changes who the subject may see.
        if (old == Role::Host) != (new == Role::Host) {
            let audience: Vec<ParticipantInfo> = self
                .members
                .values()
                .filter(|m| !m.hidden && m.info.role == Role::Audience && m.info.id != info.id)
                .map(|m| m.info.clone())
                .collect();
            for a in audience {
                let message = if new == Role::Host {
                    ServerMessage::ParticipantJoined { participant: a }
                } else {
                    ServerMessage::ParticipantLeft { participant: a.id }
                };
                self.tell(&info.id, message);
            }
        }
        if old != new {
            self.audience_changed();
        }
    }

    /// Applies a host's action to a member connected to this node.
    fn moderate_local(
        &mut self,
        by: &ParticipantId,
        target: &ParticipantId,
        action: ModerationAction,
    ) {
        let Some(member) = self.members.get(target) else {
            return;
        };
        info!(room = %self.name, by = %by, participant = %target, ?action, "moderation");
        match action {
            ModerationAction::SetRole { role } => {
                let mut info = member.info.clone();
                info.role = role;
                if role != Role::Audience {
                    info.hand_raised_at = None;
                }
                if !role.may_publish() {
                    // Its tracks go before it leaves the speakers' view.
                    self.withdraw_tracks(target);
                }
                self.update_member(info.clone());
                self.mesh.send(&self.name, LocalRoomEvent::Updated(info));
            }
            ModerationAction::Mute { kind } => {
                let theirs: Vec<TrackId> = self
                    .tracks
                    .iter_mut()
                    .filter(|t| &t.participant == target && t.kind == kind)
                    .map(|t| {
                        t.muted = true;
                        t.id.clone()
                    })
                    .collect();
                for track in theirs {
                    self.broadcast(
                        &ServerMessage::TrackMuted {
                            track: track.clone(),
                            muted: true,
                        },
                        None,
                    );
                    self.mesh.send(
                        &self.name,
                        LocalRoomEvent::Muted {
                            track: track.clone(),
                            muted: true,
                        },
                    );
                    self.tell(
                        target,
                        ServerMessage::MutedByHost {
                            track,
                            by: by.clone(),
                        },
                    );
                }
            }
            ModerationAction::EndMeeting => {
                let name = self.actor_name(by);
                self.tell(
                    target,
                    ServerMessage::Error {
                        code: ErrorCode::MeetingEnded,
                        message: format!("{name} ended the meeting"),
                        fatal: true,
                    },
                );
            }
            // Lobby decisions concern waiting joiners, not members (see `moderate_lobby`).
            ModerationAction::Admit | ModerationAction::Deny => {}
            ModerationAction::Remove { ban } => {
                if ban
                    && let Some(user) = &member.user
                    && let Some(guard) = &self.guard
                {
                    guard.ban(&self.name, user);
                }
                let name = self.actor_name(by);
                self.tell(
                    target,
                    ServerMessage::Error {
                        code: ErrorCode::Removed,
                        message: format!("you were removed from the room by {name}"),
                        fatal: true,
                    },
                );
            }
        }
    }

    /// Everyone waiting in the lobby, here and on other nodes.
    fn lobby_entries(&self) -> Vec<LobbyEntry> {
        let here = self.lobby.iter().map(|w| (w.id.clone(), w.name.clone()));
        let there = self.remote_lobby.values().flatten().cloned();
        here.chain(there)
            .map(|(participant, name)| LobbyEntry { participant, name })
            .collect()
    }

    /// Tells this node's hosts who waits now.
    fn tell_hosts_lobby(&self) {
        let message = ServerMessage::LobbyChanged {
            waiting: self.lobby_entries(),
        };
        for member in self.members.values() {
            if member.info.role == Role::Host
                && let Some(sink) = &member.sink
            {
                sink.send(message.clone());
            }
        }
    }

    /// The local lobby changed: hosts here and on the other nodes hear it.
    fn lobby_changed(&self) {
        self.tell_hosts_lobby();
        let waiting = self
            .lobby
            .iter()
            .map(|w| (w.id.clone(), w.name.clone()))
            .collect();
        self.mesh.send(&self.name, LocalRoomEvent::Lobby(waiting));
    }

    /// Admits or turns away `target` if it waits here; false if it does not.
    fn decide_lobby(&mut self, target: &ParticipantId, admit: bool) -> bool {
        let Some(at) = self.lobby.iter().position(|w| &w.id == target) else {
            return false;
        };
        let waiting = self.lobby.remove(at);
        info!(room = %self.name, participant = %target, admit, "lobby decision");
        if let Some(sink) = &waiting.sink {
            if admit {
                self.admitted.insert(target.clone());
                // Its session joins again and passes; the client then gets `joined`.
                sink.send(ServerMessage::LobbyAdmitted {});
            } else {
                sink.send(ServerMessage::Error {
                    code: ErrorCode::LobbyDenied,
                    message: "a host did not let you in".into(),
                    fatal: true,
                });
            }
        }
        self.lobby_changed();
        true
    }

    /// A host here admits or turns away `target`, waiting here or on another node.
    fn moderate_lobby(
        &mut self,
        by: &ParticipantId,
        actor_role: Role,
        target: &ParticipantId,
        action: ModerationAction,
    ) {
        if !actor_role.may_moderate() {
            self.tell(
                by,
                ServerMessage::error(ErrorCode::Forbidden, "only hosts may do this"),
            );
            return;
        }
        let admit = action == ModerationAction::Admit;
        let logged = if admit {
            ModeratedAction::Admitted
        } else {
            ModeratedAction::Denied
        };
        let waiting_name = self
            .lobby_entries()
            .into_iter()
            .find(|e| &e.participant == target)
            .map(|e| e.name);
        let Some(name) = waiting_name else {
            self.tell(
                by,
                ServerMessage::error(
                    ErrorCode::UnknownParticipant,
                    format!("nobody {target} waits in the lobby"),
                ),
            );
            return;
        };
        self.log_action(by, logged, None, Some(format!("{name} ({target})")));
        if !self.decide_lobby(target, admit) {
            // Waiting on another node: that node decides.
            self.mesh.send(
                &self.name,
                LocalRoomEvent::Moderate {
                    by: by.clone(),
                    target: target.clone(),
                    action,
                },
            );
        }
    }

    /// Stops the room when nobody is in it or waiting here any more.
    fn close_if_empty(&self) -> bool {
        if self.local_members() == 0 && self.lobby.is_empty() {
            self.directory.remove(&self.name, self.myself.get_id());
            info!(room = %self.name, "room closed");
            self.myself.stop(None);
            true
        } else {
            false
        }
    }

    /// Who `participant` is for the audit log: its account if known here, else its id.
    fn audit_name(&self, participant: &ParticipantId) -> String {
        self.members
            .get(participant)
            .and_then(|m| m.user.clone())
            .unwrap_or_else(|| participant.to_string())
    }

    /// Reports an applied host action to the audit log.
    fn log_action(
        &self,
        by: &ParticipantId,
        action: ModeratedAction,
        target: Option<&ParticipantId>,
        detail: Option<String>,
    ) {
        if let Some(log) = &self.action_log {
            log.log(ModerationEntry {
                room: self.name.clone(),
                actor: self.audit_name(by),
                action,
                target: target.map(|t| self.audit_name(t)),
                detail,
            });
        }
    }

    /// Who `by` is in a moderation message: a member's name, or "an operator".
    fn actor_name(&self, by: &ParticipantId) -> String {
        match self.members.get(by) {
            Some(m) => m.info.name.clone(),
            None if by.0 == OPERATOR_ACTOR => "an operator".to_owned(),
            None => String::new(),
        }
    }

    /// An operator's removal of `target` (or, with `None`, end of the meeting) for this node's
    /// own members; the audit record is the admin API's.
    fn operator_action(&mut self, target: Option<ParticipantId>) {
        let by = ParticipantId(OPERATOR_ACTOR.to_owned());
        let (targets, action): (Vec<ParticipantId>, _) = match target {
            Some(t) => (vec![t], ModerationAction::Remove { ban: false }),
            None => (
                self.members
                    .iter()
                    .filter(|(_, m)| m.node.is_none() && !m.hidden)
                    .map(|(id, _)| id.clone())
                    .collect(),
                ModerationAction::EndMeeting,
            ),
        };
        let local: Vec<ParticipantId> = targets.into_iter().filter(|t| self.is_local(t)).collect();
        for t in &local {
            self.moderate_local(&by, t, action);
        }
    }

    /// A host connected here asks for `action` on `target` (or on every non-host).
    fn moderate(
        &mut self,
        by: ParticipantId,
        target: Option<ParticipantId>,
        action: ModerationAction,
    ) {
        let Some(actor_role) = self.role_of(&by).filter(|_| self.is_local(&by)) else {
            return;
        };
        if let (Some(t), ModerationAction::Admit | ModerationAction::Deny) = (&target, action) {
            self.moderate_lobby(&by, actor_role, t, action);
            return;
        }
        let targets: Vec<ParticipantId> = match &target {
            Some(t) => {
                if self.members.get(t).is_none_or(|m| m.hidden) {
                    self.tell(
                        &by,
                        ServerMessage::error(
                            ErrorCode::UnknownParticipant,
                            format!("no participant {t} in the room"),
                        ),
                    );
                    return;
                }
                vec![t.clone()]
            }
            // Ending the meeting reaches everyone, its host last.
            None if action == ModerationAction::EndMeeting => {
                let mut all: Vec<ParticipantId> = self
                    .members
                    .iter()
                    .filter(|(id, m)| !m.hidden && **id != by)
                    .map(|(id, _)| id.clone())
                    .collect();
                all.push(by.clone());
                all
            }
            None => self
                .members
                .iter()
                .filter(|(id, m)| !m.hidden && **id != by && m.info.role != Role::Host)
                .map(|(id, _)| id.clone())
                .collect(),
        };
        if let Err(refusal) = roles::check_moderation(
            actor_role,
            target
                .as_ref()
                .and_then(|t| self.role_of(t))
                .unwrap_or(Role::Speaker),
            action,
            target.is_none(),
        ) {
            warn!(room = %self.name, participant = %by, ?action, "moderation refused");
            self.tell(
                &by,
                ServerMessage::error(ErrorCode::Forbidden, refusal.to_string()),
            );
            return;
        }
        let logged = match action {
            ModerationAction::SetRole { role } => (
                ModeratedAction::RoleChanged,
                Some(format!("{role:?}").to_lowercase()),
            ),
            ModerationAction::Mute { kind } => (
                ModeratedAction::Muted,
                Some(format!("{kind:?}").to_lowercase()),
            ),
            ModerationAction::Remove { ban } => {
                (ModeratedAction::Removed, ban.then(|| "banned".to_owned()))
            }
            ModerationAction::EndMeeting => (ModeratedAction::MeetingEnded, None),
            // Handled by `moderate_lobby`.
            ModerationAction::Admit => (ModeratedAction::Admitted, None),
            ModerationAction::Deny => (ModeratedAction::Denied, None),
        };
        self.log_action(&by, logged.0, target.as_ref(), logged.1);
        for t in targets {
            if self.is_local(&t) {
                self.moderate_local(&by, &t, action);
            } else {
                self.mesh.send(
                    &self.name,
                    LocalRoomEvent::Moderate {
                        by: by.clone(),
                        target: t,
                        action,
                    },
                );
            }
        }
    }

    /// New settings (from a host here or on another node); this node moves its own speakers.
    fn apply_settings(&mut self, settings: RoomSettings) {
        let was = self.settings;
        self.settings = settings;
        if was == settings {
            return;
        }
        info!(room = %self.name, only_hosts_publish = settings.only_hosts_publish, locked = settings.locked, "room settings changed");
        self.broadcast(&ServerMessage::RoomSettingsChanged { settings }, None);
        if settings.only_hosts_publish && !was.only_hosts_publish {
            let speakers: Vec<ParticipantInfo> = self
                .members
                .values()
                .filter(|m| m.node.is_none() && !m.hidden && m.info.role == Role::Speaker)
                .map(|m| m.info.clone())
                .collect();
            for mut info in speakers {
                info.role = Role::Audience;
                self.withdraw_tracks(&info.id);
                self.update_member(info.clone());
                self.mesh.send(&self.name, LocalRoomEvent::Updated(info));
            }
        }
    }

    /// One audio level of `participant`; announces the dominant speaker when it changes.
    fn audio_level(&mut self, participant: ParticipantId, level: u8, now: Instant) {
        if !self.members.contains_key(&participant) {
            return;
        }
        self.speakers.on_audio_level(participant, level, now);
        if let Some(dominant) = self.speakers.poll(now) {
            info!(room = %self.name, participant = %dominant, "dominant speaker");
            self.broadcast(
                &ServerMessage::DominantSpeaker {
                    participant: Some(dominant),
                    recent: self.speakers.last_n(RECENT_SPEAKERS),
                },
                None,
            );
        }
    }

    fn is_local(&self, participant: &ParticipantId) -> bool {
        self.members
            .get(participant)
            .is_some_and(|m| m.node.is_none())
    }

    fn local_members(&self) -> usize {
        self.members.values().filter(|m| m.node.is_none()).count()
    }

    fn update_counts(&self) {
        self.directory
            .set_counts(&self.name, self.local_members(), self.tracks.len());
    }

    fn is_from(&self, participant: &ParticipantId, node: &str) -> bool {
        self.members
            .get(participant)
            .is_some_and(|m| m.node.as_deref() == Some(node))
    }

    /// Withdraws every track of a member, telling local members; local tracks are withdrawn
    /// from the mesh too. The member itself stays: after a resume elsewhere (its client
    /// republishes) others see a resumed participant, not a leave and a join; after a move to
    /// the audience it may no longer publish.
    fn withdraw_tracks(&mut self, participant: &ParticipantId) {
        let was_local = self.is_local(participant);
        let theirs: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|t| &t.participant == participant)
            .map(|t| t.id.clone())
            .collect();
        for id in &theirs {
            self.unpublish(id);
        }
        if was_local && !theirs.is_empty() {
            self.mesh
                .send(&self.name, LocalRoomEvent::Unpublished(theirs));
        }
    }

    /// A member of `node`. `live` is true for a join as it happens, false for a member listed in
    /// a state snapshot: a snapshot may be older than a resume that already moved the member
    /// (here or to a third node), so only a live join takes a member over from elsewhere.
    fn remote_join(&mut self, node: &str, info: ParticipantInfo, live: bool) {
        if let Some(existing) = self.members.get(&info.id) {
            if existing.node.as_deref() == Some(node) || !live {
                return;
            }
            // The participant resumed on `node` (its old node died or drained): it is theirs now.
            info!(room = %self.name, participant = %info.id, node, "participant resumed on another node");
            self.withdraw_tracks(&info.id);
            if let Some(m) = self.members.get_mut(&info.id) {
                if let Some(sink) = m.sink.take() {
                    tell_taken_over(&sink);
                }
                m.node = Some(node.to_owned());
                m.info = info;
            }
            return;
        }
        self.tell_about(
            &info.id,
            info.role,
            &ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
        );
        self.members.insert(
            info.id.clone(),
            Member {
                info,
                sink: None,
                hidden: false,
                node: Some(node.to_owned()),
                epoch: 0,
                user: None,
            },
        );
        self.audience_changed();
    }

    /// Removes a member and its tracks, telling the local members.
    fn remove_member(&mut self, participant: &ParticipantId) -> Option<Member> {
        let member = self.members.remove(participant)?;
        let (gone, kept) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|t| &t.participant == participant);
        self.tracks = kept;
        for track in gone {
            let message = ServerMessage::TrackUnpublished { track: track.id };
            self.broadcast(&message, None);
        }
        if !member.hidden {
            self.tell_about(
                participant,
                member.info.role,
                &ServerMessage::ParticipantLeft {
                    participant: participant.clone(),
                },
            );
        }
        self.speakers.remove(participant);
        self.audience_changed();
        Some(member)
    }

    fn remote_publish(&mut self, node: &str, track: TrackInfo) {
        if !self.is_from(&track.participant, node) || self.tracks.iter().any(|t| t.id == track.id) {
            return;
        }
        self.tracks.push(track.clone());
        self.broadcast(&ServerMessage::TrackPublished { track }, None);
    }

    fn unpublish(&mut self, id: &TrackId) -> bool {
        let before = self.tracks.len();
        self.tracks.retain(|t| &t.id != id);
        if self.tracks.len() != before {
            self.broadcast(&ServerMessage::TrackUnpublished { track: id.clone() }, None);
            return true;
        }
        false
    }

    fn chat(&self, from: ParticipantId, name: String, text: String, ts: u64) {
        self.broadcast(
            &ServerMessage::Chat {
                from,
                name,
                text,
                ts,
            },
            None,
        );
    }

    fn on_remote(&mut self, node: &str, event: RemoteRoomEvent) {
        match event {
            RemoteRoomEvent::State {
                participants,
                tracks,
            } => {
                let stale: Vec<ParticipantId> = self
                    .members
                    .iter()
                    .filter(|(id, m)| {
                        m.node.as_deref() == Some(node)
                            && !participants.iter().any(|p| &p.id == *id)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in stale {
                    self.remove_member(&id);
                }
                let from_node: Vec<TrackId> = self
                    .tracks
                    .iter()
                    .filter(|t| self.is_from(&t.participant, node))
                    .filter(|t| !tracks.iter().any(|n| n.id == t.id))
                    .map(|t| t.id.clone())
                    .collect();
                for id in from_node {
                    self.unpublish(&id);
                }
                for p in participants {
                    self.remote_join(node, p, false);
                }
                for t in tracks {
                    self.remote_publish(node, t);
                }
            }
            RemoteRoomEvent::Joined(info) => self.remote_join(node, info, true),
            RemoteRoomEvent::Left(id) => {
                if self.is_from(&id, node) {
                    self.remove_member(&id);
                }
            }
            RemoteRoomEvent::Published(track) => self.remote_publish(node, track),
            RemoteRoomEvent::Unpublished(id) => {
                let theirs = self
                    .tracks
                    .iter()
                    .any(|t| t.id == id && self.is_from(&t.participant, node));
                if theirs {
                    self.unpublish(&id);
                }
            }
            RemoteRoomEvent::Muted { track, muted } => {
                if let Some(t) = self.tracks.iter_mut().find(|t| t.id == track) {
                    let participant = t.participant.clone();
                    if self.is_from(&participant, node)
                        && let Some(t) = self.tracks.iter_mut().find(|t| t.id == track)
                    {
                        t.muted = muted;
                        self.broadcast(&ServerMessage::TrackMuted { track, muted }, None);
                    }
                }
            }
            RemoteRoomEvent::Chat {
                from,
                name,
                text,
                ts,
            } => {
                if self.is_from(&from, node) {
                    self.chat(from, name, text, ts);
                }
            }
            RemoteRoomEvent::Updated(info) => {
                if self.is_from(&info.id, node) {
                    self.update_member(info);
                }
            }
            RemoteRoomEvent::Moderate { by, target, action } => {
                // Only a host the sender itself serves may act, and only on our own members.
                let by_host = self.is_from(&by, node) && self.role_of(&by) == Some(Role::Host);
                if matches!(action, ModerationAction::Admit | ModerationAction::Deny) {
                    if by_host {
                        self.decide_lobby(&target, action == ModerationAction::Admit);
                    }
                } else if !self.is_local(&target) {
                    // Meant for another node's member.
                } else if by_host {
                    self.moderate_local(&by, &target, action);
                } else {
                    warn!(room = %self.name, node, by = %by, participant = %target, "moderation from another node refused");
                }
            }
            RemoteRoomEvent::Settings(settings) => self.apply_settings(settings),
            RemoteRoomEvent::Lobby(waiting) => {
                if waiting.is_empty() {
                    self.remote_lobby.remove(node);
                } else {
                    self.remote_lobby.insert(node.to_owned(), waiting);
                }
                self.tell_hosts_lobby();
            }
            RemoteRoomEvent::AudioLevels(levels) => {
                let now = Instant::now();
                for (participant, level) in levels {
                    if self.is_from(&participant, node) {
                        self.audio_level(participant, level, now);
                    }
                }
            }
            RemoteRoomEvent::NodeGone => {
                if self.remote_lobby.remove(node).is_some() {
                    self.tell_hosts_lobby();
                }
                let theirs: Vec<ParticipantId> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.node.as_deref() == Some(node))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in theirs {
                    self.remove_member(&id);
                }
            }
        }
    }

    /// Sends to every listening member but `except`.
    fn broadcast(&self, message: &ServerMessage, except: Option<&ParticipantId>) {
        for (id, member) in &self.members {
            if Some(id) == except {
                continue;
            }
            if let Some(sink) = &member.sink {
                sink.send(message.clone());
            }
        }
    }
}

/// Tells a session whose participant resumed elsewhere that it is over (its actor closes it).
fn tell_taken_over(sink: &MemberSink) {
    sink.send(ServerMessage::Error {
        code: kaskade_proto::signal::ErrorCode::Unavailable,
        message: "this participant resumed in another session".into(),
        fatal: true,
    });
}

pub struct RoomActor;

pub struct RoomArgs {
    pub name: RoomName,
    pub directory: Arc<RoomDirectory>,
    pub mesh: MeshSink,
    pub action_log: Option<Arc<dyn ActionLog>>,
    pub guard: Option<Arc<dyn RoomGuard>>,
}

impl Actor for RoomActor {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RoomArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        info!(room = %args.name, "room opened");
        Ok(RoomState {
            name: args.name,
            directory: args.directory,
            mesh: args.mesh,
            action_log: args.action_log,
            guard: args.guard,
            myself,
            members: BTreeMap::new(),
            tracks: Vec::new(),
            next_epoch: 1,
            settings: RoomSettings::default(),
            speakers: DominantSpeakerDetector::new(),
            audience_announced: 0,
            audience_flush_pending: false,
            lobby: Vec::new(),
            remote_lobby: BTreeMap::new(),
            admitted: Default::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.mesh.send(&state.name, LocalRoomEvent::Closed);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RoomMsg::Join {
                mut info,
                sink,
                hidden,
                role: role_request,
                reply,
            } => {
                // A participant coming back (resume) takes over its old session, here or on
                // another node: its old tracks go, its membership and role stay.
                let previous = state.members.get(&info.id).map(|m| m.info.clone());
                let resumed = previous.is_some();
                // A room opening here starts with the settings access control keeps for it.
                if let Some(kept) = role_request.kept
                    && state.members.is_empty()
                    && state.lobby.is_empty()
                {
                    state.settings.locked = kept.locked;
                    state.settings.lobby = kept.lobby;
                }
                if state.settings.locked && !resumed && role_request.ceiling != Some(Role::Host) {
                    info!(room = %state.name, participant = %info.id, "join refused: room locked");
                    let _ = reply.send(Err(JoinRefused {
                        code: ErrorCode::RoomLocked,
                        message: "the room is locked; a host has to unlock it".into(),
                    }));
                    state.close_if_empty();
                    return Ok(());
                }
                // Without access control the room's first participant hosts: nobody to wait for.
                let opens_the_room =
                    role_request.ceiling.is_none() && state.members.values().all(|m| m.hidden);
                let waits = (state.settings.lobby || role_request.lobby)
                    && !resumed
                    && !hidden
                    && role_request.ceiling != Some(Role::Host)
                    && !opens_the_room
                    && !state.admitted.remove(&info.id);
                if waits {
                    if !state.lobby.iter().any(|w| w.id == info.id) {
                        info!(room = %state.name, participant = %info.id, "waiting in the lobby");
                        state.lobby.push(Waiting {
                            id: info.id.clone(),
                            name: info.name.clone(),
                            sink: sink.clone(),
                        });
                        state.lobby_changed();
                    }
                    let _ = reply.send(Err(JoinRefused {
                        code: ErrorCode::InLobby,
                        message: "waiting for a host to let you in".into(),
                    }));
                    return Ok(());
                }
                let mut note = None;
                if let Some(previous) = previous {
                    state.withdraw_tracks(&info.id);
                    info.role = previous.role;
                    info.hand_raised_at = previous.hand_raised_at;
                    info!(room = %state.name, participant = %info.id, "participant resumed");
                } else if hidden {
                    info.role = Role::Audience;
                } else {
                    let context = JoinContext {
                        room_is_empty: state.members.values().all(|m| m.hidden),
                        has_host: state.has_host(),
                        settings: state.settings,
                    };
                    (info.role, note) = roles::role_at_join(&role_request, context);
                }
                let mut snapshot = state.snapshot_for(info.role);
                snapshot.role_note = note;
                if info.role == Role::Audience && !hidden && !resumed {
                    snapshot.audience += 1; // counts the joining member too
                }
                snapshot.participants.retain(|p| p.id != info.id);
                if !hidden {
                    if !resumed {
                        state.tell_about(
                            &info.id,
                            info.role,
                            &ServerMessage::ParticipantJoined {
                                participant: info.clone(),
                            },
                        );
                    }
                    state
                        .mesh
                        .send(&state.name, LocalRoomEvent::Joined(info.clone()));
                }
                info!(room = %state.name, participant = %info.id, role = ?info.role, "participant joined");
                let epoch = state.next_epoch;
                state.next_epoch += 1;
                snapshot.epoch = epoch;
                let joined_id = info.id.clone();
                let old = state.members.insert(
                    info.id.clone(),
                    Member {
                        info,
                        sink,
                        hidden,
                        node: None,
                        epoch,
                        user: role_request.user.clone(),
                    },
                );
                if let Some(sink) = old.and_then(|m| m.sink) {
                    tell_taken_over(&sink);
                }
                if snapshot.role == Role::Host && !state.lobby_entries().is_empty() {
                    state.tell(
                        &joined_id,
                        ServerMessage::LobbyChanged {
                            waiting: state.lobby_entries(),
                        },
                    );
                }
                state.update_counts();
                state.audience_changed();
                let _ = reply.send(Ok(snapshot));
            }
            RoomMsg::Leave { participant, epoch } => {
                if !state.is_local(&participant) {
                    return Ok(());
                }
                if epoch
                    .is_some_and(|e| state.members.get(&participant).map(|m| m.epoch) != Some(e))
                {
                    return Ok(()); // a resumed session replaced this one
                }
                let Some(member) = state.remove_member(&participant) else {
                    return Ok(());
                };
                if !member.hidden {
                    // Its tracks go with it on the other nodes too.
                    state
                        .mesh
                        .send(&state.name, LocalRoomEvent::Left(participant.clone()));
                }
                info!(room = %state.name, participant = %participant, "participant left");
                state.update_counts();
                state.close_if_empty();
            }
            RoomMsg::LeaveLobby { participant } => {
                let before = state.lobby.len();
                state.lobby.retain(|w| w.id != participant);
                if state.lobby.len() != before {
                    info!(room = %state.name, participant = %participant, "left the lobby");
                    state.lobby_changed();
                }
                state.close_if_empty();
            }
            RoomMsg::Publish { tracks } => {
                let mut published = Vec::new();
                for track in tracks {
                    if !state.is_local(&track.participant) {
                        continue;
                    }
                    if state.tracks.iter().any(|t| t.id == track.id) {
                        continue;
                    }
                    state.tracks.push(track.clone());
                    published.push(track.clone());
                    state.broadcast(&ServerMessage::TrackPublished { track }, None);
                }
                if !published.is_empty() {
                    state
                        .mesh
                        .send(&state.name, LocalRoomEvent::Published(published));
                }
                state.update_counts();
            }
            RoomMsg::Unpublish { tracks } => {
                let mut gone = Vec::new();
                for id in tracks {
                    let local = state
                        .tracks
                        .iter()
                        .any(|t| t.id == id && state.is_local(&t.participant));
                    if local && state.unpublish(&id) {
                        gone.push(id);
                    }
                }
                if !gone.is_empty() {
                    state
                        .mesh
                        .send(&state.name, LocalRoomEvent::Unpublished(gone));
                }
                state.update_counts();
            }
            RoomMsg::SetMuted {
                participant,
                track,
                muted,
            } => {
                if let Some(t) = state.tracks.iter_mut().find(|t| t.id == track)
                    && t.participant == participant
                    && state
                        .members
                        .get(&participant)
                        .is_some_and(|m| m.node.is_none())
                {
                    t.muted = muted;
                    state.broadcast(
                        &ServerMessage::TrackMuted {
                            track: track.clone(),
                            muted,
                        },
                        None,
                    );
                    state
                        .mesh
                        .send(&state.name, LocalRoomEvent::Muted { track, muted });
                }
            }
            RoomMsg::Chat { from, text } => {
                if let Some(member) = state.members.get(&from)
                    && member.node.is_none()
                {
                    let ts = now_ms();
                    let name = member.info.name.clone();
                    state.chat(from.clone(), name.clone(), text.clone(), ts);
                    state.mesh.send(
                        &state.name,
                        LocalRoomEvent::Chat {
                            from,
                            name,
                            text,
                            ts,
                        },
                    );
                }
            }
            RoomMsg::RaiseHand {
                participant,
                raised,
            } => {
                if let Some(member) = state.members.get(&participant)
                    && member.node.is_none()
                    && member.info.hand_raised_at.is_some() != raised
                {
                    let mut info = member.info.clone();
                    info.hand_raised_at = raised.then(now_ms);
                    state.update_member(info.clone());
                    state.mesh.send(&state.name, LocalRoomEvent::Updated(info));
                }
            }
            RoomMsg::Moderate { by, target, action } => state.moderate(by, target, action),
            RoomMsg::SetSettings { by, settings } => {
                if state.is_local(&by) && state.role_of(&by) == Some(Role::Host) {
                    state.log_action(
                        &by,
                        ModeratedAction::SettingsChanged,
                        None,
                        Some(format!(
                            "only_hosts_publish={} locked={}",
                            settings.only_hosts_publish, settings.locked
                        )),
                    );
                    state.apply_settings(settings);
                    state
                        .mesh
                        .send(&state.name, LocalRoomEvent::Settings(settings));
                } else {
                    state.tell(
                        &by,
                        ServerMessage::error(
                            ErrorCode::Forbidden,
                            "only hosts may change the room's settings",
                        ),
                    );
                }
            }
            RoomMsg::AudioLevel { participant, level } => {
                if state.is_local(&participant) {
                    state.audio_level(participant.clone(), level, Instant::now());
                    if level < NOISE_FLOOR_DBOV {
                        state.mesh.send(
                            &state.name,
                            LocalRoomEvent::AudioLevel { participant, level },
                        );
                    }
                }
            }
            RoomMsg::FlushAudienceCount => state.flush_audience_count(),
            RoomMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            RoomMsg::Operator { target } => state.operator_action(target),
            RoomMsg::Reconnect { url, reason } => {
                let message = ServerMessage::Reconnect { url, reason };
                for member in state.members.values().filter(|m| m.node.is_none()) {
                    if let Some(sink) = &member.sink {
                        sink.send(message.clone());
                    }
                }
            }
            RoomMsg::LocalShare(reply) => {
                let mut share = state.snapshot();
                share.participants.retain(|p| state.is_local(&p.id));
                share.tracks.retain(|t| state.is_local(&t.participant));
                let _ = reply.send(share);
            }
            RoomMsg::Remote { node, event } => {
                state.on_remote(&node, event);
                state.update_counts();
            }
        }
        Ok(())
    }
}
