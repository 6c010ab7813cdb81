//! The WebRTC edge: one UDP socket shared by every session, demultiplexed by ICE ufrag and remote
//! address, and one event loop (the engine) that owns every peer connection and the forwarders.
//! Control reaches the engine through [`EngineHandle`]; packets never leave its thread.

pub mod datagram;
pub mod engine;
pub mod handle;
pub mod offer;
pub mod peer_factory;

pub use handle::{EdgeError, EdgeEvent, EngineCommand, EngineHandle, SessionKey, TrackDescriptor};
