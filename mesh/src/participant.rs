//! The `Participant` actor: one per signalling session (WebSocket). It owns the participant's
//! signalling state — its room, its publish and subscribe peer sessions in the media engine, what
//! it has published and subscribed to — and turns client messages, room events and engine events
//! into each other, one message at a time. The socket itself stays with the transport, which
//! feeds frames in as [`ParticipantMsg::Text`] and writes out what arrives on the output channel.

use crate::admission::{Admission, JoinCredentials, JoinGate, ProtectionChange};
use crate::directory::{RoomDirectory, RoomError};
use crate::engine_api::{
    EdgeError, EdgeEvent, EngineCommand, EngineHandle, EventSink, SessionKey, TrackDescriptor,
};
use crate::roles::JoinAccess;
use crate::room::{MemberSink, RoomMsg};
use kaskade_proto::signal::{
    ClientMessage, ErrorCode, LayerChoice, MediaKind, ModerationAction, PUBLISH_OFFER_REFUSED,
    ParticipantInfo, PeerRole, Role, SUBSCRIBE_ANSWER_REFUSED, ServerMessage, TrackInfo,
    TrackSource,
};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{Instrument, debug, info, warn};

/// WebSocket close codes the participant asks its transport to use.
pub const CLOSE_NORMAL: u16 = 1000;

/// What the participant asks its transport to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantOutput {
    Send(ServerMessage),
    Close { code: u16, reason: String },
}

pub enum ParticipantMsg {
    /// A text frame from the client (size already checked by the transport).
    Text(String),
    /// An event from the room.
    Room(ServerMessage),
    /// An event from one of the participant's peer sessions.
    Edge(EdgeEvent),
    /// The client's transport is gone: leave and stop.
    Disconnected,
}

/// Most tracks one participant may publish at a time (camera, microphone, screen and its audio,
/// with room to spare; simulcast layers count once).
pub const MAX_TRACKS_PER_PARTICIPANT: usize = 8;

/// A join that passed access control and placement: what entering the room takes (kept while
/// the join waits in a lobby).
#[derive(Clone)]
struct RoomEntry {
    room: RoomName,
    info: ParticipantInfo,
    access: JoinAccess,
    auto_subscribe: bool,
}

/// The fields of a `join` message, as the session acts on them.
struct JoinAsk {
    room: RoomName,
    name: String,
    auto_subscribe: bool,
    resume: Option<String>,
    site: Option<String>,
    requested_role: Option<Role>,
    token: Option<String>,
    password: Option<String>,
}

pub struct ParticipantArgs {
    pub id: ParticipantId,
    pub engine: EngineHandle,
    pub rooms: Arc<RoomDirectory>,
    pub output: UnboundedSender<ParticipantOutput>,
    /// Where joins are admitted, redirected or refused ([`AdmitAll`] on a single node).
    pub gate: Arc<dyn JoinGate>,
}

struct Joined {
    room: RoomName,
    actor: ActorRef<RoomMsg>,
    auto_subscribe: bool,
    epoch: u64,
}

pub struct ParticipantState {
    participant: ParticipantId,
    engine: EngineHandle,
    rooms: Arc<RoomDirectory>,
    output: UnboundedSender<ParticipantOutput>,
    gate: Arc<dyn JoinGate>,
    myself: ActorRef<ParticipantMsg>,
    joined: Option<Joined>,
    /// A join waiting in the room's lobby.
    waiting: Option<RoomEntry>,
    publish: Option<SessionKey>,
    subscribe: Option<SessionKey>,
    /// Every track in the room, as the room announced it.
    directory: BTreeMap<TrackId, TrackInfo>,
    subscribed: BTreeSet<TrackId>,
    published: BTreeSet<TrackId>,
    /// The role the room granted; the room tells when it changes.
    role: Role,
    /// Roles of the others this participant may see (hosts' cameras are always received).
    roles: BTreeMap<ParticipantId, Role>,
    /// Most recent dominant speakers, newest first.
    recent_speakers: Vec<ParticipantId>,
    /// `set_preferences`: camera video of only this many recent speakers; no video at all.
    last_n: Option<u16>,
    audio_only: bool,
}

pub struct ParticipantActor;

