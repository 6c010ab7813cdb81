//! The relay manager: one task that owns this node's view of the mesh. It keeps the links to
//! the other nodes (dialling the peers the control plane lists, accepting the others), tells
//! interested nodes what happens in the rooms hosted here, merges what they say into the local
//! room actors and the engine, and turns the engine's demand for remote tracks into
//! subscriptions — at the track's origin, or at the node of this site the origin redirects to
//! (`kaskade_mesh::core::cascade_route`). Everything arrives as one [`Input`] at a time, so the
//! state needs no locks.

use super::bridge::{EngineToRelay, LinkId, LinkTx, RelayEnginePorts, RelayToEngine};
use super::link::{self, LinkEvent};
use super::tls::MeshIdentity;
use crate::metrics::Metrics;
use kaskade_control::{ControlPlane, NodeView};
use kaskade_mesh::RoomDirectory;
use kaskade_mesh::core::ReconnectBackoff;
use kaskade_mesh::core::cascade_route::{
    ServedPeer, SubscribeDecision, decide_subscribe, upstream_for,
};
use kaskade_mesh::federation::{LocalRoomEvent, MeshSink, RemoteRoomEvent};
use kaskade_proto::relay::{LayerSet, RelayMessage, RelayTrack};
use kaskade_proto::signal::{ParticipantInfo, RoomSettings, TrackInfo};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How long a peer's part of a room survives its link going down (a reconnect within this
/// window changes nothing for clients).
pub const LINK_GRACE: Duration = Duration::from_secs(10);
/// How long a WHEP request waits for the mesh to describe a room.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a subscription redirected to an unreachable node waits before it asks the origin
/// again (the origin has not noticed that node's death yet).
pub const REDIRECT_RETRY: Duration = Duration::from_millis(100);

/// Everything the manager reacts to.
enum Input {
    Link(LinkEvent),
    Room(RoomName, LocalRoomEvent),
    Engine(EngineToRelay),
    FetchRoom {
        room: RoomName,
        reply: oneshot::Sender<()>,
    },
    FetchTimeout(u64),
    GraceExpired(String),
    /// The control plane's view of the live nodes changed.
    Nodes(NodeView),
    /// Try a subscription again (after a redirect to a node this one has no link to).
    Resubscribe(TrackId),
}

/// Cheap clonable handle for the rest of the node.
#[derive(Clone)]
pub struct RelayHandle {
    tx: mpsc::UnboundedSender<Input>,
}

impl RelayHandle {
    /// Where room actors report local changes.
    pub fn mesh_sink(&self) -> MeshSink {
        let tx = self.tx.clone();
        MeshSink::new(move |room, event| {
            let _ = tx.send(Input::Room(room.clone(), event));
        })
    }

    /// Asks every connected node for its part of `room` and waits (at most [`FETCH_TIMEOUT`])
    /// until all have answered and the answers are in the room actor.
    pub async fn fetch_room(&self, room: &RoomName) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Input::FetchRoom {
                room: room.clone(),
                reply,
            })
            .is_ok()
        {
            let _ = tokio::time::timeout(FETCH_TIMEOUT * 2, rx).await;
        }
    }
}

/// The relay's configuration.
pub struct RelaySettings {
    pub node: String,
    pub site: String,
    pub bind: SocketAddr,
    pub identity: MeshIdentity,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayStartError {
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    #[error("binding the relay endpoint: {0}")]
    Bind(#[from] std::io::Error),
}

/// A handle whose manager has not started yet (rooms need the handle before the manager needs
/// the rooms).
pub struct PendingRelay {
    handle: RelayHandle,
    rx: mpsc::UnboundedReceiver<Input>,
}

pub fn prepare() -> PendingRelay {
    let (tx, rx) = mpsc::unbounded_channel();
    PendingRelay {
        handle: RelayHandle { tx },
        rx,
    }
}

impl PendingRelay {
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// Binds the relay endpoint and starts the manager, the acceptor and the dialers. Returns
    /// the bound address.
    pub fn start<C: ControlPlane + 'static>(
        self,
        settings: RelaySettings,
        control: Arc<C>,
        metrics: Arc<Metrics>,
        engine: RelayEnginePorts,
        mut demand: mpsc::UnboundedReceiver<EngineToRelay>,
        rooms: Arc<RoomDirectory>,
    ) -> Result<SocketAddr, RelayStartError> {
        let server = settings.identity.server_config()?;
        let client = settings.identity.client_config()?;
        let endpoint = quinn::Endpoint::server(server, settings.bind)?;
        let local = endpoint.local_addr()?;
        let (link_tx, mut link_rx) = mpsc::unbounded_channel::<LinkEvent>();
        let tx = self.handle.tx.clone();
        // Fan the link and engine streams into the manager's one input queue.
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = link_rx.recv().await {
                    if tx.send(Input::Link(e)).is_err() {
                        break;
                    }
                }
            });
        }
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = demand.recv().await {
                    if tx.send(Input::Engine(e)).is_err() {
                        break;
                    }
                }
            });
        }
        let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
        spawn_acceptor(
            endpoint.clone(),
            settings.node.clone(),
            settings.site.clone(),
            metrics.clone(),
            link_tx.clone(),
            engine.media.clone(),
            ids.clone(),
        );
        spawn_dialers(
            endpoint,
            client,
            settings.node.clone(),
            settings.site.clone(),
            control,
            metrics.clone(),
            link_tx,
            engine.media.clone(),
            ids,
            tx.clone(),
        );
        let manager = Manager {
            node: settings.node,
            site: settings.site,
            tx,
            engine,
            rooms,
            links: HashMap::new(),
            local: HashMap::new(),
            interest: HashMap::new(),
            remote_tracks: HashMap::new(),
            wanted: HashMap::new(),
            channels: HashMap::new(),
            next_channel: 1,
            serving: HashMap::new(),
            fetches: HashMap::new(),
            next_fetch: 1,
            nodes: NodeView::default(),
            metrics,
        };
        tokio::spawn(manager.run(self.rx));
        Ok(local)
    }
}

