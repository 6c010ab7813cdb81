//! `janus/peer.rs`: the WebRTC side of a Janus VideoRoom client — a webrtc-rs 0.21 publisher of
//! one VP8 track whose RTP packets the caller writes, and a subscriber that records every packet
//! it receives — with the VideoRoom signalling done through `kaskade_bench::janus`. The peer
//! connection, the VP8 sender and the benchmark payload are `webrtc_peer.rs`'s.
//!
//! NOT a module of the `kaskade_bench` library: tests and binaries include it with
//! `#[path = ".../src/janus/peer.rs"] mod peer;` next to
//! `#[path = ".../src/webrtc_peer.rs"] mod webrtc_peer;` (webrtc-rs pulls in `rkyv`, whose extra
//! `PartialEq` impls break type inference in every crate that links a library using it).
//!
//! Janus cannot use `lo`, so the address is the namespace's veth address and the caller's
//! runtime must live in that namespace (`kaskade_tests::netns::in_named_netns`). Janus runs
//! half-trickle: SDPs are sent complete.

// Each includer uses only part of this file (a test may never read `Arrival::at`).
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kaskade_bench::janus::{Session, VideoRoomHandle};
use tokio::sync::watch;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

pub use crate::webrtc_peer::VP8_PAYLOAD_TYPE;
use crate::webrtc_peer::{CONNECT_TIMEOUT, Peer, Vp8Sender, packet_id, spawn_track_readers};

/// A VideoRoom publisher of one VP8 track whose RTP packets the caller writes.
pub struct JanusPublisher {
    pc: Arc<dyn PeerConnection>,
    video: Vp8Sender,
    /// The VideoRoom handle (its events: `webrtcup`, `media`, …).
    pub handle: VideoRoomHandle,
    /// Janus's answer to our offer.
    pub answer: String,
    pub room: u64,
    /// The feed id subscribers use.
    pub feed: u64,
}

impl JanusPublisher {
    /// Joins `room` on a new handle of `session`, publishes a VP8 track from a socket on `ip`,
    /// and waits until both ends see the PeerConnection up (ours connected, Janus's
    /// `webrtcup`).
    pub async fn connect(
        session: &Session,
        room: u64,
        ip: IpAddr,
        display: &str,
    ) -> anyhow::Result<Self> {
        let mut handle = VideoRoomHandle::attach(session).await?;
        let joined = handle
            .join_publisher(room, None, display)
            .await
            .context("join as publisher")?;
        let mut peer = Peer::new(ip).await?;
        let video = Vp8Sender::add_to(&peer, display).await?;
        let offer = peer.pc.create_offer(None).await?;
        let offer = peer.complete_local(offer).await?;
        let answer = handle.publish(&offer).await.context("publish")?;
        peer.pc
            .set_remote_description(RTCSessionDescription::answer(answer.clone())?)
            .await
            .with_context(|| format!("applying Janus's answer:\n{answer}"))?;
        peer.wait_connected("publisher").await?;
        handle
            .wait_webrtcup(CONNECT_TIMEOUT)
            .await
            .context("publisher webrtcup")?;
        Ok(Self {
            pc: peer.pc,
            video,
            handle,
            answer,
            room,
            feed: joined.id,
        })
    }

    /// Writes packet `id` with `payload_len` bytes of payload, a one-packet frame at `rtp_ts`.
    pub async fn send(&mut self, id: u64, rtp_ts: u32, payload_len: usize) -> anyhow::Result<()> {
        self.video.send(id, rtp_ts, payload_len).await
    }

    /// Leaves the room, detaches the handle and closes the connection.
    pub async fn close(self) -> anyhow::Result<()> {
        let left = self.handle.leave().await.context("publisher leave");
        let detached = self.handle.detach().await.context("publisher detach");
        let _ = self.pc.close().await;
        left.and(detached)
    }
}

/// One packet a subscriber received.
#[derive(Clone, Debug)]
pub struct Arrival {
    /// The id from `webrtc_peer::payload`; `None` when the payload was not ours or arrived altered.
    pub id: Option<u64>,
    pub at: Instant,
    pub ssrc: u32,
    pub payload_type: u8,
}

/// A VideoRoom subscriber that records every RTP packet it receives.
pub struct JanusSubscriber {
    pc: Arc<dyn PeerConnection>,
    /// The VideoRoom handle.
    pub handle: VideoRoomHandle,
    /// Janus's offer.
    pub offer: String,
    /// Filled by the reader tasks, in arrival order.
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
    /// Number of arrivals so far; changes wake [`JanusSubscriber::wait_until`].
    count: watch::Receiver<usize>,
}

impl JanusSubscriber {
    /// Subscribes to every stream of `feed` in `room` on a new handle of `session`, answers
    /// Janus's offer from a socket on `ip`, and waits until the connection is up.
    pub async fn connect(
        session: &Session,
        room: u64,
        feed: u64,
        ip: IpAddr,
    ) -> anyhow::Result<Self> {
        let handle = VideoRoomHandle::attach(session).await?;
        let subscription = handle
            .join_subscriber(room, &[feed], None)
            .await
            .context("join as subscriber")?;
        anyhow::ensure!(
            subscription
                .streams
                .iter()
                .any(|s| s.feed_id == Some(feed) && s.kind == "video"),
            "Janus offers no video of feed {feed}: {:?}",
            subscription.streams
        );
        let mut peer = Peer::new(ip).await?;
        let arrivals = Arc::new(Mutex::new(Vec::with_capacity(1 << 12)));
        let (count_tx, count) = watch::channel(0usize);
        let sink = Arc::clone(&arrivals);
        spawn_track_readers(&mut peer, move |packet| {
            let arrival = Arrival {
                id: packet_id(&packet.payload),
                at: Instant::now(),
                ssrc: packet.header.ssrc,
                payload_type: packet.header.payload_type,
            };
            let n = {
                let mut sink = sink.lock().expect("arrivals lock");
                sink.push(arrival);
                sink.len()
            };
            count_tx.send_replace(n);
        });
        peer.pc
            .set_remote_description(RTCSessionDescription::offer(subscription.offer.clone())?)
            .await
            .with_context(|| format!("applying Janus's offer:\n{}", subscription.offer))?;
        let answer = peer.pc.create_answer(None).await?;
        let answer = peer.complete_local(answer).await?;
        handle.start(&answer).await.context("start")?;
        peer.wait_connected("subscriber").await?;
        Ok(Self {
            pc: peer.pc,
            handle,
            offer: subscription.offer,
            arrivals,
            count,
        })
    }

    /// Packets received so far.
    pub fn received(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until `done(arrivals)` holds, re-checking on every arrival; false on timeout.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Arrival]) -> bool,
    ) -> bool {
        let mut count = self.count.clone();
        let arrivals = Arc::clone(&self.arrivals);
        tokio::time::timeout(
            timeout,
            count.wait_for(|_| done(&arrivals.lock().expect("arrivals lock"))),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Leaves the subscription, detaches the handle and closes the connection.
    pub async fn close(self) -> anyhow::Result<()> {
        let left = self.handle.leave().await.context("subscriber leave");
        let detached = self.handle.detach().await.context("subscriber detach");
        let _ = self.pc.close().await;
        left.and(detached)
    }
}