impl Actor for ParticipantActor {
    type Msg = ParticipantMsg;
    type State = ParticipantState;
    type Arguments = ParticipantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ParticipantArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        debug!(participant = %args.id, "signalling connected");
        Ok(ParticipantState {
            participant: args.id,
            engine: args.engine,
            rooms: args.rooms,
            output: args.output,
            gate: args.gate,
            myself,
            joined: None,
            waiting: None,
            publish: None,
            subscribe: None,
            directory: BTreeMap::new(),
            subscribed: BTreeSet::new(),
            published: BTreeSet::new(),
            role: Role::default(),
            roles: BTreeMap::new(),
            recent_speakers: Vec::new(),
            last_n: None,
            audio_only: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ParticipantMsg::Text(text) => {
                if state.on_text(&text).await {
                    state.leave();
                    myself.stop(None);
                }
            }
            ParticipantMsg::Room(event) => state.on_room_event(event).await,
            ParticipantMsg::Edge(event) => state.on_edge_event(event),
            ParticipantMsg::Disconnected => {
                state.leave();
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.leave();
        Ok(())
    }
}

impl ParticipantState {
    fn send(&self, message: ServerMessage) {
        let _ = self.output.send(ParticipantOutput::Send(message));
    }

    fn events(&self) -> EventSink {
        let myself = self.myself.clone();
        EventSink::new(move |event| {
            let _ = myself.cast(ParticipantMsg::Edge(event));
        })
    }

    /// Handles one client frame; true when the participant is done (it left).
    async fn on_text(&mut self, text: &str) -> bool {
        let message = match ClientMessage::decode(text) {
            Ok(m) => m,
            Err(e) => {
                self.send(ServerMessage::error(e.code(), e.to_string()));
                return false;
            }
        };
        if let ClientMessage::Join {
            room,
            name,
            auto_subscribe,
            resume,
            site,
            role,
            token,
            password,
        } = message
        {
            return self
                .join(JoinAsk {
                    room,
                    name,
                    auto_subscribe,
                    resume,
                    site,
                    requested_role: role,
                    token,
                    password,
                })
                .await;
        }
        if self.joined.is_none() {
            self.send(ServerMessage::error(
                ErrorCode::NotJoined,
                "send join first",
            ));
            return false;
        }
        match message {
            ClientMessage::Join { .. } => {}
            ClientMessage::PublishOffer { sdp, sources } => {
                if self.role.may_publish() {
                    self.publish(sdp, sources).await;
                } else {
                    self.fail(
                        ErrorCode::Forbidden,
                        format!("{PUBLISH_OFFER_REFUSED}: audience members cannot publish; raise your hand and wait for a host to make you a speaker"),
                    );
                }
            }
            ClientMessage::SubscribeAnswer { sdp } => {
                let Some(session) = self.subscribe else {
                    self.fail(ErrorCode::BadRequest, "no subscribe offer is outstanding");
                    return false;
                };
                let result = self
                    .engine
                    .request(|reply| EngineCommand::SubscribeAnswer {
                        session,
                        answer: sdp,
                        reply,
                    })
                    .await;
                // A refused answer changes nothing: the offer still waits for a valid one.
                if let Err(e) = result {
                    warn!(room = %self.room_name(), participant = %self.participant, session, error = %e, "subscribe answer refused");
                    self.fail(
                        ErrorCode::InvalidSdp,
                        format!("{SUBSCRIBE_ANSWER_REFUSED}: {e}"),
                    );
                }
            }
            ClientMessage::Candidate { role, candidate } => {
                let session = match role {
                    PeerRole::Publish => self.publish,
                    PeerRole::Subscribe => self.subscribe,
                };
                if let Some(session) = session {
                    let _ = self.engine.send(EngineCommand::RemoteCandidate {
                        session,
                        candidate: candidate.candidate,
                        sdp_mid: candidate.sdp_mid,
                        sdp_mline_index: candidate.sdp_mline_index,
                    });
                }
            }
            ClientMessage::Subscribe { track, layer } => {
                if !self.directory.contains_key(&track) {
                    self.fail(ErrorCode::UnknownTrack, format!("no track {track}"));
                } else {
                    self.subscribe_to(vec![track.clone()]).await;
                    if let Some(layer) = layer {
                        self.set_layer(track, layer);
                    }
                }
            }
            ClientMessage::Unsubscribe { track } => {
                if self.subscribed.remove(&track) {
                    if let Some(session) = self.subscribe {
                        let _ = self.engine.send(EngineCommand::UpdateSubscription {
                            session,
                            add: vec![],
                            remove: vec![track],
                        });
                    }
                } else {
                    self.fail(
                        ErrorCode::UnknownTrack,
                        format!("not subscribed to {track}"),
                    );
                }
            }
            ClientMessage::SetLayer { track, layer } => {
                if self.subscribed.contains(&track) {
                    self.set_layer(track, layer);
                } else {
                    self.fail(
                        ErrorCode::UnknownTrack,
                        format!("not subscribed to {track}"),
                    );
                }
            }
            ClientMessage::SetMuted { track, muted } => {
                if self.published.contains(&track) {
                    if !muted {
                        // Unmuting oneself lifts a host's mute.
                        let _ = self.engine.send(EngineCommand::SetTrackPaused {
                            track: track.clone(),
                            paused: false,
                        });
                    }
                    self.room_cast(RoomMsg::SetMuted {
                        participant: self.participant.clone(),
                        track,
                        muted,
                    });
                } else {
                    self.fail(ErrorCode::UnknownTrack, format!("not your track: {track}"));
                }
            }
            ClientMessage::Chat { text } => {
                self.room_cast(RoomMsg::Chat {
                    from: self.participant.clone(),
                    text,
                });
            }
            ClientMessage::RaiseHand { raised } => {
                self.room_cast(RoomMsg::RaiseHand {
                    participant: self.participant.clone(),
                    raised,
                });
            }
            ClientMessage::SetRole { participant, role } => {
                self.moderate(Some(participant), ModerationAction::SetRole { role });
            }
            ClientMessage::MuteParticipant { participant, kind } => {
                self.moderate(participant, ModerationAction::Mute { kind });
            }
            ClientMessage::RemoveParticipant { participant, ban } => {
                self.moderate(Some(participant), ModerationAction::Remove { ban });
            }
            ClientMessage::SetRoomPassword { password } => {
                if !self.role.may_moderate() {
                    self.fail(ErrorCode::Forbidden, "only hosts may do this");
                    return false;
                }
                let Some(room) = self.joined.as_ref().map(|j| j.room.clone()) else {
                    return false;
                };
                let protected = password.is_some();
                match self
                    .gate
                    .protect(&room, ProtectionChange::Password(password))
                    .await
                {
                    Ok(()) => {
                        info!(room = %room, participant = %self.participant, protected, "room password changed");
                        self.send(ServerMessage::RoomPasswordSet { protected });
                    }
                    Err(denied) => self.fail(denied.code, denied.message),
                }
            }
            ClientMessage::AdmitParticipant { participant } => {
                self.moderate(Some(participant), ModerationAction::Admit);
            }
            ClientMessage::DenyParticipant { participant } => {
                self.moderate(Some(participant), ModerationAction::Deny);
            }
            ClientMessage::EndMeeting {} => {
                self.moderate(None, ModerationAction::EndMeeting);
            }
            ClientMessage::SetRoomSettings { settings } if self.role.may_moderate() => {
                // Kept by access control too, so every node enforces lock and lobby from its
                // first join on (without access control there is nowhere to keep them).
                let room = self.joined.as_ref().map(|j| j.room.clone());
                if let Some(room) = room {
                    let change = ProtectionChange::Flags {
                        locked: settings.locked,
                        lobby: settings.lobby,
                    };
                    if let Err(denied) = self.gate.protect(&room, change).await
                        && denied.code != ErrorCode::BadRequest
                    {
                        self.fail(denied.code, denied.message);
                        return false;
                    }
                }
                self.room_cast(RoomMsg::SetSettings {
                    by: self.participant.clone(),
                    settings,
                });
            }
            ClientMessage::SetRoomSettings { settings } => {
                self.room_cast(RoomMsg::SetSettings {
                    by: self.participant.clone(),
                    settings,
                });
            }
            ClientMessage::SetPreferences { last_n, audio_only } => {
                self.last_n = last_n;
                self.audio_only = audio_only;
                self.resubscribe().await;
            }
            ClientMessage::Leave => {
                let _ = self.output.send(ParticipantOutput::Close {
                    code: CLOSE_NORMAL,
                    reason: "left".into(),
                });
                return true;
            }
        }
        false
    }

    fn fail(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.send(ServerMessage::error(code, message));
    }

    /// Asks the room to moderate; refused at once when this participant is no host (the room
    /// checks again: it owns the roles).
    fn moderate(&mut self, target: Option<ParticipantId>, action: ModerationAction) {
        if !self.role.may_moderate() {
            self.fail(ErrorCode::Forbidden, "only hosts may do this");
            return;
        }
        self.room_cast(RoomMsg::Moderate {
            by: self.participant.clone(),
            target,
            action,
        });
    }

    /// Whether auto-subscription wants `track` under the current preferences.
    fn wants(&self, track: &TrackInfo) -> bool {
        if track.participant == self.participant {
            return false;
        }
        if track.kind == MediaKind::Audio {
            return true;
        }
        if self.audio_only {
            return false;
        }
        let Some(n) = self.last_n else { return true };
        if matches!(track.source, TrackSource::Screen) {
            return true;
        }
        self.roles.get(&track.participant) == Some(&Role::Host)
            || self
                .recent_speakers
                .iter()
                .take(usize::from(n))
                .any(|p| *p == track.participant)
    }

    /// With auto-subscription, brings the subscriptions in line with [`Self::wants`].
    async fn resubscribe(&mut self) {
        if !self.joined.as_ref().is_some_and(|j| j.auto_subscribe) {
            return;
        }
        let drop: Vec<TrackId> = self
            .subscribed
            .iter()
            .filter(|id| !self.directory.get(*id).is_some_and(|t| self.wants(t)))
            .cloned()
            .collect();
        if !drop.is_empty() {
            for id in &drop {
                self.subscribed.remove(id);
            }
            if let Some(session) = self.subscribe {
                let _ = self.engine.send(EngineCommand::UpdateSubscription {
                    session,
                    add: vec![],
                    remove: drop,
                });
            }
        }
        let add: Vec<TrackId> = self
            .directory
            .values()
            .filter(|t| !self.subscribed.contains(&t.id) && self.wants(t))
            .map(|t| t.id.clone())
            .collect();
        self.subscribe_to(add).await;
    }

    /// The room changed this participant's role: an audience member stops publishing.
    async fn role_changed(&mut self, role: Role) {
        let was = std::mem::replace(&mut self.role, role);
        if was == role {
            return;
        }
        info!(room = %self.room_name(), participant = %self.participant, ?role, "role changed");
        if !role.may_publish()
            && let Some(session) = self.publish.take()
        {
            let _ = self.engine.send(EngineCommand::Close { session });
            let gone: Vec<TrackId> = std::mem::take(&mut self.published).into_iter().collect();
            if !gone.is_empty() {
                self.room_cast(RoomMsg::Unpublish { tracks: gone });
            }
            self.send(ServerMessage::PublishClosed {
                reason: "you are in the audience now".into(),
            });
        }
    }

    fn room_cast(&self, message: RoomMsg) {
        if let Some(j) = &self.joined {
            let _ = j.actor.cast(message);
        }
    }

    /// Admits, redirects or refuses a join; true when the session is over (redirected).
    ///
    /// Traced as a `join` span that is current only while access and placement decide: entering
    /// the room can start the room's actor, whose long-lived span would keep it open.
    async fn join(&mut self, ask: JoinAsk) -> bool {
        let span = tracing::info_span!("join", room = %ask.room, participant = %self.participant,
            resuming = ask.resume.is_some(), outcome = tracing::field::Empty);
        let JoinAsk {
            room,
            name,
            auto_subscribe,
            resume,
            site,
            requested_role,
            token,
            password,
        } = ask;
        let site = site.as_deref();
        if self.joined.is_some() {
            self.fail(ErrorCode::AlreadyJoined, "already in a room");
            return false;
        }
        if self.waiting.is_some() {
            self.fail(
                ErrorCode::AlreadyJoined,
                "already waiting in a room's lobby",
            );
            return false;
        }
        let mut name = name.trim().to_owned();
        let ceiling;
        // Who it is, for the audit log (not known again after a resume).
        let mut user = None;
        let mut lobby = false;
        let mut kept = None;
        if let Some(resume_token) = &resume {
            // The failover side of a join: a participant whose node died or drained comes back.
            let resume_span = tracing::info_span!(parent: &span, "failover.resume", room = %room,
                participant = tracing::field::Empty, outcome = tracing::field::Empty);
            let _resume = resume_span.enter();
            // A resume token is issued only after a join was authorised: it carries the
            // ceiling, so a client whose access token expired meanwhile can come back.
            match self.gate.verify_resume(&room, resume_token) {
                Ok(claim) => {
                    resume_span.record("participant", tracing::field::display(&claim.participant));
                    resume_span.record("outcome", "resumed");
                    span.record("participant", tracing::field::display(&claim.participant));
                    info!(room = %room, participant = %claim.participant, "resuming participant");
                    self.participant = claim.participant;
                    name = claim.name;
                    ceiling = claim.ceiling;
                }
                Err(reason) => {
                    resume_span.record("outcome", "rejected");
                    span.record("outcome", "resume_rejected");
                    self.fail(
                        ErrorCode::ResumeRejected,
                        format!("resume refused: {reason}"),
                    );
                    return false;
                }
            }
        } else {
            let credentials = JoinCredentials {
                token: token.as_deref(),
                password: password.as_deref(),
            };
            match self
                .gate
                .authorize(&room, credentials)
                .instrument(span.clone())
                .await
            {
                Ok(grant) => {
                    if let Some(user) = &grant.user {
                        info!(room = %room, participant = %self.participant, %user, ceiling = ?grant.ceiling, "join authorised");
                    }
                    if let Some(vouched) = grant.name {
                        name = vouched;
                    }
                    ceiling = grant.ceiling;
                    user = grant.user;
                    lobby = grant.lobby;
                    kept = grant.kept;
                }
                Err(denied) => {
                    span.record("outcome", "unauthorised");
                    warn!(room = %room, participant = %self.participant, reason = %denied.message, "join unauthorised");
                    self.fail(denied.code, denied.message);
                    return false;
                }
            }
        }
        match self
            .gate
            .admit(&room, site, resume.is_some())
            .instrument(span.clone())
            .await
        {
            Admission::Here => {}
            Admission::Redirect { url } => {
                span.record("outcome", "redirected");
                info!(room = %room, participant = %self.participant, to = %url, "join redirected");
                self.send(ServerMessage::Redirect { url });
                let _ = self.output.send(ParticipantOutput::Close {
                    code: CLOSE_NORMAL,
                    reason: "redirected".into(),
                });
                return true;
            }
            Admission::Refused { code, message } => {
                span.record("outcome", "refused");
                warn!(room = %room, participant = %self.participant, reason = %message, "join refused");
                self.fail(code, message);
                return false;
            }
        }
        let entry = RoomEntry {
            room,
            info: ParticipantInfo::new(self.participant.clone(), name),
            access: JoinAccess {
                user,
                lobby,
                kept,
                requested: requested_role,
                ceiling,
            },
            auto_subscribe,
        };
        self.enter_room(entry).await;
        span.record(
            "outcome",
            match (&self.joined, &self.waiting) {
                (Some(_), _) => "joined",
                (None, Some(_)) => "lobby",
                (None, None) => "refused",
            },
        );
        false
    }

    /// Enters the room (the join was authorised and placed here); a lobby keeps the entry until
    /// a host decides.
    async fn enter_room(&mut self, entry: RoomEntry) {
        let RoomEntry {
            room,
            info,
            access,
            auto_subscribe,
        } = entry.clone();
        let ceiling = access.ceiling;
        match self
            .rooms
            .join(&room, info.clone(), Some(self.member_sink()), false, access)
            .await
        {
            Ok((actor, snapshot)) => {
                info!(room = %room, participant = %self.participant, "signalling participant joined");
                self.directory = snapshot
                    .tracks
                    .iter()
                    .map(|t| (t.id.clone(), t.clone()))
                    .collect();
                self.joined = Some(Joined {
                    room: room.clone(),
                    actor,
                    auto_subscribe,
                    epoch: snapshot.epoch,
                });
                let resume_token =
                    self.gate
                        .issue_resume(&room, &self.participant, &info.name, ceiling);
                self.role = snapshot.role;
                self.roles = snapshot
                    .participants
                    .iter()
                    .map(|p| (p.id.clone(), p.role))
                    .collect();
                self.recent_speakers = snapshot.dominant_speaker.iter().cloned().collect();
                info!(room = %room, participant = %self.participant, role = ?snapshot.role, "role granted");
                self.send(ServerMessage::Joined {
                    participant: self.participant.clone(),
                    room,
                    participants: snapshot.participants,
                    tracks: snapshot.tracks.clone(),
                    resume_token,
                    alternates: self.gate.alternates(),
                    role: snapshot.role,
                    settings: snapshot.settings,
                    audience: snapshot.audience,
                    dominant_speaker: snapshot.dominant_speaker,
                    ice_servers: self.gate.ice_servers(&self.participant),
                });
                if let Some(note) = snapshot.role_note {
                    self.fail(ErrorCode::Forbidden, note);
                }
                if auto_subscribe {
                    self.resubscribe().await;
                }
            }
            Err(RoomError::Refused(refused)) if refused.code == ErrorCode::InLobby => {
                info!(room = %room, participant = %self.participant, "waiting in the lobby");
                self.waiting = Some(entry);
                self.send(ServerMessage::LobbyWaiting {});
            }
            Err(RoomError::Refused(refused)) => {
                self.fail(refused.code, refused.message);
            }
            Err(e) => {
                warn!(room = %room, error = %e, "join failed");
                self.fail(ErrorCode::Internal, e.to_string());
            }
        }
    }

    async fn publish(&mut self, sdp: String, sources: BTreeMap<String, TrackSource>) {
        let result = self
            .engine
            .request(|reply| EngineCommand::Publish {
                session: self.publish,
                participant: self.participant.clone(),
                offer: sdp,
                sources,
                events: self.events(),
                reply,
            })
            .await;
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                self.fail(
                    ErrorCode::InvalidSdp,
                    format!("{PUBLISH_OFFER_REFUSED}: {e}"),
                );
                return;
            }
        };
        if outcome.tracks.len() > MAX_TRACKS_PER_PARTICIPANT {
            // Refused as a whole: the connection goes, with whatever it published.
            let _ = self.engine.send(EngineCommand::Close {
                session: outcome.session,
            });
            self.publish = None;
            let gone: Vec<TrackId> = std::mem::take(&mut self.published).into_iter().collect();
            if !gone.is_empty() {
                self.room_cast(RoomMsg::Unpublish { tracks: gone });
            }
            warn!(room = %self.room_name(), participant = %self.participant, tracks = outcome.tracks.len(), "publish refused: too many tracks");
            self.fail(
                ErrorCode::LimitReached,
                format!(
                    "{PUBLISH_OFFER_REFUSED}: at most {MAX_TRACKS_PER_PARTICIPANT} tracks per \
                     participant, the offer has {}",
                    outcome.tracks.len()
                ),
            );
            return;
        }
        self.publish = Some(outcome.session);
        let new: Vec<TrackInfo> = outcome
            .tracks
            .values()
            .filter(|d| !self.published.contains(&d.id))
            .map(TrackInfo::from)
            .collect();
        for t in &new {
            self.published.insert(t.id.clone());
        }
        for id in &outcome.removed {
            self.published.remove(id);
        }
        self.send(ServerMessage::PublishAnswer {
            sdp: outcome.answer,
            tracks: outcome
                .tracks
                .iter()
                .map(|(mid, d)| (mid.clone(), d.id.clone()))
                .collect(),
        });
        if !outcome.removed.is_empty() {
            self.room_cast(RoomMsg::Unpublish {
                tracks: outcome.removed,
            });
        }
        if !new.is_empty() {
            self.room_cast(RoomMsg::Publish { tracks: new });
        }
    }

