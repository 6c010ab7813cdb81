//! `loadgen::error`: the load generator's typed errors — [`LoadgenError`] for sessions and their
//! event loops, [`SignallingError`] for the SFU's HTTP signalling.

use std::time::Duration;

/// A WebRTC session or the event loop that runs it failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The `rtc` stack refused something (offer, answer, candidate, packet).
    #[error("webrtc: {0}")]
    Rtc(#[from] rtc::shared::error::Error),
    /// A socket operation failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The session does not exist (closed, failed, or never opened on this loop).
    #[error("unknown session {0}")]
    UnknownSession(u64),
    /// The session is not in the state the request needs.
    #[error("session {id}: {reason}")]
    BadState { id: u64, reason: String },
    /// ICE + DTLS did not reach `connected`.
    #[error("session {id}: not connected within {after:?} ({state})")]
    ConnectTimeout {
        id: u64,
        after: Duration,
        state: String,
    },
    /// The connection went to `failed` or `closed`.
    #[error("session {id}: connection {state}")]
    ConnectionFailed { id: u64, state: String },
    /// The event loop thread is gone.
    #[error("the event loop stopped")]
    LoopGone,
    /// Signalling with the SFU failed.
    #[error(transparent)]
    Signalling(#[from] SignallingError),
    /// Janus's API refused or failed a request.
    #[error("janus: {0}")]
    Janus(#[from] crate::janus::JanusError),
}

/// The SFU's signalling (HTTP) failed.
#[derive(Debug, thiserror::Error)]
pub enum SignallingError {
    #[error("bad URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{method} {url}: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {url}: reading the body: {source}")]
    Body {
        method: &'static str,
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} {url}: no answer within {after:?}")]
    Timeout {
        method: &'static str,
        url: String,
        after: Duration,
    },
    #[error("{method} {url}: status {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: more than {max} redirects")]
    TooManyRedirects { url: String, max: usize },
    #[error("{url}: {reason}")]
    BadResponse { url: String, reason: String },
}
