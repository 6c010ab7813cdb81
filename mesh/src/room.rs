//! The `Room` actor: one per room on a node. It owns the room's membership and track directory,
//! and tells every member what changes (joins, leaves, tracks published and unpublished, mutes,
//! chat) through the member's own event sink. In a mesh, it also holds what other nodes' members
//! of the room are and publish (merged from [`RemoteRoomEvent`]s) and reports its own local changes
//! to the [`MeshSink`]. The actor lives while the room has local members. It never sees media.

use crate::directory::RoomDirectory;
use crate::federation::{LocalRoomEvent, MeshSink, RemoteRoomEvent};
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
    /// The joining member's epoch (0 when the snapshot was only asked for): a `Leave` carrying
    /// it removes that session only, not a later session that resumed the same participant.
    pub epoch: u64,
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
    Snapshot(RpcReplyPort<RoomSnapshot>),
    /// Ask this node's signalling members to reconnect to `url` (maintenance drain).
    Reconnect {
        url: String,
        reason: String,
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
}

pub struct RoomState {
    name: RoomName,
    directory: Arc<RoomDirectory>,
    mesh: MeshSink,
    members: BTreeMap<ParticipantId, Member>,
    /// In publication order, so "the room's first publisher" means what it says.
    tracks: Vec<TrackInfo>,
    next_epoch: u64,
}

impl RoomState {
    fn snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            name: self.name.clone(),
            epoch: 0,
            participants: self
                .members
                .values()
                .filter(|m| !m.hidden)
                .map(|m| m.info.clone())
                .collect(),
            tracks: self.tracks.clone(),
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

    /// Drops the tracks a member published from where it was before it resumed elsewhere (its
    /// client republishes them), telling local members; local tracks are withdrawn from the mesh
    /// too. The member itself stays: others see a resumed participant, not a leave and a join.
    fn drop_tracks_for_takeover(&mut self, participant: &ParticipantId) {
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
            self.drop_tracks_for_takeover(&info.id);
            if let Some(m) = self.members.get_mut(&info.id) {
                if let Some(sink) = m.sink.take() {
                    tell_taken_over(&sink);
                }
                m.node = Some(node.to_owned());
                m.info = info;
            }
            return;
        }
        self.broadcast(
            &ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
            None,
        );
        self.members.insert(
            info.id.clone(),
            Member {
                info,
                sink: None,
                hidden: false,
                node: Some(node.to_owned()),
                epoch: 0,
            },
        );
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
            self.broadcast(
                &ServerMessage::ParticipantLeft {
                    participant: participant.clone(),
                },
                None,
            );
        }
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
            RemoteRoomEvent::NodeGone => {
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
            mesh: args.mesh,
            members: BTreeMap::new(),
            tracks: Vec::new(),
            next_epoch: 1,
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
                // A participant coming back (resume) takes over its old session, here or on
                // another node: its old tracks go, its membership stays.
                let resumed = state.members.contains_key(&info.id);
                if resumed {
                    state.drop_tracks_for_takeover(&info.id);
                    info!(room = %state.name, participant = %info.id, "participant resumed");
                }
                let mut snapshot = state.snapshot();
                snapshot.participants.retain(|p| p.id != info.id);
                if !hidden {
                    if !resumed {
                        state.broadcast(
                            &ServerMessage::ParticipantJoined {
                                participant: info.clone(),
                            },
                            None,
                        );
                    }
                    state
                        .mesh
                        .send(&state.name, LocalRoomEvent::Joined(info.clone()));
                }
                info!(room = %state.name, participant = %info.id, "participant joined");
                let epoch = state.next_epoch;
                state.next_epoch += 1;
                snapshot.epoch = epoch;
                let old = state.members.insert(
                    info.id.clone(),
                    Member {
                        info,
                        sink,
                        hidden,
                        node: None,
                        epoch,
                    },
                );
                if let Some(sink) = old.and_then(|m| m.sink) {
                    tell_taken_over(&sink);
                }
                state.update_counts();
                let _ = reply.send(snapshot);
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
                if state.local_members() == 0 {
                    state.directory.remove(&state.name, myself.get_id());
                    info!(room = %state.name, "room closed");
                    myself.stop(None);
                }
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
                    let ts = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
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
            RoomMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
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