    /// Subscribes to tracks of others, creating the subscribe session at the first one.
    async fn subscribe_to(&mut self, tracks: Vec<TrackId>) {
        let wanted: Vec<TrackDescriptor> = tracks
            .iter()
            .filter(|id| !self.subscribed.contains(*id))
            .filter_map(|id| self.directory.get(id))
            .filter(|t| t.participant != self.participant)
            .map(TrackDescriptor::from)
            .collect();
        if wanted.is_empty() {
            return;
        }
        let ids: Vec<TrackId> = wanted.iter().map(|t| t.id.clone()).collect();
        self.subscribed.extend(ids.iter().cloned());
        match self.subscribe {
            Some(session) => {
                let _ = self.engine.send(EngineCommand::UpdateSubscription {
                    session,
                    add: wanted,
                    remove: vec![],
                });
            }
            None => {
                let result = self
                    .engine
                    .request(|reply| EngineCommand::SubscribeOffering {
                        participant: self.participant.clone(),
                        tracks: wanted,
                        events: self.events(),
                        reply,
                    })
                    .await;
                // Only what the engine put in the offer is subscribed: a track can be gone by the
                // time the engine sees the request (its publisher left, or resumed elsewhere and
                // its old copy was dropped); its `track_unpublished` follows.
                let offered: BTreeSet<&TrackId> = match &result {
                    Ok(offer) => offer.tracks.values().collect(),
                    Err(_) => BTreeSet::new(),
                };
                for id in ids.iter().filter(|id| !offered.contains(id)) {
                    self.subscribed.remove(id);
                }
                match result {
                    Ok(offer) => {
                        self.subscribe = Some(offer.session);
                        self.send(ServerMessage::SubscribeOffer {
                            sdp: offer.offer,
                            tracks: offer.tracks,
                        });
                    }
                    // Every track is gone already: nothing to offer, and nothing went wrong.
                    Err(EdgeError::UnknownTrack) => {
                        debug!(room = %self.room_name(), participant = %self.participant, "tracks gone before the subscribe session was made");
                    }
                    Err(e) => self.fail(ErrorCode::Internal, e.to_string()),
                }
            }
        }
    }

