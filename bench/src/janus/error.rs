//! `janus::error`: what can go wrong talking to Janus or running it — [`JanusError`] for the
//! HTTP/JSON API (transport, Janus core and VideoRoom plugin errors, missing events) and
//! [`JanusProcessError`] for writing the config and starting the process.

use std::path::PathBuf;
use std::time::Duration;

/// A failed exchange with Janus's HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// The API URL does not parse as a plain-HTTP URI.
    #[error("bad Janus API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The request could not be sent or no response head came back.
    #[error("{method} {url}: {source}")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The response body could not be read.
    #[error("{method} {url}: reading the body: {source}")]
    Body {
        method: &'static str,
        url: String,
        #[source]
        source: hyper::Error,
    },
    /// No complete answer within the exchange's deadline.
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: &'static str,
        url: String,
        timeout: Duration,
    },
    /// An HTTP status other than 200 (Janus answers API errors with 200 and a JSON error).
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The body is not the JSON Janus should send.
    #[error("{method} {url}: bad JSON ({source}): {body}")]
    Json {
        method: &'static str,
        url: String,
        body: String,
        #[source]
        source: serde_json::Error,
    },
    /// Janus core refused the request (`{"janus": "error", "error": {code, reason}}`), e.g. 458
    /// no such session, 459 no such handle.
    #[error("Janus error {code}: {reason}")]
    Api { code: i64, reason: String },
    /// The VideoRoom plugin refused the request (`error_code` / `error` in its data), e.g. 426
    /// no such room, 428 no such feed.
    #[error("VideoRoom error {code}: {reason}")]
    Plugin { code: i64, reason: String },
    /// Janus answered, but not with what the request should produce.
    #[error("unexpected answer to {request}: {answer}")]
    Unexpected { request: String, answer: String },
    /// Janus acknowledged an asynchronous request but its event did not arrive in time.
    #[error("no event for {request} within {timeout:?}")]
    EventTimeout { request: String, timeout: Duration },
    /// The session's event pump stopped (session timed out or destroyed, Janus gone); nothing
    /// more will arrive on it.
    #[error("Janus session {session} ended: {reason}")]
    SessionEnded { session: u64, reason: String },
}

/// A Janus process that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum JanusProcessError {
    /// No `janus` binary (or no VideoRoom/HTTP modules) on this machine.
    #[error("{what} not found: install Janus (Debian: `apt-get install -y janus`)")]
    NotInstalled { what: String },
    /// A configuration value that cannot be written into a Janus config file.
    #[error("bad Janus configuration: {0}")]
    BadConfig(String),
    /// Writing the temporary config directory failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The process could not be spawned.
    #[error("starting janus: {0}")]
    Spawn(String),
    /// The process exited before its HTTP API answered.
    #[error("janus exited before its HTTP API answered ({status})\n{diagnostics}")]
    Exited { status: String, diagnostics: String },
    /// The HTTP API did not answer `GET /janus/info` in time.
    #[error(
        "janus's HTTP API did not answer within {timeout:?} (last error: {last_error})\n{diagnostics}"
    )]
    NotReady {
        timeout: Duration,
        last_error: String,
        diagnostics: String,
    },
}
