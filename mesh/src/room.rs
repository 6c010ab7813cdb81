//! The `Room` actor: one per room on a node. It owns the room's membership and track directory,
//! and tells every member what changes (joins, leaves, tracks published and unpublished, mutes,
//! chat) through the member's own event sink. It never sees media.

use crate::directory::RoomDirectory;
use kaskade_proto::signal::{ParticipantInfo, ServerMessage, TrackInfo};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::info;

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
    pub participants: Vec<ParticipantInfo>,
    pub tracks: Vec<TrackInfo>,
}

pub enum RoomMsg {
    /// Enter the room. Hidden members (WHEP viewers) receive nothing and are not listed.
    Join {
        info: ParticipantInfo,
        sink: Option<MemberSink>,
        hidden: bool,
        reply: RpcReplyPort<RoomSnapshot>,
    },
    Leave {
        participant: ParticipantId,
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
    Snapshot(RpcReplyPort<RoomSnapshot>),
}

struct Member {
    info: ParticipantInfo,
    sink: Option<MemberSink>,
    hidden: bool,
}

pub struct RoomState {
    name: RoomName,
    directory: Arc<RoomDirectory>,
    members: BTreeMap<ParticipantId, Member>,
    /// In publication order, so "the room's first publisher" means what it says.
    tracks: Vec<TrackInfo>,
}

impl RoomState {
    fn snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            name: self.name.clone(),
            participants: self
                .members
                .values()
                .filter(|m| !m.hidden)
                .map(|m| m.info.clone())
                .collect(),
            tracks: self.tracks.clone(),
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

pub struct RoomActor;

pub struct RoomArgs {
    pub name: RoomName,
    pub directory: Arc<RoomDirectory>,
}

impl Actor for RoomActor {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: RoomArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        info!(room = %args.name, "room opened");
        Ok(RoomState {
            name: args.name,
            directory: args.directory,
            members: BTreeMap::new(),
            tracks: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RoomMsg::Join {
                info,
                sink,
                hidden,
                reply,
            } => {
                let snapshot = state.snapshot();
                if !hidden {
                    state.broadcast(
                        &ServerMessage::ParticipantJoined {
                            participant: info.clone(),
                        },
                        None,
                    );
                }
                info!(room = %state.name, participant = %info.id, "participant joined");
                state
                    .members
                    .insert(info.id.clone(), Member { info, sink, hidden });
                state
                    .directory
                    .set_counts(&state.name, state.members.len(), state.tracks.len());
                let _ = reply.send(snapshot);
            }
            RoomMsg::Leave { participant } => {
                let Some(member) = state.members.remove(&participant) else {
                    return Ok(());
                };
                let (gone, kept) = std::mem::take(&mut state.tracks)
                    .into_iter()
                    .partition(|t| t.participant == participant);
                state.tracks = kept;
                for track in gone {
                    let message = ServerMessage::TrackUnpublished { track: track.id };
                    state.broadcast(&message, None);
                }
                if !member.hidden {
                    state.broadcast(
                        &ServerMessage::ParticipantLeft {
                            participant: participant.clone(),
                        },
                        None,
                    );
                }
                info!(room = %state.name, participant = %participant, "participant left");
                state
                    .directory
                    .set_counts(&state.name, state.members.len(), state.tracks.len());
                if state.members.is_empty() {
                    state.directory.remove(&state.name, myself.get_id());
                    info!(room = %state.name, "room closed");
                    myself.stop(None);
                }
            }
            RoomMsg::Publish { tracks } => {
                for track in tracks {
                    if !state.members.contains_key(&track.participant) {
                        continue;
                    }
                    if state.tracks.iter().any(|t| t.id == track.id) {
                        continue;
                    }
                    state.tracks.push(track.clone());
                    state.broadcast(&ServerMessage::TrackPublished { track }, None);
                }
                state
                    .directory
                    .set_counts(&state.name, state.members.len(), state.tracks.len());
            }
            RoomMsg::Unpublish { tracks } => {
                for id in tracks {
                    let before = state.tracks.len();
                    state.tracks.retain(|t| t.id != id);
                    if state.tracks.len() != before {
                        state.broadcast(&ServerMessage::TrackUnpublished { track: id }, None);
                    }
                }
                state
                    .directory
                    .set_counts(&state.name, state.members.len(), state.tracks.len());
            }
            RoomMsg::SetMuted {
                participant,
                track,
                muted,
            } => {
                if let Some(t) = state.tracks.iter_mut().find(|t| t.id == track)
                    && t.participant == participant
                {
                    t.muted = muted;
                    state.broadcast(&ServerMessage::TrackMuted { track, muted }, None);
                }
            }
            RoomMsg::Chat { from, text } => {
                if let Some(member) = state.members.get(&from) {
                    let ts = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    let message = ServerMessage::Chat {
                        from: from.clone(),
                        name: member.info.name.clone(),
                        text,
                        ts,
                    };
                    state.broadcast(&message, None);
                }
            }
            RoomMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
        }
        Ok(())
    }
}