    /// The joined room's name, for logs (empty before a join).
    fn room_name(&self) -> &str {
        self.joined.as_ref().map_or("", |j| j.room.as_str())
    }

    fn set_layer(&mut self, track: TrackId, layer: LayerChoice) {
        if let Some(session) = self.subscribe {
            let _ = self.engine.send(EngineCommand::SetLayer {
                session,
                track,
                layer: layer.index(),
            });
        }
    }

    async fn on_room_event(&mut self, event: ServerMessage) {
        match &event {
            ServerMessage::LobbyAdmitted {} => {
                if let Some(entry) = self.waiting.take() {
                    self.enter_room(entry).await;
                }
                return;
            }
            ServerMessage::TrackPublished { track } => {
                self.directory.insert(track.id.clone(), track.clone());
                let auto = self.joined.as_ref().is_some_and(|j| j.auto_subscribe);
                let wanted = self.wants(track);
                let id = track.id.clone();
                self.send(event);
                if auto && wanted {
                    self.subscribe_to(vec![id]).await;
                }
                return;
            }
            ServerMessage::TrackUnpublished { track } => {
                self.directory.remove(track);
                if self.subscribed.remove(track)
                    && let Some(session) = self.subscribe
                {
                    let _ = self.engine.send(EngineCommand::UpdateSubscription {
                        session,
                        add: vec![],
                        remove: vec![track.clone()],
                    });
                }
            }
            ServerMessage::ParticipantJoined { participant }
            | ServerMessage::ParticipantUpdated { participant } => {
                if participant.id == self.participant {
                    let role = participant.role;
                    self.send(event);
                    self.role_changed(role).await;
                    return;
                }
                let host_changed = self.roles.insert(participant.id.clone(), participant.role)
                    != Some(participant.role);
                self.send(event);
                if host_changed && self.last_n.is_some() {
                    self.resubscribe().await;
                }
                return;
            }
            ServerMessage::ParticipantLeft { participant } => {
                self.roles.remove(participant);
            }
            ServerMessage::DominantSpeaker { recent, .. } => {
                self.recent_speakers = recent.clone();
                self.send(event);
                if self.last_n.is_some() {
                    self.resubscribe().await;
                }
                return;
            }
            ServerMessage::MutedByHost { track, .. } => {
                let _ = self.engine.send(EngineCommand::SetTrackPaused {
                    track: track.clone(),
                    paused: true,
                });
            }
            ServerMessage::Error {
                fatal: true, code, ..
            } => {
                // The room handed this participant to a newer session (it resumed elsewhere),
                // or a host removed it.
                let reason = if *code == ErrorCode::Removed {
                    "removed by a host"
                } else {
                    "resumed in another session"
                };
                self.send(event);
                let _ = self.output.send(ParticipantOutput::Close {
                    code: CLOSE_NORMAL,
                    reason: reason.into(),
                });
                self.leave();
                self.myself.stop(None);
                return;
            }
            _ => {}
        }
        self.send(event);
    }

