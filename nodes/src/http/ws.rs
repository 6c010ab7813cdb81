//! `/ws`: one signalling session per WebSocket. It owns the participant's signalling state — its
//! room, its publish and subscribe peer sessions in the engine, what it is subscribed to — and
//! turns client messages, room events and engine events into each other, one at a time.

use super::AppState;
use super::state::new_participant_id;
use crate::edge::{EdgeEvent, EngineCommand, SessionKey, TrackDescriptor};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use kaskade_mesh::RoomMsg;
use kaskade_proto::signal::{
    ClientMessage, ErrorCode, LayerChoice, MAX_SIGNAL_MESSAGE_BYTES, ParticipantInfo, PeerRole,
    ServerMessage, TrackInfo,
};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use ractor::ActorRef;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Frames up to this size are read and then judged; larger ones end the connection outright.
const READ_LIMIT: usize = 1024 * 1024;

pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.max_message_size(READ_LIMIT)
        .max_frame_size(READ_LIMIT)
        .on_upgrade(move |socket| SignallingSession::new(state).run(socket))
}

struct Joined {
    room: RoomName,
    actor: ActorRef<RoomMsg>,
    auto_subscribe: bool,
}

struct SignallingSession {
    state: AppState,
    participant: ParticipantId,
    joined: Option<Joined>,
    publish: Option<SessionKey>,
    subscribe: Option<SessionKey>,
    /// Every track in the room, as the room announced it.
    directory: BTreeMap<TrackId, TrackInfo>,
    subscribed: BTreeSet<TrackId>,
    published: BTreeSet<TrackId>,
    room_tx: mpsc::UnboundedSender<ServerMessage>,
    room_rx: mpsc::UnboundedReceiver<ServerMessage>,
    edge_tx: mpsc::UnboundedSender<EdgeEvent>,
    edge_rx: mpsc::UnboundedReceiver<EdgeEvent>,
    outbox: Vec<ServerMessage>,
}

enum Step {
    Continue,
    Close(Option<CloseFrame>),
}

