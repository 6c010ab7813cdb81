//! `janus::videoroom`: the VideoRoom plugin's requests on a [`Handle`] — create and destroy a
//! room, join as publisher and publish an SDP offer (→ Janus's answer), join as subscriber to
//! feeds (→ Janus's offer) and `start` with our answer, unpublish, leave — with typed replies.
//!
//! One [`VideoRoomHandle`] is one PeerConnection in Janus: a publisher handle publishes one
//! offer; a subscriber handle receives the feeds it joined for on one PeerConnection that Janus
//! offers. A session can carry any number of handles (one long poll serves them all).

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

use super::error::JanusError;
use super::session::{Handle, Jsep, JsepKind, PluginReply, Session};

/// The plugin's package name, for `attach`.
pub const PLUGIN: &str = "janus.plugin.videoroom";

/// Settings of a room made with [`VideoRoomHandle::create_room`]. Codecs are fixed to VP8 video
/// and Opus audio; the room is never recorded nor saved to Janus's config.
#[derive(Clone, Debug)]
pub struct RoomOptions {
    /// Room id to use; Janus picks a random one when `None`.
    pub room: Option<u64>,
    pub description: String,
    /// Most concurrent WebRTC publishers (Janus's default is 3).
    pub publishers: u32,
    /// Video bitrate cap Janus asks publishers for via REMB, in bit/s; 0 = no cap.
    pub bitrate: u32,
    /// Seconds between keyframe requests Janus sends publishers on its own; 0 = never.
    pub fir_freq: u32,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            room: None,
            description: "kaskade-bench".into(),
            publishers: 1000,
            bitrate: 0,
            fir_freq: 0,
        }
    }
}

impl RoomOptions {
    /// The `create` request.
    pub fn to_request(&self) -> Value {
        let mut body = json!({
            "request": "create",
            "description": self.description,
            "permanent": false,
            "is_private": false,
            "publishers": self.publishers,
            "bitrate": self.bitrate,
            "fir_freq": self.fir_freq,
            "record": false,
            "videocodec": "vp8",
            "audiocodec": "opus",
        });
        if let Some(room) = self.room {
            body["room"] = room.into();
        }
        body
    }
}

/// One published stream of a feed, as listed in `joined` / `publishers` events.
#[derive(Clone, Debug, Deserialize)]
pub struct FeedStream {
    /// `audio`, `video` or `data`.
    #[serde(rename = "type")]
    pub kind: String,
    pub mindex: u32,
    pub mid: String,
    #[serde(default)]
    pub codec: Option<String>,
    #[serde(default)]
    pub disabled: bool,
}

/// An active publisher of the room (a feed others can subscribe to).
#[derive(Clone, Debug, Deserialize)]
pub struct Feed {
    pub id: u64,
    #[serde(default)]
    pub display: Option<String>,
    #[serde(default)]
    pub streams: Vec<FeedStream>,
}

/// The answer to a publisher `join`.
#[derive(Clone, Debug, Deserialize)]
pub struct Joined {
    pub room: u64,
    /// This participant's id: the feed id subscribers use once it publishes.
    pub id: u64,
    /// Ties subscriptions to this participant (needed only in `require_pvtid` rooms).
    pub private_id: u64,
    /// Feeds already publishing in the room.
    #[serde(default)]
    pub publishers: Vec<Feed>,
}

/// One stream of a subscription, as listed in the `attached` answer.
#[derive(Clone, Debug, Deserialize)]
pub struct SubscribedStream {
    pub mindex: u32,
    pub mid: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub feed_id: Option<u64>,
    #[serde(default)]
    pub feed_mid: Option<String>,
}

/// The answer to a subscriber `join`: Janus's SDP offer and what it carries.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub room: u64,
    pub offer: String,
    pub streams: Vec<SubscribedStream>,
}

/// A handle attached to the VideoRoom plugin.
pub struct VideoRoomHandle {
    handle: Handle,
}

/// `data` of `reply` as `T`, or an `Unexpected` error naming `request`.
fn typed<T: for<'de> Deserialize<'de>>(
    reply: &PluginReply,
    request: &str,
) -> Result<T, JanusError> {
    serde_json::from_value(reply.data.clone()).map_err(|e| JanusError::Unexpected {
        request: request.to_owned(),
        answer: format!("{e}: {}", reply.data),
    })
}