fn spawn_acceptor(
    endpoint: quinn::Endpoint,
    node: String,
    site: String,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<LinkEvent>,
    media: mpsc::Sender<super::bridge::RelayPacketIn>,
    ids: Arc<std::sync::atomic::AtomicU64>,
) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let (node, site, metrics, events, media, ids) = (
                node.clone(),
                site.clone(),
                metrics.clone(),
                events.clone(),
                media.clone(),
                ids.clone(),
            );
            tokio::spawn(async move {
                match link::accept(incoming, &node, &site).await {
                    Ok((conn, hs)) => {
                        let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        link::run(id, conn, hs, metrics, events, media).await;
                    }
                    Err(e) => {
                        // The remote address is personal data only for clients; relay peers
                        // are servers, but it is still left out: the error names the cause.
                        warn!(error = %e, "relay connection refused");
                        let reason = match e {
                            link::LinkError::WrongIdentity(_) => "wrong_identity",
                            link::LinkError::Connect(_) => "tls",
                            link::LinkError::Frame(_) => "malformed_frame",
                            _ => "handshake",
                        };
                        metrics.relay.refuse(reason);
                    }
                }
            });
        }
    });
}

/// Dials every peer whose id sorts after ours (the other side dials us), as the control plane's
/// live-node view lists them — a watch, so a node that registers is dialled at once. A dialler
/// reconnects with backoff while its peer is listed and stops once a reachable view no longer
/// lists it (its lease expired: it is dead or gone). The view also goes to the manager.
#[allow(clippy::too_many_arguments)]
fn spawn_dialers<C: ControlPlane + 'static>(
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    node: String,
    site: String,
    control: Arc<C>,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<LinkEvent>,
    media: mpsc::Sender<super::bridge::RelayPacketIn>,
    ids: Arc<std::sync::atomic::AtomicU64>,
    manager: mpsc::UnboundedSender<Input>,
) {
    let mut view = control.watch_nodes();
    tokio::spawn(async move {
        // Peer id -> the relay address its dialler uses.
        let dialing: Arc<std::sync::Mutex<HashMap<String, SocketAddr>>> = Arc::default();
        loop {
            let current = view.borrow_and_update().clone();
            if manager.send(Input::Nodes(current.clone())).is_err() {
                break;
            }
            for peer in current.nodes.values() {
                if peer.id <= node {
                    continue;
                }
                let Ok(addr) = peer.relay_addr.parse::<SocketAddr>() else {
                    continue;
                };
                {
                    let mut d = dialing.lock().unwrap_or_else(|e| e.into_inner());
                    if d.get(&peer.id) == Some(&addr) {
                        continue;
                    }
                    d.insert(peer.id.clone(), addr);
                }
                let peer_id = peer.id.clone();
                let (endpoint, client, node, site, metrics, events, media, ids, dialing, view) = (
                    endpoint.clone(),
                    client.clone(),
                    node.clone(),
                    site.clone(),
                    metrics.clone(),
                    events.clone(),
                    media.clone(),
                    ids.clone(),
                    dialing.clone(),
                    view.clone(),
                );
                tokio::spawn(async move {
                    let mut backoff = ReconnectBackoff::default();
                    loop {
                        match link::dial(&endpoint, client.clone(), addr, &peer_id, &node, &site)
                            .await
                        {
                            Ok((conn, hs)) => {
                                let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let started = tokio::time::Instant::now();
                                link::run(
                                    id,
                                    conn,
                                    hs,
                                    metrics.clone(),
                                    events.clone(),
                                    media.clone(),
                                )
                                .await;
                                if started.elapsed()
                                    >= kaskade_mesh::core::reconnect_backoff::DEFAULT_STABLE_AFTER
                                {
                                    backoff.reset();
                                }
                            }
                            Err(e) => {
                                debug!(peer = %peer_id, error = %e, "relay dial failed");
                            }
                        }
                        if events.is_closed() {
                            break;
                        }
                        tokio::time::sleep(backoff.next_delay(rand::random())).await;
                        let (gone, moved) = {
                            let v = view.borrow();
                            let listed = v.nodes.get(&peer_id);
                            (
                                v.reachable && listed.is_none(),
                                listed.is_some_and(|n| n.relay_addr != addr.to_string()),
                            )
                        };
                        if gone || moved {
                            info!(peer = %peer_id, gone, moved, "relay dialler stops: peer left the registry or moved");
                            let mut d = dialing.lock().unwrap_or_else(|e| e.into_inner());
                            if d.get(&peer_id) == Some(&addr) {
                                d.remove(&peer_id);
                            }
                            break;
                        }
                    }
                });
            }
            if view.changed().await.is_err() {
                break;
            }
        }
    });
}

