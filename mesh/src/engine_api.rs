//! The media engine's control interface: commands sent into the media loop (which the node's
//! WebRTC edge runs) and the events it reports back to a session's owner. Everything here is
//! control traffic; media never crosses it. Actors and HTTP handlers depend on this, not on the
//! WebRTC stack.

use kaskade_proto::signal::{MediaKind, TrackSource};
use kaskade_proto::{ParticipantId, TrackId};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

/// Identifies one peer connection inside the engine.
pub type SessionKey = u64;

/// A track the engine can forward: what a subscriber leg needs to set up its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackDescriptor {
    pub id: TrackId,
    pub participant: ParticipantId,
    pub kind: MediaKind,
    pub source: TrackSource,
    /// Simulcast RIDs, lowest first; empty without simulcast.
    pub layers: Vec<String>,
}

/// Why the engine refused a command.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("no such session")]
    UnknownSession,
    #[error("no such track")]
    UnknownTrack,
    #[error("the media engine has stopped")]
    EngineGone,
}

/// Result of publishing (or republishing) through an offer.
#[derive(Debug)]
pub struct PublishOutcome {
    pub session: SessionKey,
    pub answer: String,
    /// Tracks the offer published, by mid (new ones and ones kept from earlier offers).
    pub tracks: BTreeMap<String, TrackDescriptor>,
    /// Tracks of earlier offers that this offer no longer sends.
    pub removed: Vec<TrackId>,
}

/// Result of a subscriber-side negotiation step that the node offers.
#[derive(Debug)]
pub struct SubscribeOffer {
    pub session: SessionKey,
    pub offer: String,
    pub tracks: BTreeMap<String, TrackId>,
}

/// Events a session reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeEvent {
    Connected {
        session: SessionKey,
    },
    /// ICE failed or timed out, DTLS closed, or the session was closed: its tracks are gone.
    Closed {
        session: SessionKey,
        reason: String,
    },
    /// The node's offer on a subscribe session changed (tracks added or removed): send it.
    SubscribeOffer {
        session: SessionKey,
        offer: String,
        tracks: BTreeMap<String, TrackId>,
    },
    /// Mean audio level (RFC 6464 dBov, 0 loudest, 127 silence) of each audio track a publish
    /// session sent over the last interval.
    AudioLevels {
        session: SessionKey,
        levels: Vec<(TrackId, u8)>,
    },
    /// Dynacast: which simulcast layers (lowest first) a publish session should send of `track`.
    PublishLayers {
        session: SessionKey,
        track: TrackId,
        active: Vec<bool>,
    },
    /// A subscribe session's bandwidth estimate and the layer forwarded per simulcast track
    /// changed.
    ReceiveQuality {
        session: SessionKey,
        estimate_bps: u64,
        layers: BTreeMap<TrackId, u8>,
    },
}

/// Where a session's events go: a channel, an actor's mailbox, whatever the owner needs.
#[derive(Clone)]
pub struct EventSink(std::sync::Arc<dyn Fn(EdgeEvent) + Send + Sync>);

impl EventSink {
    pub fn new(deliver: impl Fn(EdgeEvent) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(deliver))
    }

    /// A sink that feeds a channel, and the channel's receiving end.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<EdgeEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self::new(move |event| {
                let _ = tx.send(event);
            }),
            rx,
        )
    }

    pub fn send(&self, event: EdgeEvent) {
        (self.0)(event)
    }
}
pub type Reply<T> = oneshot::Sender<Result<T, EdgeError>>;

pub enum EngineCommand {
    /// Publish from an offer: a new session when `session` is None, else a renegotiation.
    Publish {
        session: Option<SessionKey>,
        participant: ParticipantId,
        offer: String,
        sources: BTreeMap<String, TrackSource>,
        events: EventSink,
        reply: Reply<PublishOutcome>,
    },
    /// WHEP: the client offers recvonly media; the node answers with these tracks.
    SubscribeAnswering {
        participant: ParticipantId,
        offer: String,
        tracks: Vec<TrackDescriptor>,
        events: EventSink,
        reply: Reply<(SessionKey, String)>,
    },
    /// The node offers a subscribe session carrying `tracks` (more can be added later).
    SubscribeOffering {
        participant: ParticipantId,
        tracks: Vec<TrackDescriptor>,
        events: EventSink,
        reply: Reply<SubscribeOffer>,
    },
    /// Adds and removes tracks on a node-offered subscribe session; a new offer follows as
    /// `EdgeEvent::SubscribeOffer` once the previous one is answered.
    UpdateSubscription {
        session: SessionKey,
        add: Vec<TrackDescriptor>,
        remove: Vec<TrackId>,
    },
    /// The client's answer to the node's last subscribe offer.
    SubscribeAnswer {
        session: SessionKey,
        answer: String,
        reply: Reply<()>,
    },
    /// A trickled remote ICE candidate.
    RemoteCandidate {
        session: SessionKey,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    },
    SetLayer {
        session: SessionKey,
        track: TrackId,
        layer: u8,
    },
    /// Stops (or resumes) forwarding a published track to everyone: a host muted it.
    SetTrackPaused {
        track: TrackId,
        paused: bool,
    },
    Close {
        session: SessionKey,
    },
    /// Counts for `/metrics` and `/api`.
    Stats {
        reply: oneshot::Sender<EngineStats>,
    },
}

#[derive(Debug, Default, Clone)]
pub struct EngineStats {
    pub sessions: usize,
    pub forwarded_tracks: usize,
}

/// Cheap clonable handle to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<EngineCommand>,
}

impl EngineHandle {
    /// A handle and the command queue the engine reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<EngineCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn send(&self, command: EngineCommand) -> Result<(), EdgeError> {
        self.tx.send(command).map_err(|_| EdgeError::EngineGone)
    }

    /// Sends a command built around a reply channel and waits for the reply.
    pub async fn request<T>(
        &self,
        build: impl FnOnce(Reply<T>) -> EngineCommand,
    ) -> Result<T, EdgeError> {
        let (tx, rx) = oneshot::channel();
        self.send(build(tx))?;
        rx.await.map_err(|_| EdgeError::EngineGone)?
    }

    pub async fn stats(&self) -> EngineStats {
        let (tx, rx) = oneshot::channel();
        if self.send(EngineCommand::Stats { reply: tx }).is_err() {
            return EngineStats::default();
        }
        rx.await.unwrap_or_default()
    }
}

impl From<&TrackDescriptor> for kaskade_proto::signal::TrackInfo {
    fn from(d: &TrackDescriptor) -> Self {
        Self {
            id: d.id.clone(),
            participant: d.participant.clone(),
            kind: d.kind,
            source: d.source,
            layers: d.layers.clone(),
            muted: false,
        }
    }
}

impl From<&kaskade_proto::signal::TrackInfo> for TrackDescriptor {
    fn from(t: &kaskade_proto::signal::TrackInfo) -> Self {
        Self {
            id: t.id.clone(),
            participant: t.participant.clone(),
            kind: t.kind,
            source: t.source,
            layers: t.layers.clone(),
        }
    }
}