/// Checks that `reply.data[key] == value` (e.g. `videoroom == "created"`).
fn expect(reply: &PluginReply, request: &str, key: &str, value: &str) -> Result<(), JanusError> {
    if reply.data[key] == value {
        Ok(())
    } else {
        Err(JanusError::Unexpected {
            request: request.to_owned(),
            answer: reply.data.to_string(),
        })
    }
}

/// The SDP of `reply`'s JSEP, which must be of `kind`.
fn sdp(reply: &PluginReply, request: &str, kind: JsepKind) -> Result<String, JanusError> {
    match &reply.jsep {
        Some(jsep) if jsep.kind == kind => Ok(jsep.sdp.clone()),
        other => Err(JanusError::Unexpected {
            request: request.to_owned(),
            answer: format!(
                "expected a JSEP {kind:?}, got {other:?} with {}",
                reply.data
            ),
        }),
    }
}

impl VideoRoomHandle {
    /// Attaches a new handle to the VideoRoom plugin on `session`.
    pub async fn attach(session: &Session) -> Result<Self, JanusError> {
        Ok(Self {
            handle: session.attach(PLUGIN).await?,
        })
    }

    /// The underlying handle (ids, events).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The underlying handle, to wait for its events.
    pub fn handle_mut(&mut self) -> &mut Handle {
        &mut self.handle
    }

    /// Creates a room; returns its id.
    pub async fn create_room(&self, options: &RoomOptions) -> Result<u64, JanusError> {
        let reply = self.handle.message(options.to_request(), None).await?;
        expect(&reply, "create", "videoroom", "created")?;
        reply.data["room"]
            .as_u64()
            .ok_or_else(|| JanusError::Unexpected {
                request: "create".into(),
                answer: reply.data.to_string(),
            })
    }

    /// Destroys `room`, kicking everyone out.
    pub async fn destroy_room(&self, room: u64) -> Result<(), JanusError> {
        let reply = self
            .handle
            .message(json!({"request": "destroy", "room": room}), None)
            .await?;
        expect(&reply, "destroy", "videoroom", "destroyed")
    }

    /// Joins `room` as a publisher (not yet sending). `id` fixes the feed id; Janus picks a
    /// random one when `None`.
    pub async fn join_publisher(
        &self,
        room: u64,
        id: Option<u64>,
        display: &str,
    ) -> Result<Joined, JanusError> {
        let mut body = json!({"request": "join", "ptype": "publisher", "room": room,
                              "display": display});
        if let Some(id) = id {
            body["id"] = id.into();
        }
        let reply = self.handle.message(body, None).await?;
        expect(&reply, "join (publisher)", "videoroom", "joined")?;
        typed(&reply, "join (publisher)")
    }

    /// Publishes the media of `offer` (an SDP offer with its candidates) and returns Janus's SDP
    /// answer. The feed becomes visible to subscribers once the PeerConnection is up (see
    /// [`Handle::wait_webrtcup`]).
    pub async fn publish(&self, offer: &str) -> Result<String, JanusError> {
        let reply = self
            .handle
            .message(json!({"request": "publish"}), Some(Jsep::offer(offer)))
            .await?;
        expect(&reply, "publish", "configured", "ok")?;
        sdp(&reply, "publish", JsepKind::Answer)
    }

    /// Stops publishing and closes the publisher's PeerConnection.
    pub async fn unpublish(&self) -> Result<(), JanusError> {
        let reply = self
            .handle
            .message(json!({"request": "unpublish"}), None)
            .await?;
        expect(&reply, "unpublish", "unpublished", "ok")
    }

    /// Joins `room` as a subscriber of every stream of `feeds`; returns Janus's offer.
    pub async fn join_subscriber(
        &self,
        room: u64,
        feeds: &[u64],
        private_id: Option<u64>,
    ) -> Result<Subscription, JanusError> {
        let feeds: Vec<(u64, Option<u8>)> = feeds.iter().map(|f| (*f, None)).collect();
        self.join_subscriber_with(room, &feeds, private_id).await
    }