/// This node's own part of a room, as told to others.
#[derive(Default)]
struct LocalRoom {
    participants: BTreeMap<ParticipantId, ParticipantInfo>,
    tracks: Vec<RelayTrack>,
    /// The room's settings as last changed by a host here.
    settings: RoomSettings,
    /// Who waits in the room's lobby here.
    lobby: Vec<(ParticipantId, String)>,
}

/// A track published on another node, as announced by its origin.
struct RemoteTrackMeta {
    room: RoomName,
    origin: String,
    participant: ParticipantId,
}

/// A remote track someone here wants.
struct Wanted {
    layers: LayerSet,
    /// The node the origin redirected us to, if any.
    via: Option<String>,
    /// Our channel and the node it is open at.
    subscription: Option<(u32, String)>,
}

/// A track this node sends to a peer.
struct Serving {
    peer: String,
    peer_site: String,
    track: TrackId,
}

struct Fetch {
    room: RoomName,
    waiting: BTreeSet<String>,
    reply: oneshot::Sender<()>,
}

struct Manager {
    node: String,
    site: String,
    tx: mpsc::UnboundedSender<Input>,
    engine: RelayEnginePorts,
    rooms: Arc<RoomDirectory>,
    /// The current link to each peer.
    links: HashMap<String, Arc<LinkTx>>,
    local: HashMap<RoomName, LocalRoom>,
    /// Peers that have local members in a room (and so want to hear about it).
    interest: HashMap<RoomName, BTreeSet<String>>,
    remote_tracks: HashMap<TrackId, RemoteTrackMeta>,
    wanted: HashMap<TrackId, Wanted>,
    /// Our subscription channels.
    channels: HashMap<u32, TrackId>,
    next_channel: u32,
    serving: HashMap<(LinkId, u32), Serving>,
    fetches: HashMap<u64, Fetch>,
    next_fetch: u64,
    /// Failover events (peers lost, subscriptions re-routed) are counted here.
    metrics: Arc<Metrics>,
    /// The control plane's latest view of the live nodes.
    nodes: NodeView,
}