    fn on_edge_event(&mut self, event: EdgeEvent) {
        match event {
            EdgeEvent::Connected { .. } => {}
            EdgeEvent::AudioLevels { levels, .. } => {
                // One participant, one voice: its loudest audio track counts.
                if let Some(level) = levels
                    .iter()
                    .filter(|(t, _)| self.published.contains(t))
                    .map(|(_, l)| *l)
                    .min()
                {
                    self.room_cast(RoomMsg::AudioLevel {
                        participant: self.participant.clone(),
                        level,
                    });
                }
            }
            EdgeEvent::PublishLayers { track, active, .. } => {
                if self.published.contains(&track) {
                    self.send(ServerMessage::PublishLayers { track, active });
                }
            }
            EdgeEvent::ReceiveQuality {
                estimate_bps,
                layers,
                ..
            } => {
                self.send(ServerMessage::ReceiveQuality {
                    estimate_bps,
                    layers,
                });
            }
            EdgeEvent::SubscribeOffer { offer, tracks, .. } => {
                self.send(ServerMessage::SubscribeOffer { sdp: offer, tracks });
            }
            EdgeEvent::Closed { session, reason } => {
                if self.publish == Some(session) {
                    self.publish = None;
                    let gone: Vec<TrackId> =
                        std::mem::take(&mut self.published).into_iter().collect();
                    self.room_cast(RoomMsg::Unpublish { tracks: gone });
                    self.fail(
                        ErrorCode::Internal,
                        format!("publish connection ended: {reason}"),
                    );
                }
                if self.subscribe == Some(session) {
                    self.subscribe = None;
                    self.subscribed.clear();
                    self.fail(
                        ErrorCode::Internal,
                        format!("subscribe connection ended: {reason}"),
                    );
                }
            }
        }
    }

