//! `janus::signalling`: Janus VideoRoom as a load-generator target — [`JanusVideoRoom`], the
//! [`SfuSignalling`] implementation that the scenarios drive exactly as they drive Kaskade's
//! WHIP/WHEP.
//!
//! Room names map to VideoRoom rooms created on first use. A publish is a publisher handle that
//! joins, sends the load generator's offer with `publish` and waits for Janus's `webrtcup` (Janus
//! only relays a feed to subscribers that joined after its PeerConnection is up); its feed id is
//! the [`SessionResource::publisher`]. A subscribe is a subscriber handle joined to one feed (the
//! room's first one when none is named): Janus offers, the load generator answers with `start`.
//! Handles are spread round robin over a few Janus sessions, so the control traffic (one long poll
//! per session, keepalives) stays small next to the media being measured. Closing a resource
//! detaches its handle, which closes the PeerConnection in Janus.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::error::JanusError;
use super::session::{JanusClient, Session};
use super::videoroom::{RoomOptions, VideoRoomHandle};
use crate::loadgen::error::LoadgenError;
use crate::loadgen::signalling::{LayerCap, Negotiator, SessionResource, SfuSignalling};

/// How long a publisher's PeerConnection may take to come up in Janus.
pub const WEBRTCUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Janus's simulcast substream for a layer cap. Janus numbers substreams in the order of the
/// publisher's encodings, and the load generator sends them lowest first (`q`, `h`, `f`), which
/// Janus takes as substream 0 = highest (checked on this machine, see `../shared/README.md`):
/// low is 2.
fn substream_of(layer: LayerCap) -> u8 {
    match layer {
        LayerCap::Low => 2,
        LayerCap::Medium => 1,
        LayerCap::High => 0,
    }
}

/// A VideoRoom room as this driver knows it.
#[derive(Debug, Clone)]
struct RoomState {
    id: u64,
    /// Feed ids of the room's publishers, in the order they published.
    feeds: Vec<u64>,
}

/// The load generator's driver for Janus's VideoRoom (see the module doc).
pub struct JanusVideoRoom {
    sessions: Vec<Session>,
    next_session: AtomicUsize,
    /// Handle used to create rooms.
    admin: VideoRoomHandle,
    options: RoomOptions,
    /// Serialises room creation so two first publishers do not create two rooms.
    rooms: tokio::sync::Mutex<HashMap<String, RoomState>>,
    /// Open handles by resource id.
    handles: Mutex<HashMap<String, VideoRoomHandle>>,
}

impl JanusVideoRoom {
    /// A driver with `sessions` Janus sessions (at least one) for its handles; rooms it creates
    /// take `options` (their `room` id is ignored: Janus picks one per room name).
    pub async fn connect(
        client: &JanusClient,
        sessions: usize,
        options: RoomOptions,
    ) -> Result<Self, JanusError> {
        let mut pool = Vec::new();
        for _ in 0..sessions.max(1) {
            pool.push(client.create_session().await?);
        }
        let admin = VideoRoomHandle::attach(&pool[0]).await?;
        Ok(Self {
            sessions: pool,
            next_session: AtomicUsize::new(0),
            admin,
            options: RoomOptions {
                room: None,
                ..options
            },
            rooms: tokio::sync::Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
        })
    }

    fn next_session(&self) -> &Session {
        let i = self.next_session.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        &self.sessions[i]
    }

    /// The room `name` maps to, created if it does not exist yet.
    async fn room(&self, name: &str) -> Result<u64, JanusError> {
        let mut rooms = self.rooms.lock().await;
        if let Some(room) = rooms.get(name) {
            return Ok(room.id);
        }
        let id = self.admin.create_room(&self.options).await?;
        rooms.insert(
            name.to_owned(),
            RoomState {
                id,
                feeds: Vec::new(),
            },
        );
        Ok(id)
    }

    /// The room `name` and the feed to subscribe to: `publisher`, or the room's first feed.
    async fn feed(&self, name: &str, publisher: Option<&str>) -> Result<(u64, u64), JanusError> {
        let rooms = self.rooms.lock().await;
        let room = rooms.get(name).ok_or_else(|| JanusError::Unexpected {
            request: "subscribe".into(),
            answer: format!("room {name:?} has no publisher yet"),
        })?;
        let feed = match publisher {
            Some(p) => p.parse().map_err(|_| JanusError::Unexpected {
                request: "subscribe".into(),
                answer: format!("publisher {p:?} is not a Janus feed id"),
            })?,
            None => *room.feeds.first().ok_or_else(|| JanusError::Unexpected {
                request: "subscribe".into(),
                answer: format!("room {name:?} has no publisher yet"),
            })?,
        };
        Ok((room.id, feed))
    }

    fn keep(&self, handle: VideoRoomHandle, publisher: Option<String>) -> SessionResource {
        let id = format!("{}/{}", handle.handle().session_id(), handle.handle().id());
        self.handles
            .lock()
            .expect("handles lock")
            .insert(id.clone(), handle);
        SessionResource { id, publisher }
    }
}

#[async_trait::async_trait]
impl SfuSignalling for JanusVideoRoom {
    fn name(&self) -> &str {
        "janus"
    }

    async fn publish(
        &self,
        room: &str,
        peer: &mut dyn Negotiator,
    ) -> Result<SessionResource, LoadgenError> {
        let room_id = self.room(room).await?;
        let mut handle = VideoRoomHandle::attach(self.next_session()).await?;
        let joined = handle.join_publisher(room_id, None, "loadgen").await?;
        let offer = peer.offer().await?;
        let answer = handle.publish(&offer).await?;
        peer.accept_answer(answer).await?;
        handle.wait_webrtcup(WEBRTCUP_TIMEOUT).await?;
        if let Some(state) = self.rooms.lock().await.get_mut(room) {
            state.feeds.push(joined.id);
        }
        Ok(self.keep(handle, Some(joined.id.to_string())))
    }

    async fn subscribe(
        &self,
        room: &str,
        publisher: Option<&str>,
        layer: Option<LayerCap>,
        peer: &mut dyn Negotiator,
    ) -> Result<SessionResource, LoadgenError> {
        let (room_id, feed) = self.feed(room, publisher).await?;
        let handle = VideoRoomHandle::attach(self.next_session()).await?;
        let substream = layer.map(substream_of);
        let subscription = handle
            .join_subscriber_with(room_id, &[(feed, substream)], None)
            .await?;
        let answer = peer.answer(subscription.offer).await?;
        handle.start(&answer).await?;
        Ok(self.keep(handle, None))
    }

    async fn close(&self, resource: &SessionResource) -> Result<(), LoadgenError> {
        let handle = self
            .handles
            .lock()
            .expect("handles lock")
            .remove(&resource.id);
        let Some(handle) = handle else {
            return Err(JanusError::Unexpected {
                request: "close".into(),
                answer: format!("no open handle {}", resource.id),
            }
            .into());
        };
        if let Some(feed) = resource
            .publisher
            .as_deref()
            .and_then(|p| p.parse::<u64>().ok())
        {
            for room in self.rooms.lock().await.values_mut() {
                room.feeds.retain(|f| *f != feed);
            }
        }
        handle.detach().await?;
        Ok(())
    }
}
