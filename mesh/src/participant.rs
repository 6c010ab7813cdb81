//! The `Participant` actor: one per signalling session (WebSocket). It owns the participant's
//! signalling state — its room, its publish and subscribe peer sessions in the media engine, what
//! it has published and subscribed to — and turns client messages, room events and engine events
//! into each other, one message at a time. The socket itself stays with the transport, which
//! feeds frames in as [`ParticipantMsg::Text`] and writes out what arrives on the output channel.

use crate::admission::{Admission, JoinGate};
use crate::directory::RoomDirectory;
use crate::engine_api::{
    EdgeEvent, EngineCommand, EngineHandle, EventSink, SessionKey, TrackDescriptor,
};
use crate::room::{MemberSink, RoomMsg};
use kaskade_proto::signal::{
    ClientMessage, ErrorCode, LayerChoice, ParticipantInfo, PeerRole, ServerMessage, TrackInfo,
    TrackSource,
};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

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
    publish: Option<SessionKey>,
    subscribe: Option<SessionKey>,
    /// Every track in the room, as the room announced it.
    directory: BTreeMap<TrackId, TrackInfo>,
    subscribed: BTreeSet<TrackId>,
    published: BTreeSet<TrackId>,
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
            publish: None,
            subscribe: None,
            directory: BTreeMap::new(),
            subscribed: BTreeSet::new(),
            published: BTreeSet::new(),
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
        } = message
        {
            return self
                .join(room, name, auto_subscribe, resume, site.as_deref())
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
            ClientMessage::PublishOffer { sdp, sources } => self.publish(sdp, sources).await,
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
                if let Err(e) = result {
                    self.fail(ErrorCode::InvalidSdp, e.to_string());
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

    fn room_cast(&self, message: RoomMsg) {
        if let Some(j) = &self.joined {
            let _ = j.actor.cast(message);
        }
    }

    /// Admits, redirects or refuses a join; true when the session is over (redirected).
    async fn join(
        &mut self,
        room: RoomName,
        name: String,
        auto_subscribe: bool,
        resume: Option<String>,
        site: Option<&str>,
    ) -> bool {
        if self.joined.is_some() {
            self.fail(ErrorCode::AlreadyJoined, "already in a room");
            return false;
        }
        let mut name = name.trim().to_owned();
        if let Some(token) = &resume {
            match self.gate.verify_resume(&room, token) {
                Ok(claim) => {
                    info!(room = %room, participant = %claim.participant, "resuming participant");
                    self.participant = claim.participant;
                    name = claim.name;
                }
                Err(reason) => {
                    self.fail(
                        ErrorCode::ResumeRejected,
                        format!("resume refused: {reason}"),
                    );
                    return false;
                }
            }
        }
        match self.gate.admit(&room, site, resume.is_some()).await {
            Admission::Here => {}
            Admission::Redirect { url } => {
                info!(room = %room, participant = %self.participant, to = %url, "join redirected");
                self.send(ServerMessage::Redirect { url });
                let _ = self.output.send(ParticipantOutput::Close {
                    code: CLOSE_NORMAL,
                    reason: "redirected".into(),
                });
                return true;
            }
            Admission::Refused { code, message } => {
                warn!(room = %room, participant = %self.participant, reason = %message, "join refused");
                self.fail(code, message);
                return false;
            }
        }
        let info = ParticipantInfo {
            id: self.participant.clone(),
            name,
        };
        match self
            .rooms
            .join(&room, info.clone(), Some(self.member_sink()), false)
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
                let resume_token = self.gate.issue_resume(&room, &self.participant, &info.name);
                self.send(ServerMessage::Joined {
                    participant: self.participant.clone(),
                    room,
                    participants: snapshot.participants,
                    tracks: snapshot.tracks.clone(),
                    resume_token,
                    alternates: self.gate.alternates(),
                });
                if auto_subscribe {
                    let all = snapshot.tracks.into_iter().map(|t| t.id).collect();
                    self.subscribe_to(all).await;
                }
            }
            Err(e) => {
                warn!(room = %room, error = %e, "join failed");
                self.fail(ErrorCode::Internal, e.to_string());
            }
        }
        false
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
                self.fail(ErrorCode::InvalidSdp, e.to_string());
                return;
            }
        };
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
        for t in &wanted {
            self.subscribed.insert(t.id.clone());
        }
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
                match result {
                    Ok(offer) => {
                        self.subscribe = Some(offer.session);
                        self.send(ServerMessage::SubscribeOffer {
                            sdp: offer.offer,
                            tracks: offer.tracks,
                        });
                    }
                    Err(e) => self.fail(ErrorCode::Internal, e.to_string()),
                }
            }
        }
    }

    fn set_layer(&mut self, track: TrackId, layer: LayerChoice) {
        if let Some(session) = self.subscribe {
            let layer = match layer {
                LayerChoice::Low => 0,
                LayerChoice::Medium => 1,
                LayerChoice::High => 2,
            };
            let _ = self.engine.send(EngineCommand::SetLayer {
                session,
                track,
                layer,
            });
        }
    }

    async fn on_room_event(&mut self, event: ServerMessage) {
        match &event {
            ServerMessage::TrackPublished { track } => {
                self.directory.insert(track.id.clone(), track.clone());
                let auto = self.joined.as_ref().is_some_and(|j| j.auto_subscribe);
                let id = track.id.clone();
                self.send(event);
                if auto {
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
            ServerMessage::Error { fatal: true, .. } => {
                // The room handed this participant to a newer session (it resumed elsewhere).
                self.send(event);
                let _ = self.output.send(ParticipantOutput::Close {
                    code: CLOSE_NORMAL,
                    reason: "resumed in another session".into(),
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