impl Manager {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        while let Some(input) = rx.recv().await {
            match input {
                Input::Link(LinkEvent::Up(link)) => self.on_link_up(link),
                Input::Link(LinkEvent::Down { link, peer }) => self.on_link_down(link, &peer),
                Input::Link(LinkEvent::Control { link, message }) => {
                    self.on_control(link, message).await
                }
                Input::Room(room, event) => self.on_room(room, event).await,
                Input::Engine(EngineToRelay::Demand { track, layers }) => {
                    self.on_demand(track, layers)
                }
                Input::Engine(EngineToRelay::UpstreamLost { track }) => {
                    if let Some(w) = self.wanted.get_mut(&track) {
                        if let Some((channel, at)) = w.subscription.take() {
                            self.channels.remove(&channel);
                            if w.via.as_deref() == Some(at.as_str()) {
                                w.via = None;
                            }
                        }
                        self.subscribe(&track);
                    }
                }
                Input::FetchRoom { room, reply } => self.on_fetch(room, reply),
                Input::FetchTimeout(id) => {
                    if let Some(f) = self.fetches.remove(&id) {
                        debug!(room = %f.room, waiting = ?f.waiting, "room fetch timed out");
                        let _ = f.reply.send(());
                    }
                }
                Input::GraceExpired(peer) => {
                    if !self.links.contains_key(&peer) {
                        self.forget_peer(&peer);
                    }
                }
                Input::Nodes(view) => self.on_nodes(view),
                Input::Resubscribe(track) => self.subscribe(&track),
            }
        }
    }

    fn to_engine(&self, command: RelayToEngine) {
        let _ = self.engine.commands.send(command);
    }

    fn link_by_id(&self, id: LinkId) -> Option<Arc<LinkTx>> {
        self.links.values().find(|l| l.id == id).cloned()
    }

    fn send_to(&self, peer: &str, message: RelayMessage) {
        if let Some(link) = self.links.get(peer) {
            link.send_control(message);
        }
    }

    fn send_interested(&self, room: &RoomName, message: RelayMessage) {
        if let Some(peers) = self.interest.get(room) {
            for peer in peers {
                self.send_to(peer, message.clone());
            }
        }
    }

    fn on_link_up(&mut self, link: Arc<LinkTx>) {
        let peer = link.peer.clone();
        if let Some(old) = self.links.insert(peer.clone(), link.clone()) {
            info!(peer = %peer, old = old.id, new = link.id, "relay link replaced");
        }
        for room in self.local.keys() {
            link.send_control(RelayMessage::RoomInterest {
                room: room.clone(),
                interested: true,
            });
        }
        // Subscriptions waiting for this peer (or for any link) start now.
        let waiting: Vec<TrackId> = self
            .wanted
            .iter()
            .filter(|(_, w)| w.subscription.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        for track in waiting {
            self.subscribe(&track);
        }
    }

    fn on_link_down(&mut self, link: LinkId, peer: &str) {
        self.to_engine(RelayToEngine::LinkDown { link });
        self.serving.retain(|(l, _), _| *l != link);
        if self.links.get(peer).is_some_and(|l| l.id == link) {
            self.links.remove(peer);
            for peers in self.interest.values_mut() {
                peers.remove(peer);
            }
            if self.registry_says_gone(peer) {
                self.forget_peer(peer);
            } else {
                let tx = self.tx.clone();
                let peer = peer.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep(LINK_GRACE).await;
                    let _ = tx.send(Input::GraceExpired(peer));
                });
            }
        }
        self.fetch_answered(peer, None);
    }

    /// True when a reachable control plane no longer lists `peer` (its lease expired or it
    /// deregistered): no grace period, it is not coming back as it was.
    fn registry_says_gone(&self, peer: &str) -> bool {
        self.nodes.reachable && !self.nodes.nodes.contains_key(peer)
    }

    /// A new view of the live nodes: peers that left it and have no link are forgotten now
    /// rather than after [`LINK_GRACE`] (their rooms' members and tracks go, subscriptions
    /// through them re-route).
    fn on_nodes(&mut self, view: NodeView) {
        let left: Vec<String> = if view.reachable {
            self.nodes
                .nodes
                .keys()
                .filter(|id| **id != self.node)
                .filter(|id| !view.nodes.contains_key(*id) && !self.links.contains_key(*id))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.nodes = view;
        for peer in left {
            info!(peer = %peer, "node left the registry");
            self.forget_peer(&peer);
        }
    }

    /// `peer` answered for `room` (or, with `None`, will not answer for any room): fetches that
    /// waited only for it are done.
    fn fetch_answered(&mut self, peer: &str, room: Option<&RoomName>) {
        let done: Vec<u64> = self
            .fetches
            .iter_mut()
            .filter(|(_, f)| room.is_none_or(|r| &f.room == r))
            .filter_map(|(id, f)| {
                f.waiting.remove(peer);
                f.waiting.is_empty().then_some(*id)
            })
            .collect();
        for id in done {
            if let Some(f) = self.fetches.remove(&id) {
                let _ = f.reply.send(());
            }
        }
    }

    /// Tells every linked node whether this node has local members in `room`.
    fn announce_interest(&self, room: &RoomName, interested: bool) {
        for link in self.links.values() {
            link.send_control(RelayMessage::RoomInterest {
                room: room.clone(),
                interested,
            });
        }
    }

    /// The peer stayed away past the grace period: its members and tracks leave the rooms.
    fn forget_peer(&mut self, peer: &str) {
        let peer_site = self.nodes.nodes.get(peer).map(|n| n.site.clone());
        let span = tracing::info_span!("failover.peer_gone", node = %self.node, site = %self.site,
            peer = %peer, peer_site = peer_site.as_deref(), rooms = self.local.len(),
            tracks = tracing::field::Empty)
        .entered();
        self.metrics
            .mesh
            .failover(crate::metrics::FailoverKind::PeerLost);
        if self.registry_says_gone(peer) {
            // A node that left the mesh (drained, removed) has no link to watch any more; one
            // still registered keeps its `link_up 0` for the link-down alert.
            self.metrics.relay.forget(peer);
        }
        info!(peer = %peer, "relay peer gone; removing its part of the rooms");
        for room in self.local.keys() {
            self.rooms.remote(room, peer, RemoteRoomEvent::NodeGone);
        }
        let gone: Vec<TrackId> = self
            .remote_tracks
            .iter()
            .filter(|(_, m)| m.origin == peer)
            .map(|(t, _)| t.clone())
            .collect();
        span.record("tracks", gone.len());
        for track in gone {
            self.drop_remote_track(&track);
        }
    }

    /// Drops the remote tracks `participant` published on nodes other than `except`.
    fn drop_tracks_of(&mut self, participant: &ParticipantId, except: Option<&str>) {
        let stale: Vec<TrackId> = self
            .remote_tracks
            .iter()
            .filter(|(_, m)| &m.participant == participant && Some(m.origin.as_str()) != except)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.drop_remote_track(&id);
        }
    }

    fn drop_remote_track(&mut self, track: &TrackId) {
        if self.remote_tracks.remove(track).is_some() {
            self.to_engine(RelayToEngine::RemoveRemoteTrack {
                track: track.clone(),
            });
        }
        if let Some(w) = self.wanted.remove(track)
            && let Some((channel, at)) = w.subscription
        {
            self.channels.remove(&channel);
            self.send_to(&at, RelayMessage::Unsubscribe { channel });
        }
    }

    fn add_remote_track(&mut self, room: &RoomName, peer: &str, track: RelayTrack) -> TrackInfo {
        let info = track.info.clone();
        if !self.remote_tracks.contains_key(&info.id) {
            self.remote_tracks.insert(
                info.id.clone(),
                RemoteTrackMeta {
                    room: room.clone(),
                    origin: peer.to_owned(),
                    participant: info.participant.clone(),
                },
            );
            self.to_engine(RelayToEngine::AddRemoteTrack { track });
        }
        info
    }

    async fn on_control(&mut self, link_id: LinkId, message: RelayMessage) {
        let Some(link) = self.link_by_id(link_id) else {
            return;
        };
        let peer = link.peer.clone();
        match message {
            RelayMessage::RoomInterest { room, interested } => {
                if interested {
                    self.interest
                        .entry(room.clone())
                        .or_default()
                        .insert(peer.clone());
                    let (participants, tracks, settings, lobby) = match self.local.get(&room) {
                        Some(l) => (
                            l.participants.values().cloned().collect(),
                            l.tracks.clone(),
                            l.settings,
                            l.lobby.clone(),
                        ),
                        None => (Vec::new(), Vec::new(), RoomSettings::default(), Vec::new()),
                    };
                    link.send_control(RelayMessage::RoomState {
                        room: room.clone(),
                        participants,
                        tracks,
                    });
                    if settings != RoomSettings::default() {
                        link.send_control(RelayMessage::RoomSettings {
                            room: room.clone(),
                            settings,
                        });
                    }
                    if !lobby.is_empty() {
                        link.send_control(RelayMessage::RoomLobby {
                            room,
                            waiting: lobby,
                        });
                    }
                } else if let Some(peers) = self.interest.get_mut(&room) {
                    peers.remove(&peer);
                }
            }
            RelayMessage::RoomState {
                room,
                participants,
                tracks,
            } => {
                if self.local.contains_key(&room) {
                    let announced: BTreeSet<TrackId> =
                        tracks.iter().map(|t| t.info.id.clone()).collect();
                    let stale: Vec<TrackId> = self
                        .remote_tracks
                        .iter()
                        .filter(|(id, m)| {
                            m.room == room && m.origin == peer && !announced.contains(*id)
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in stale {
                        self.drop_remote_track(&id);
                    }
                    let infos = tracks
                        .into_iter()
                        .map(|t| self.add_remote_track(&room, &peer, t))
                        .collect();
                    self.rooms.remote(
                        &room,
                        &peer,
                        RemoteRoomEvent::State {
                            participants,
                            tracks: infos,
                        },
                    );
                }
                self.fetch_answered(&peer, Some(&room));
            }
            RelayMessage::ParticipantJoined { room, participant } => {
                // A participant that resumed on `peer` leaves its old node's tracks behind.
                self.drop_tracks_of(&participant.id, Some(&peer));
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::Joined(participant));
            }
            RelayMessage::ParticipantLeft { room, participant } => {
                // The room actor drops the participant's tracks; the engine needs telling too.
                let theirs: Vec<TrackId> = self
                    .remote_tracks
                    .iter()
                    .filter(|(_, m)| m.origin == peer && m.participant == participant)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in theirs {
                    self.drop_remote_track(&id);
                }
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::Left(participant));
            }
            RelayMessage::TrackAnnounce { room, track } => {
                if self.local.contains_key(&room) {
                    let info = self.add_remote_track(&room, &peer, track);
                    self.rooms
                        .remote(&room, &peer, RemoteRoomEvent::Published(info));
                }
            }
            RelayMessage::TrackWithdraw { room, track } => {
                if self
                    .remote_tracks
                    .get(&track)
                    .is_some_and(|m| m.origin == peer)
                {
                    self.drop_remote_track(&track);
                }
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::Unpublished(track));
            }
            RelayMessage::TrackMuted { room, track, muted } => {
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::Muted { track, muted });
            }
            RelayMessage::Chat {
                room,
                from,
                name,
                text,
                ts,
            } => {
                self.rooms.remote(
                    &room,
                    &peer,
                    RemoteRoomEvent::Chat {
                        from,
                        name,
                        text,
                        ts,
                    },
                );
            }
            RelayMessage::ParticipantUpdated { room, participant } => {
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::Updated(participant));
            }
            RelayMessage::Moderate {
                room,
                by,
                target,
                action,
            } => {
                self.rooms.remote(
                    &room,
                    &peer,
                    RemoteRoomEvent::Moderate { by, target, action },
                );
            }
            RelayMessage::RoomSettings { room, settings } => {
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::Settings(settings));
            }
            RelayMessage::AudioLevels { room, levels } => {
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::AudioLevels(levels));
            }
            RelayMessage::RoomLobby { room, waiting } => {
                self.rooms
                    .remote(&room, &peer, RemoteRoomEvent::Lobby(waiting));
            }
            RelayMessage::Subscribe {
                room: _,
                track,
                channel,
                layers,
            } => self.on_subscribe(link, track, channel, layers).await,
            RelayMessage::Subscribed { channel } => {
                debug!(peer = %peer, channel, "subscription served");
            }
            RelayMessage::Redirect { channel, via } => {
                if let Some(track) = self.channels.remove(&channel) {
                    self.metrics
                        .mesh
                        .failover(crate::metrics::FailoverKind::SubscriptionRerouted);
                    info!(track = %track, via = %via, "subscription redirected");
                    self.to_engine(RelayToEngine::DetachUpstream {
                        track: track.clone(),
                    });
                    let linked = self.links.contains_key(&via);
                    if let Some(w) = self.wanted.get_mut(&track) {
                        w.subscription = None;
                        w.via = (via != self.node && linked).then_some(via.clone());
                    }
                    if linked || via == self.node {
                        self.subscribe(&track);
                    } else {
                        // The origin still counts a node this one cannot reach (it died and the
                        // origin has not noticed yet): ask the origin again shortly.
                        debug!(track = %track, via = %via, "redirected to an unreachable node; retrying at the origin");
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(REDIRECT_RETRY).await;
                            let _ = tx.send(Input::Resubscribe(track));
                        });
                    }
                }
            }
            RelayMessage::SubscribeRefused { channel, reason } => {
                if let Some(track) = self.channels.remove(&channel) {
                    debug!(track = %track, reason, "subscription refused");
                    self.to_engine(RelayToEngine::DetachUpstream {
                        track: track.clone(),
                    });
                    let retry = match self.wanted.get_mut(&track) {
                        Some(w) => {
                            w.subscription = None;
                            w.via.take().is_some()
                        }
                        None => false,
                    };
                    if retry {
                        self.subscribe(&track);
                    }
                }
            }
            RelayMessage::SetLayers { channel, layers } => {
                self.to_engine(RelayToEngine::SetRelayLayers {
                    link: link_id,
                    channel,
                    layers,
                });
            }
            RelayMessage::Unsubscribe { channel } => {
                self.serving.remove(&(link_id, channel));
                self.to_engine(RelayToEngine::RemoveRelayLeg {
                    link: link_id,
                    channel,
                });
            }
            RelayMessage::KeyframeRequest { channel, layer } => {
                self.to_engine(RelayToEngine::KeyframeRequest {
                    link: link_id,
                    channel,
                    layer,
                });
            }
            RelayMessage::Nack {
                channel,
                layer,
                seqs,
            } => {
                self.to_engine(RelayToEngine::Nack {
                    link: link_id,
                    channel,
                    layer,
                    seqs,
                });
            }
            RelayMessage::Ping { nonce, .. } => {
                link.send_control(RelayMessage::Pong { nonce });
            }
            RelayMessage::Pong { .. } | RelayMessage::Media { .. } => {}
            RelayMessage::Hello { .. } => {
                debug!(peer = %peer, "second Hello ignored");
            }
            RelayMessage::Error { reason } => {
                warn!(peer = %peer, reason, "relay peer reported an error");
            }
        }
    }

    async fn on_subscribe(
        &mut self,
        link: Arc<LinkTx>,
        track: TrackId,
        channel: u32,
        layers: LayerSet,
    ) {
        let is_origin = self
            .local
            .values()
            .any(|r| r.tracks.iter().any(|t| t.info.id == track));
        if !is_origin && !self.remote_tracks.contains_key(&track) {
            link.send_control(RelayMessage::SubscribeRefused {
                channel,
                reason: "unknown track".into(),
            });
            return;
        }
        let served = self
            .serving
            .values()
            .filter(|s| s.track == track)
            .map(|s| ServedPeer {
                node: &s.peer,
                site: &s.peer_site,
            });
        let decision = decide_subscribe(&self.site, is_origin, &link.peer, &link.peer_site, served);
        if let SubscribeDecision::Redirect(via) = decision {
            info!(track = %track, peer = %link.peer, via = %via, "subscriber sent to its site's relay");
            link.send_control(RelayMessage::Redirect { channel, via });
            return;
        }
        let (reply, rx) = oneshot::channel();
        self.to_engine(RelayToEngine::AddRelayLeg {
            track: track.clone(),
            link: link.clone(),
            channel,
            layers,
            reply,
        });
        if rx.await.unwrap_or(false) {
            self.serving.insert(
                (link.id, channel),
                Serving {
                    peer: link.peer.clone(),
                    peer_site: link.peer_site.clone(),
                    track,
                },
            );
            link.send_control(RelayMessage::Subscribed { channel });
        } else {
            link.send_control(RelayMessage::SubscribeRefused {
                channel,
                reason: "track gone".into(),
            });
        }
    }

    fn on_demand(&mut self, track: TrackId, layers: LayerSet) {
        if layers.is_empty() {
            if let Some(w) = self.wanted.remove(&track)
                && let Some((channel, at)) = w.subscription
            {
                self.channels.remove(&channel);
                self.send_to(&at, RelayMessage::Unsubscribe { channel });
                self.to_engine(RelayToEngine::DetachUpstream { track });
            }
            return;
        }
        match self.wanted.get_mut(&track) {
            Some(w) => {
                if w.layers != layers {
                    debug!(track = %track, layers = layers.0, "wanted layers changed");
                    w.layers = layers;
                    if let Some((channel, at)) = &w.subscription {
                        let (channel, at) = (*channel, at.clone());
                        self.send_to(&at, RelayMessage::SetLayers { channel, layers });
                    }
                }
            }
            None => {
                self.wanted.insert(
                    track.clone(),
                    Wanted {
                        layers,
                        via: None,
                        subscription: None,
                    },
                );
                self.subscribe(&track);
            }
        }
    }

    /// Opens a subscription for a wanted track at its upstream node, if that node is linked.
    fn subscribe(&mut self, track: &TrackId) {
        let Some(meta) = self.remote_tracks.get(track) else {
            return;
        };
        let Some(w) = self.wanted.get_mut(track) else {
            return;
        };
        if w.subscription.is_some() {
            return;
        }
        let mut target = upstream_for(&meta.origin, w.via.as_deref()).to_owned();
        if !self.links.contains_key(&target) && w.via.is_some() {
            // The site relay is unreachable from here: go to the origin.
            w.via = None;
            target = meta.origin.clone();
        }
        let Some(link) = self.links.get(&target).cloned() else {
            debug!(track = %track, upstream = %target, "upstream not linked yet; subscription waits");
            return;
        };
        let channel = self.next_channel;
        self.next_channel = self.next_channel.wrapping_add(1).max(1);
        self.channels.insert(channel, track.clone());
        w.subscription = Some((channel, target.clone()));
        let layers = w.layers;
        let room = meta.room.clone();
        let _span = tracing::info_span!("cascade.subscribe", node = %self.node, room = %room,
            track = %track, origin = %meta.origin, upstream = %target,
            upstream_site = %link.peer_site, channel, layers = layers.0)
        .entered();
        self.to_engine(RelayToEngine::AttachUpstream {
            track: track.clone(),
            link: link.clone(),
            channel,
        });
        info!(track = %track, upstream = %target, channel, layers = layers.0, "subscribing upstream");
        link.send_control(RelayMessage::Subscribe {
            room,
            track: track.clone(),
            channel,
            layers,
        });
    }

    fn on_fetch(&mut self, room: RoomName, reply: oneshot::Sender<()>) {
        let waiting: BTreeSet<String> = self.links.keys().cloned().collect();
        if waiting.is_empty() {
            let _ = reply.send(());
            return;
        }
        self.announce_interest(&room, true);
        let id = self.next_fetch;
        self.next_fetch += 1;
        self.fetches.insert(
            id,
            Fetch {
                room,
                waiting,
                reply,
            },
        );
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FETCH_TIMEOUT).await;
            let _ = tx.send(Input::FetchTimeout(id));
        });
    }

    async fn on_room(&mut self, room: RoomName, event: LocalRoomEvent) {
        match event {
            LocalRoomEvent::Opened => {
                self.local.entry(room.clone()).or_default();
                self.announce_interest(&room, true);
            }
            LocalRoomEvent::Closed => {
                if self.rooms.get(&room).is_some() {
                    return; // a racing duplicate actor stopped; the room is still open
                }
                if self.local.remove(&room).is_none() {
                    return;
                }
                self.announce_interest(&room, false);
                let theirs: Vec<TrackId> = self
                    .remote_tracks
                    .iter()
                    .filter(|(_, m)| m.room == room)
                    .map(|(t, _)| t.clone())
                    .collect();
                for track in theirs {
                    self.drop_remote_track(&track);
                }
            }
            LocalRoomEvent::Joined(info) => {
                // Resumed here: what it published on its old node is gone.
                self.drop_tracks_of(&info.id, None);
                self.local
                    .entry(room.clone())
                    .or_default()
                    .participants
                    .insert(info.id.clone(), info.clone());
                self.send_interested(
                    &room,
                    RelayMessage::ParticipantJoined {
                        room: room.clone(),
                        participant: info,
                    },
                );
            }
            LocalRoomEvent::Left(id) => {
                if let Some(l) = self.local.get_mut(&room) {
                    l.participants.remove(&id);
                    l.tracks.retain(|t| t.info.participant != id);
                }
                self.send_interested(
                    &room,
                    RelayMessage::ParticipantLeft {
                        room: room.clone(),
                        participant: id,
                    },
                );
            }
            LocalRoomEvent::Published(tracks) => {
                for info in tracks {
                    let (reply, rx) = oneshot::channel();
                    self.to_engine(RelayToEngine::TrackCodecs {
                        track: info.id.clone(),
                        reply,
                    });
                    let codecs = rx.await.unwrap_or_default();
                    let track = RelayTrack {
                        info,
                        origin: self.node.clone(),
                        origin_site: self.site.clone(),
                        codecs,
                    };
                    self.local
                        .entry(room.clone())
                        .or_default()
                        .tracks
                        .push(track.clone());
                    self.send_interested(
                        &room,
                        RelayMessage::TrackAnnounce {
                            room: room.clone(),
                            track,
                        },
                    );
                }
            }
            LocalRoomEvent::Unpublished(ids) => {
                if let Some(l) = self.local.get_mut(&room) {
                    l.tracks.retain(|t| !ids.contains(&t.info.id));
                }
                for track in ids {
                    self.send_interested(
                        &room,
                        RelayMessage::TrackWithdraw {
                            room: room.clone(),
                            track,
                        },
                    );
                }
            }
            LocalRoomEvent::Muted { track, muted } => {
                if let Some(t) = self
                    .local
                    .get_mut(&room)
                    .and_then(|l| l.tracks.iter_mut().find(|t| t.info.id == track))
                {
                    t.info.muted = muted;
                }
                self.send_interested(
                    &room,
                    RelayMessage::TrackMuted {
                        room: room.clone(),
                        track,
                        muted,
                    },
                );
            }
            LocalRoomEvent::Chat {
                from,
                name,
                text,
                ts,
            } => {
                self.send_interested(
                    &room,
                    RelayMessage::Chat {
                        room: room.clone(),
                        from,
                        name,
                        text,
                        ts,
                    },
                );
            }
            LocalRoomEvent::Updated(info) => {
                if let Some(l) = self.local.get_mut(&room)
                    && let Some(p) = l.participants.get_mut(&info.id)
                {
                    *p = info.clone();
                }
                self.send_interested(
                    &room,
                    RelayMessage::ParticipantUpdated {
                        room: room.clone(),
                        participant: info,
                    },
                );
            }
            LocalRoomEvent::Moderate { by, target, action } => {
                // Every interested node hears it; only the target's own node acts.
                self.send_interested(
                    &room,
                    RelayMessage::Moderate {
                        room: room.clone(),
                        by,
                        target,
                        action,
                    },
                );
            }
            LocalRoomEvent::Settings(settings) => {
                self.local.entry(room.clone()).or_default().settings = settings;
                self.send_interested(
                    &room,
                    RelayMessage::RoomSettings {
                        room: room.clone(),
                        settings,
                    },
                );
            }
            LocalRoomEvent::Lobby(waiting) => {
                self.local.entry(room.clone()).or_default().lobby = waiting.clone();
                self.send_interested(
                    &room,
                    RelayMessage::RoomLobby {
                        room: room.clone(),
                        waiting,
                    },
                );
            }
            LocalRoomEvent::AudioLevel { participant, level } => {
                self.send_interested(
                    &room,
                    RelayMessage::AudioLevels {
                        room: room.clone(),
                        levels: vec![(participant, level)],
                    },
                );
            }
        }
    }
}
