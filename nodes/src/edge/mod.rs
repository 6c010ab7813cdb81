//! The WebRTC edge: one UDP socket shared by every session, demultiplexed by ICE ufrag and remote
//! address, and one event loop (the engine) that owns every peer connection and the forwarders.
//! Control reaches the engine through `kaskade_mesh::engine_api`; packets never leave its thread.

pub mod bandwidth;
pub mod batch_send;
pub mod datagram;
pub mod engine;
pub mod feedback_interceptor;
pub mod h264_profile;
pub mod offer;
pub mod peer_factory;

pub use kaskade_mesh::engine_api::{
    EdgeError, EdgeEvent, EngineCommand, EngineHandle, EventSink, SessionKey, TrackDescriptor,
};