impl SignallingSession {
    fn new(state: AppState) -> Self {
        let (room_tx, room_rx) = mpsc::unbounded_channel();
        let (edge_tx, edge_rx) = mpsc::unbounded_channel();
        Self {
            state,
            participant: new_participant_id(),
            joined: None,
            publish: None,
            subscribe: None,
            directory: BTreeMap::new(),
            subscribed: BTreeSet::new(),
            published: BTreeSet::new(),
            room_tx,
            room_rx,
            edge_tx,
            edge_rx,
            outbox: Vec::new(),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        debug!(participant = %self.participant, "signalling connected");
        loop {
            let step = tokio::select! {
                frame = socket.recv() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => {
                        self.outbox.push(ServerMessage::error(
                            ErrorCode::BinaryNotSupported,
                            "signalling uses JSON text frames",
                        ));
                        Step::Continue
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Step::Continue,
                    Some(Ok(Message::Close(_))) | None => Step::Close(None),
                    Some(Err(e)) => {
                        debug!(participant = %self.participant, error = %e, "websocket error");
                        Step::Close(None)
                    }
                },
                Some(event) = self.room_rx.recv() => { self.on_room_event(event).await; Step::Continue }
                Some(event) = self.edge_rx.recv() => { self.on_edge_event(event); Step::Continue }
            };
            for message in self.outbox.drain(..) {
                if socket
                    .send(Message::Text(message.encode().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if let Step::Close(frame) = step {
                if let Some(frame) = frame {
                    let _ = socket.send(Message::Close(Some(frame))).await;
                }
                break;
            }
        }
        self.leave();
    }

    async fn on_text(&mut self, text: &str) -> Step {
        if text.len() > MAX_SIGNAL_MESSAGE_BYTES {
            return Step::Close(Some(CloseFrame {
                code: close_code::SIZE,
                reason: "message larger than 64 KiB".into(),
            }));
        }
        let message = match ClientMessage::decode(text) {
            Ok(m) => m,
            Err(e) => {
                self.outbox
                    .push(ServerMessage::error(e.code(), e.to_string()));
                return Step::Continue;
            }
        };
        if let ClientMessage::Join {
            room,
            name,
            auto_subscribe,
        } = message
        {
            self.join(room, name, auto_subscribe).await;
            return Step::Continue;
        }
        if self.joined.is_none() {
            self.outbox.push(ServerMessage::error(
                ErrorCode::NotJoined,
                "send join first",
            ));
            return Step::Continue;
        }
        match message {
            ClientMessage::Join { .. } => {}
            ClientMessage::PublishOffer { sdp, sources } => self.publish(sdp, sources).await,
            ClientMessage::SubscribeAnswer { sdp } => {
                let Some(session) = self.subscribe else {
                    self.fail(ErrorCode::BadRequest, "no subscribe offer is outstanding");
                    return Step::Continue;
                };
                let result = self
                    .state
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
                    let _ = self.state.engine.send(EngineCommand::RemoteCandidate {
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
                        let _ = self.state.engine.send(EngineCommand::UpdateSubscription {
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
                return Step::Close(Some(CloseFrame {
                    code: close_code::NORMAL,
                    reason: "left".into(),
                }));
            }
        }
        Step::Continue
    }

    fn fail(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.outbox.push(ServerMessage::error(code, message));
    }

    fn room_cast(&self, message: RoomMsg) {
        if let Some(j) = &self.joined {
            let _ = j.actor.cast(message);
        }
    }

    async fn join(&mut self, room: RoomName, name: String, auto_subscribe: bool) {
        if self.joined.is_some() {
            self.fail(ErrorCode::AlreadyJoined, "already in a room");
            return;
        }
        let info = ParticipantInfo {
            id: self.participant.clone(),
            name: name.trim().to_owned(),
        };
        match self
            .state
            .rooms
            .join(&room, info, Some(self.room_tx.clone()), false)
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
                });
                self.outbox.push(ServerMessage::Joined {
                    participant: self.participant.clone(),
                    room,
                    participants: snapshot.participants,
                    tracks: snapshot.tracks.clone(),
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
    }

    async fn publish(
        &mut self,
        sdp: String,
        sources: BTreeMap<String, kaskade_proto::signal::TrackSource>,
    ) {
        let result = self
            .state
            .engine
            .request(|reply| EngineCommand::Publish {
                session: self.publish,
                participant: self.participant.clone(),
                offer: sdp,
                sources,
                events: self.edge_tx.clone(),
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
        self.outbox.push(ServerMessage::PublishAnswer {
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
                let _ = self.state.engine.send(EngineCommand::UpdateSubscription {
                    session,
                    add: wanted,
                    remove: vec![],
                });
            }
            None => {
                let result = self
                    .state
                    .engine
                    .request(|reply| EngineCommand::SubscribeOffering {
                        participant: self.participant.clone(),
                        tracks: wanted,
                        events: self.edge_tx.clone(),
                        reply,
                    })
                    .await;
                match result {
                    Ok(offer) => {
                        self.subscribe = Some(offer.session);
                        self.outbox.push(ServerMessage::SubscribeOffer {
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
            let _ = self.state.engine.send(EngineCommand::SetLayer {
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
                self.outbox.push(event);
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
                    let _ = self.state.engine.send(EngineCommand::UpdateSubscription {
                        session,
                        add: vec![],
                        remove: vec![track.clone()],
                    });
                }
            }
            _ => {}
        }
        self.outbox.push(event);
    }

    fn on_edge_event(&mut self, event: EdgeEvent) {
        match event {
            EdgeEvent::Connected { .. } => {}
            EdgeEvent::SubscribeOffer { offer, tracks, .. } => {
                self.outbox
                    .push(ServerMessage::SubscribeOffer { sdp: offer, tracks });
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

    fn leave(&mut self) {
        for session in [self.publish.take(), self.subscribe.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.state.engine.send(EngineCommand::Close { session });
        }
        if let Some(j) = self.joined.take() {
            info!(room = %j.room, participant = %self.participant, "signalling participant left");
            let _ = j.actor.cast(RoomMsg::Leave {
                participant: self.participant.clone(),
            });
        }
    }
}
