//! Kaskade's media engine. `core` holds the forwarding decisions as plain structs with no I/O and
//! explicit time (sequence rewriting, packet cache, keyframe-request throttle, simulcast layer
//! selection); `forwarder` composes them per published track for the packet path; `room` and
//! `directory` are the actors and index that own room membership and track directories;
//! `federation` is how a room's parts on several nodes of a mesh meet.

pub mod action_log;
pub mod admission;
pub mod core;
pub mod directory;
pub mod engine_api;
pub mod federation;
pub mod forwarder;
pub mod fuzzing;
pub mod participant;
pub mod roles;
pub mod room;
pub mod room_guard;

pub use directory::{RoomDirectory, RoomError};
pub use room::{RoomMsg, RoomSnapshot};
