//! Kaskade's wire types. `signal` holds the JSON messages spoken over the `/ws` WebSocket between a
//! client (the web page, a test client) and a node; `relay` the inter-node protocol (QUIC control
//! frames and media datagrams); `ids` the identifiers shared by all of them.
//! This crate does no I/O: it types, encodes, decodes and bounds messages, nothing more.

pub mod fuzzing;
pub mod ids;
pub mod relay;
pub mod signal;

pub use ids::{ParticipantId, RoomName, TrackId};
