//! Kaskade's media engine. `core` holds the forwarding decisions as plain structs with no I/O and
//! explicit time (sequence rewriting, packet cache, keyframe-request throttle, simulcast layer
//! selection); the actors that own rooms, participants and forwarders wrap them.

pub mod core;
