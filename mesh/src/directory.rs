//! `RoomDirectory`: the node's index of live `Room` actors by name. It opens a room on first
//! join and forgets it when the room closes itself; it also keeps per-room member and track
//! counts for the admin API and metrics without a round trip to every actor.

use crate::action_log::ActionLog;
use crate::federation::{LocalRoomEvent, MeshSink, RemoteRoomEvent};
use crate::roles::JoinAccess;
use crate::room::{JoinRefused, MemberSink, RoomActor, RoomArgs, RoomMsg, RoomSnapshot};
use crate::room_guard::RoomGuard;
use kaskade_proto::RoomName;
use kaskade_proto::signal::ParticipantInfo;
use ractor::{Actor, ActorId, ActorRef};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Why a room operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("room actor could not be started: {0}")]
    Spawn(String),
    #[error("room actor did not answer: {0}")]
    Unavailable(String),
    /// The room refused the join (locked, …); the message is for the client.
    #[error("{}", .0.message)]
    Refused(JoinRefused),
}

/// Counts kept for listing rooms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomCounts {
    pub members: usize,
    pub tracks: usize,
}

struct Entry {
    actor: ActorRef<RoomMsg>,
    counts: RoomCounts,
}

#[derive(Default)]
pub struct RoomDirectory {
    rooms: Mutex<BTreeMap<RoomName, Entry>>,
    mesh: MeshSink,
    /// Where rooms report applied moderation (set once by the node).
    action_log: OnceLock<Arc<dyn ActionLog>>,
    /// Where rooms send bans (set once by the node).
    guard: OnceLock<Arc<dyn RoomGuard>>,
}

impl RoomDirectory {
    /// A directory for a node on its own.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A directory whose rooms report their local changes to the mesh.
    pub fn with_mesh(mesh: MeshSink) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::default(),
            mesh,
            action_log: OnceLock::new(),
            guard: OnceLock::new(),
        })
    }

    /// Makes rooms opened from now on send bans to `guard`; only the first call counts.
    pub fn set_guard(&self, guard: Arc<dyn RoomGuard>) {
        let _ = self.guard.set(guard);
    }

    /// Makes rooms opened from now on report applied moderation to `log`; only the first
    /// call counts.
    pub fn set_action_log(&self, log: Arc<dyn ActionLog>) {
        let _ = self.action_log.set(log);
    }

    /// Hands what another node's members did to the room, if it is open here.
    pub fn remote(&self, name: &RoomName, node: &str, event: RemoteRoomEvent) {
        if let Some(actor) = self.get(name) {
            let _ = actor.cast(RoomMsg::Remote {
                node: node.to_owned(),
                event,
            });
        }
    }

    /// Names of the rooms open on this node.
    pub fn names(&self) -> Vec<RoomName> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RoomName, Entry>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live room actor, if the room is open.
    pub fn get(&self, name: &RoomName) -> Option<ActorRef<RoomMsg>> {
        self.lock().get(name).map(|e| e.actor.clone())
    }

    /// Every open room with its counts.
    pub fn list(&self) -> Vec<(RoomName, RoomCounts)> {
        self.lock()
            .iter()
            .map(|(n, e)| (n.clone(), e.counts))
            .collect()
    }

    /// Members and tracks of `name` on this node (0 if it is not open here).
    pub fn counts(&self, name: &RoomName) -> RoomCounts {
        self.lock().get(name).map(|e| e.counts).unwrap_or_default()
    }

    pub(crate) fn set_counts(&self, name: &RoomName, members: usize, tracks: usize) {
        if let Some(e) = self.lock().get_mut(name) {
            e.counts = RoomCounts { members, tracks };
        }
    }

    pub(crate) fn remove(&self, name: &RoomName, actor: ActorId) {
        let mut rooms = self.lock();
        if rooms.get(name).is_some_and(|e| e.actor.get_id() == actor) {
            rooms.remove(name);
        }
    }

    async fn open(self: &Arc<Self>, name: &RoomName) -> Result<ActorRef<RoomMsg>, RoomError> {
        if let Some(actor) = self.get(name) {
            return Ok(actor);
        }
        let (actor, _) = Actor::spawn(
            None,
            RoomActor,
            RoomArgs {
                name: name.clone(),
                directory: self.clone(),
                mesh: self.mesh.clone(),
                action_log: self.action_log.get().cloned(),
                guard: self.guard.get().cloned(),
            },
        )
        .await
        .map_err(|e| RoomError::Spawn(e.to_string()))?;
        let mut rooms = self.lock();
        if let Some(existing) = rooms.get(name) {
            // Someone else opened it meanwhile: use theirs.
            actor.stop(None);
            return Ok(existing.actor.clone());
        }
        rooms.insert(
            name.clone(),
            Entry {
                actor: actor.clone(),
                counts: RoomCounts::default(),
            },
        );
        drop(rooms);
        // Only now: what the mesh answers must find the room in the directory.
        self.mesh.send(name, LocalRoomEvent::Opened);
        Ok(actor)
    }

    /// Joins `name`, opening the room if needed; retries once if the room closed meanwhile.
    pub async fn join(
        self: &Arc<Self>,
        name: &RoomName,
        info: ParticipantInfo,
        sink: Option<MemberSink>,
        hidden: bool,
        role: JoinAccess,
    ) -> Result<(ActorRef<RoomMsg>, RoomSnapshot), RoomError> {
        let mut last_error = String::new();
        for _ in 0..2 {
            let actor = self.open(name).await?;
            let result = ractor::call!(actor, |reply| RoomMsg::Join {
                info: info.clone(),
                sink: sink.clone(),
                hidden,
                role: role.clone(),
                reply
            });
            match result {
                Ok(Ok(snapshot)) => return Ok((actor, snapshot)),
                Ok(Err(refused)) => return Err(RoomError::Refused(refused)),
                Err(e) => {
                    last_error = e.to_string();
                    self.remove(name, actor.get_id());
                }
            }
        }
        Err(RoomError::Unavailable(last_error))
    }

    /// This node's listed members of the room and their tracks, if the room is open here.
    pub async fn local_share(&self, name: &RoomName) -> Option<RoomSnapshot> {
        let actor = self.get(name)?;
        ractor::call!(actor, RoomMsg::LocalShare).ok()
    }

    /// The room's current members and tracks, if it is open.
    pub async fn snapshot(&self, name: &RoomName) -> Option<RoomSnapshot> {
        let actor = self.get(name)?;
        ractor::call!(actor, RoomMsg::Snapshot).ok()
    }
}