    fn member_sink(&self) -> MemberSink {
        let myself = self.myself.clone();
        MemberSink::new(move |event| {
            let _ = myself.cast(ParticipantMsg::Room(event));
        })
    }

    fn leave(&mut self) {
        if let Some(entry) = self.waiting.take()
            && let Some(room) = self.rooms.get(&entry.room)
        {
            let _ = room.cast(RoomMsg::LeaveLobby {
                participant: self.participant.clone(),
            });
        }
        for session in [self.publish.take(), self.subscribe.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.engine.send(EngineCommand::Close { session });
        }
        if let Some(j) = self.joined.take() {
            info!(room = %j.room, participant = %self.participant, "signalling participant left");
            let _ = j.actor.cast(RoomMsg::Leave {
                participant: self.participant.clone(),
                epoch: Some(j.epoch),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::AdmitAll;
    use crate::engine_api::SubscribeOffer;
    use kaskade_proto::signal::MediaKind;
    use std::time::Duration;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(5);

    fn track(id: &str) -> TrackInfo {
        TrackInfo {
            id: TrackId(id.into()),
            participant: ParticipantId("pada".into()),
            kind: MediaKind::Video,
            source: TrackSource::Camera,
            layers: vec![],
            muted: false,
        }
    }

    /// Ada, a member of `room` without a signalling session: the test publishes for her.
    async fn ada_in(rooms: &Arc<RoomDirectory>, room: &RoomName) -> ActorRef<RoomMsg> {
        let info = ParticipantInfo::new(ParticipantId("pada".into()), "Ada");
        let sink = MemberSink::new(|_| {});
        rooms
            .join(room, info, Some(sink), false, JoinAccess::default())
            .await
            .unwrap()
            .0
    }

    /// Bob's participant actor, joined to `room`; returns what it sends to his client.
    async fn bob_in(
        engine: &EngineHandle,
        rooms: &Arc<RoomDirectory>,
        room: &RoomName,
    ) -> (
        ActorRef<ParticipantMsg>,
        UnboundedReceiver<ParticipantOutput>,
    ) {
        let (output, rx) = unbounded_channel();
        let args = ParticipantArgs {
            id: ParticipantId("pbob".into()),
            engine: engine.clone(),
            rooms: rooms.clone(),
            output,
            gate: Arc::new(AdmitAll),
        };
        let (actor, _) = Actor::spawn(None, ParticipantActor, args).await.unwrap();
        let join = format!(r#"{{"type":"join","room":"{room}","name":"Bob"}}"#);
        actor.cast(ParticipantMsg::Text(join)).unwrap();
        (actor, rx)
    }

    async fn next_output(rx: &mut UnboundedReceiver<ParticipantOutput>) -> ServerMessage {
        match timeout(WAIT, rx.recv()).await {
            Ok(Some(ParticipantOutput::Send(m))) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The messages sent up to and including the first that `stop` matches.
    async fn outputs_until(
        rx: &mut UnboundedReceiver<ParticipantOutput>,
        stop: impl Fn(&ServerMessage) -> bool,
    ) -> Vec<ServerMessage> {
        let mut seen = Vec::new();
        loop {
            let m = next_output(rx).await;
            let done = stop(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }

    async fn next_command(rx: &mut UnboundedReceiver<EngineCommand>) -> EngineCommand {
        timeout(WAIT, rx.recv()).await.unwrap().unwrap()
    }

    /// A subscribe offer that leaves out a track which vanished before the engine saw the
    /// request: the participant is not subscribed to it (unsubscribing is refused).
    #[tokio::test]
    async fn only_what_the_engine_offered_is_subscribed() {
        let (engine, mut commands) = EngineHandle::new();
        let rooms = RoomDirectory::new();
        let room = RoomName::parse("partial").unwrap();
        let ada = ada_in(&rooms, &room).await;
        ada.cast(RoomMsg::Publish {
            tracks: vec![track("tkept"), track("tgone")],
        })
        .unwrap();
        let (bob, mut out) = bob_in(&engine, &rooms, &room).await;
        let EngineCommand::SubscribeOffering { tracks, reply, .. } =
            next_command(&mut commands).await
        else {
            panic!("expected a subscribe session to be asked for")
        };
        assert_eq!(tracks.len(), 2);
        reply
            .send(Ok(SubscribeOffer {
                session: 7,
                offer: "v=0 offer".into(),
                tracks: BTreeMap::from([("0".to_owned(), TrackId("tkept".into()))]),
            }))
            .unwrap();
        let seen = outputs_until(&mut out, |m| {
            matches!(m, ServerMessage::SubscribeOffer { .. })
        })
        .await;
        assert!(
            !seen
                .iter()
                .any(|m| matches!(m, ServerMessage::Error { .. })),
            "{seen:?}"
        );
        bob.cast(ParticipantMsg::Text(
            r#"{"type":"unsubscribe","track":"tgone"}"#.into(),
        ))
        .unwrap();
        assert!(matches!(
            next_output(&mut out).await,
            ServerMessage::Error {
                code: ErrorCode::UnknownTrack,
                ..
            }
        ));
    }

    /// Every track gone before the engine could offer them (the race after a drain): no error
    /// for the client, no session, and the next track gets a subscribe session of its own.
    #[tokio::test]
    async fn tracks_gone_before_the_first_offer_are_no_error() {
        let (engine, mut commands) = EngineHandle::new();
        let rooms = RoomDirectory::new();
        let room = RoomName::parse("gone").unwrap();
        let ada = ada_in(&rooms, &room).await;
        let (_bob, mut out) = bob_in(&engine, &rooms, &room).await;
        assert!(matches!(
            next_output(&mut out).await,
            ServerMessage::Joined { .. }
        ));
        ada.cast(RoomMsg::Publish {
            tracks: vec![track("told")],
        })
        .unwrap();
        let EngineCommand::SubscribeOffering { reply, .. } = next_command(&mut commands).await
        else {
            panic!("expected a subscribe session to be asked for")
        };
        reply.send(Err(EdgeError::UnknownTrack)).unwrap();
        ada.cast(RoomMsg::Unpublish {
            tracks: vec![TrackId("told".into())],
        })
        .unwrap();
        let seen = outputs_until(&mut out, |m| {
            matches!(m, ServerMessage::TrackUnpublished { .. })
        })
        .await;
        assert!(
            !seen
                .iter()
                .any(|m| matches!(m, ServerMessage::Error { .. })),
            "{seen:?}"
        );

        ada.cast(RoomMsg::Publish {
            tracks: vec![track("tnew")],
        })
        .unwrap();
        let EngineCommand::SubscribeOffering { tracks, reply, .. } =
            next_command(&mut commands).await
        else {
            panic!("expected a new subscribe session, not an update of none")
        };
        assert_eq!(tracks.len(), 1);
        assert_eq!(tracks[0].id, TrackId("tnew".into()));
        reply
            .send(Ok(SubscribeOffer {
                session: 9,
                offer: "v=0 offer".into(),
                tracks: BTreeMap::from([("0".to_owned(), TrackId("tnew".into()))]),
            }))
            .unwrap();
        outputs_until(&mut out, |m| {
            matches!(m, ServerMessage::SubscribeOffer { .. })
        })
        .await;
    }
}
