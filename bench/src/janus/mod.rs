//! `janus`: Janus 1.1 (VideoRoom plugin over the HTTP transport) as the reference server that the
//! load generator runs the same scenarios against, on the same machine, as Kaskade.
//!
//! - `config`: the minimal config (VideoRoom + HTTP only, ICE-lite on one veth interface);
//! - `process`: [`JanusProcess`], Janus started inside a network namespace, its pid and CPU time;
//! - `http`: the pooled hyper HTTP/1 client under the API (crate-private);
//! - `session`: the core API — [`JanusClient`], [`Session`] with its event pump, [`Handle`];
//! - `videoroom`: the VideoRoom requests on a handle — [`VideoRoomHandle`];
//! - `signalling`: [`JanusVideoRoom`], the load generator's driver for VideoRoom;
//! - `error`: [`JanusError`], [`JanusProcessError`].
//!
//! `peer.rs` in this folder is deliberately *not* a module of the library: it holds the
//! webrtc-rs publisher and subscriber that talk to Janus, and is compiled into the tests and
//! binaries that need it with `#[path]` (webrtc-rs pulls in `rkyv`, whose extra `PartialEq`
//! impls break type inference in every crate that links a library using it; see
//! `src/bin/cascade_hop.rs`).
//!
//! Janus cannot gather ICE candidates on `lo` alone, so it always runs inside a
//! [`kaskade_tests::NetNs`] on the namespace's veth address, and its WebRTC clients must be in
//! that namespace too (or on the host end of the veth pair).

pub mod config;
pub mod error;
mod http;
pub mod process;
pub mod session;
pub mod signalling;
pub mod videoroom;

pub use config::JanusConfig;
pub use error::{JanusError, JanusProcessError};
pub use process::JanusProcess;
pub use session::{Handle, HandleEvent, JanusClient, Jsep, JsepKind, PluginReply, Session};
pub use signalling::JanusVideoRoom;
pub use videoroom::{RoomOptions, VideoRoomHandle};
