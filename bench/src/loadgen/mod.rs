//! `loadgen`: the load generator — real ICE + DTLS-SRTP WebRTC sessions, many per process, no
//! browser — driven against an SFU through a signalling driver.
//!
//! - `synthetic`: synthetic media (Opus-sized audio, paced VP8 with simulcast layers) and the
//!   payload marker with the send time (pure);
//! - `measure`: per-stream latency histogram, loss, jitter and rate, mergeable (pure);
//! - `keyframe_requests`: the interceptor that passes PLI/FIR up to a publisher session;
//! - `session`: one WebRTC session on the sans-I/O `rtc` core, publisher or subscriber (no I/O);
//! - `client_loop`: the I/O shell — event-loop threads, each owning many sessions and their UDP
//!   sockets, and the async handle the signalling side talks to;
//! - `signalling`: the [`SfuSignalling`] trait and Kaskade's WHIP/WHEP implementation;
//! - `proc_stats`: CPU time and memory of a process, UDP drop counters, from `/proc`;
//! - `prom_text`: sums and histogram quantiles from an SFU's Prometheus `/metrics` (pure);
//! - `error`: [`LoadgenError`], [`SignallingError`].

pub mod client_loop;
pub mod error;
pub mod keyframe_requests;
pub mod measure;
pub mod proc_stats;
pub mod prom_text;
pub mod session;
pub mod signalling;
pub mod synthetic;

pub use client_loop::{ClientLoops, LoopReport, SessionHandle};
pub use error::{LoadgenError, SignallingError};
pub use signalling::{KaskadeWhipWhep, LayerCap, Negotiator, SessionResource, SfuSignalling};