    /// [`join_subscriber`](Self::join_subscriber) with a simulcast substream per feed (Janus's
    /// numbering; `None` keeps its default).
    pub async fn join_subscriber_with(
        &self,
        room: u64,
        feeds: &[(u64, Option<u8>)],
        private_id: Option<u64>,
    ) -> Result<Subscription, JanusError> {
        let streams: Vec<Value> = feeds
            .iter()
            .map(|(feed, substream)| match substream {
                Some(s) => json!({"feed": feed, "substream": s}),
                None => json!({"feed": feed}),
            })
            .collect();
        let mut body = json!({"request": "join", "ptype": "subscriber", "room": room,
                              "streams": streams});
        if let Some(private_id) = private_id {
            body["private_id"] = private_id.into();
        }
        let reply = self.handle.message(body, None).await?;
        expect(&reply, "join (subscriber)", "videoroom", "attached")?;
        let offer = sdp(&reply, "join (subscriber)", JsepKind::Offer)?;
        #[derive(Deserialize)]
        struct Attached {
            room: u64,
            #[serde(default)]
            streams: Vec<SubscribedStream>,
        }
        let attached: Attached = typed(&reply, "join (subscriber)")?;
        Ok(Subscription {
            room: attached.room,
            offer,
            streams: attached.streams,
        })
    }

    /// Completes a subscription with our SDP `answer`; Janus starts relaying once the
    /// PeerConnection is up.
    pub async fn start(&self, answer: &str) -> Result<(), JanusError> {
        let reply = self
            .handle
            .message(json!({"request": "start"}), Some(Jsep::answer(answer)))
            .await?;
        expect(&reply, "start", "started", "ok")
    }

    /// Leaves the room (a publisher stops publishing; a subscription ends).
    pub async fn leave(&self) -> Result<(), JanusError> {
        let reply = self
            .handle
            .message(json!({"request": "leave"}), None)
            .await?;
        // Publishers get `leaving: ok`, subscribers `left: ok`.
        if reply.data["leaving"] == "ok" || reply.data["left"] == "ok" {
            Ok(())
        } else {
            Err(JanusError::Unexpected {
                request: "leave".into(),
                answer: reply.data.to_string(),
            })
        }
    }

    /// Waits for Janus's `webrtcup` on this handle.
    pub async fn wait_webrtcup(&mut self, timeout: Duration) -> Result<(), JanusError> {
        self.handle.wait_webrtcup(timeout).await
    }

    /// Detaches the handle.
    pub async fn detach(self) -> Result<(), JanusError> {
        self.handle.detach().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_fixes_codecs_and_recording() {
        let body = RoomOptions {
            room: Some(77),
            bitrate: 512_000,
            ..Default::default()
        }
        .to_request();
        assert_eq!(body["request"], "create");
        assert_eq!(body["room"], 77);
        assert_eq!(body["publishers"], 1000);
        assert_eq!(body["bitrate"], 512_000);
        assert_eq!(body["record"], false);
        assert_eq!(body["permanent"], false);
        assert_eq!(
            (&body["videocodec"], &body["audiocodec"]),
            (&json!("vp8"), &json!("opus"))
        );
        assert!(RoomOptions::default().to_request().get("room").is_none());
    }

    #[test]
    fn parses_joined_and_attached_replies() {
        let reply = PluginReply {
            data: json!({"videoroom": "joined", "room": 5, "id": 11, "private_id": 99,
                         "description": "x", "publishers": [
                             {"id": 12, "display": "p", "streams": [
                                 {"type": "video", "mindex": 0, "mid": "0", "codec": "vp8"}]}]}),
            jsep: None,
        };
        let joined: Joined = typed(&reply, "join").unwrap();
        assert_eq!((joined.room, joined.id, joined.private_id), (5, 11, 99));
        assert_eq!(
            joined.publishers[0].streams[0].codec.as_deref(),
            Some("vp8")
        );
        let reply = PluginReply {
            data: json!({"videoroom": "attached", "room": 5}),
            jsep: Some(Jsep::answer("v=0")),
        };
        assert!(matches!(
            sdp(&reply, "join", JsepKind::Offer),
            Err(JanusError::Unexpected { .. })
        ));
        assert!(expect(&reply, "join", "videoroom", "joined").is_err());
    }
}
