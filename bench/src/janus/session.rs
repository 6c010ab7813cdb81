//! `janus::session`: the Janus core API over HTTP, plugin-agnostic — [`JanusClient`] (server
//! info, new sessions), [`Session`] (attach plugin handles, keepalive, destroy) with its event
//! pump, and [`Handle`] (plugin messages with an optional JSEP, and the handle's own events).
//!
//! # Event pump
//!
//! Janus answers a request in one of two ways: synchronously (`success` or `error` in the POST's
//! own response), or with an `ack` and later an `event` that carries the request's
//! `transaction`, delivered with everything else for the session on the long poll
//! `GET /janus/<session>`. Each [`Session`] runs one pump task that long-polls (up to
//! [`MAX_EVENTS`] messages per poll) and routes every message:
//!
//! - a message whose `transaction` has a waiter goes to that waiter (a oneshot registered
//!   *before* the POST is sent, so an event that overtakes the POST's `ack` is not lost);
//! - any other message with a `sender` goes to that handle's queue ([`HandleEvent`]:
//!   `webrtcup`, `media`, `slowlink`, `hangup`, unsolicited plugin events, …);
//! - `keepalive` (an empty poll after Janus's ~30 s hold) is dropped; `timeout` ends the session.
//!
//! The pump also sends a `keepalive` every [`KEEPALIVE_PERIOD`] (configurable per client, see
//! [`JanusClient::with_keepalive`]): Janus's HTTP transport counts only the *start* of each long
//! poll as activity, and holds an idle poll for 30 s. When the pump stops (Janus's `timeout`
//! event, a 404 or a core error on the long poll, a refused keepalive, or three failed polls in a
//! row) every waiter and every handle queue is closed and reports [`JanusError::SessionEnded`]
//! with the reason. The pump is aborted when the [`Session`] and all its [`Handle`]s are
//! dropped; Janus then reaps the session after its `session_timeout`, unless
//! [`Session::destroy`] was called.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::JanusError;
use super::http::ApiHttp;

/// Deadline of one synchronous request (POST and its answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an `ack`ed request may wait for its event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Most messages one long poll returns (`maxev`).
pub const MAX_EVENTS: usize = 64;
/// How often a session sends a keepalive by default (as janus.js does). Janus's HTTP transport
/// counts the start of each long poll as activity, but a poll is held up to 30 s, so a
/// `session_timeout` below that needs keepalives in between.
pub const KEEPALIVE_PERIOD: Duration = Duration::from_secs(25);
/// Deadline of one long poll: Janus holds it about 30 s before answering `keepalive`.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(45);
/// Consecutive failed long polls after which the pump gives up.
const PUMP_ATTEMPTS: u32 = 3;

/// A JSEP (SDP offer or answer) as Janus carries it next to a plugin message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jsep {
    #[serde(rename = "type")]
    pub kind: JsepKind,
    pub sdp: String,
}

/// Whether a [`Jsep`] is an offer or an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsepKind {
    Offer,
    Answer,
}

impl Jsep {
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self {
            kind: JsepKind::Offer,
            sdp: sdp.into(),
        }
    }

    pub fn answer(sdp: impl Into<String>) -> Self {
        Self {
            kind: JsepKind::Answer,
            sdp: sdp.into(),
        }
    }
}

/// A plugin's answer or event: its `plugindata.data` and the JSEP that came with it.
#[derive(Clone, Debug)]
pub struct PluginReply {
    pub data: Value,
    pub jsep: Option<Jsep>,
}

impl PluginReply {
    /// The plugin part of a Janus message, if it has one (errors are not checked).
    fn parse(msg: &Value) -> Option<Self> {
        let data = msg.get("plugindata")?.get("data")?.clone();
        let jsep = msg
            .get("jsep")
            .and_then(|j| serde_json::from_value(j.clone()).ok());
        Some(Self { data, jsep })
    }

    /// The plugin's `error_code` / `error` as an error.
    fn plugin_error(&self) -> Option<JanusError> {
        let code = self.data.get("error_code")?.as_i64()?;
        Some(JanusError::Plugin {
            code,
            reason: self.data["error"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// Something Janus told a handle on its own (not as the answer to one of its requests).
#[derive(Clone, Debug)]
pub enum HandleEvent {
    /// The handle's PeerConnection is up (ICE and DTLS done).
    WebrtcUp,
    /// Janus started (`receiving`) or stopped receiving media of `kind` on `mid`.
    Media {
        kind: String,
        mid: Option<String>,
        receiving: bool,
    },
    /// Janus saw losses on the handle's PeerConnection.
    SlowLink {
        uplink: bool,
        mid: Option<String>,
        lost: u64,
    },
    /// The PeerConnection was closed.
    HangUp { reason: String },
    /// The handle was detached.
    Detached,
    /// An unsolicited plugin event (e.g. VideoRoom's `publishers` / `unpublished` notices).
    Plugin(PluginReply),
    /// Anything else, as received.
    Other(Value),
}

impl HandleEvent {
    fn from_message(msg: Value) -> Self {
        let text = |key: &str| msg.get(key).and_then(Value::as_str).map(str::to_owned);
        match msg["janus"].as_str().unwrap_or_default() {
            "webrtcup" => Self::WebrtcUp,
            "media" => Self::Media {
                kind: text("type").unwrap_or_default(),
                mid: text("mid"),
                receiving: msg["receiving"].as_bool().unwrap_or(false),
            },
            "slowlink" => Self::SlowLink {
                uplink: msg["uplink"].as_bool().unwrap_or(false),
                mid: text("mid"),
                lost: msg["lost"].as_u64().unwrap_or(0),
            },
            "hangup" => Self::HangUp {
                reason: text("reason").unwrap_or_default(),
            },
            "detached" => Self::Detached,
            "event" => match PluginReply::parse(&msg) {
                Some(reply) => Self::Plugin(reply),
                None => Self::Other(msg),
            },
            _ => Self::Other(msg),
        }
    }
}

/// What `GET /janus/info` says about the server (the fields the benchmarks look at).
#[derive(Clone, Debug, Deserialize)]
pub struct ServerInfo {
    /// e.g. `1.1.2`.
    pub version_string: String,
    /// Seconds without activity after which Janus drops a session.
    #[serde(rename = "session-timeout")]
    pub session_timeout: u64,
    #[serde(rename = "ice-lite")]
    pub ice_lite: bool,
    /// Shared event-loop threads (`event_loops`); 0 = one thread per handle.
    #[serde(rename = "static-event-loops", default)]
    pub static_event_loops: u32,
    /// The address Janus uses for SDP (`general.interface`).
    #[serde(rename = "local-ip")]
    pub local_ip: String,
    /// Loaded plugins, by package name (`janus.plugin.videoroom`).
    #[serde(default)]
    pub plugins: serde_json::Map<String, Value>,
    /// Loaded transports (`janus.transport.http`).
    #[serde(default)]
    pub transports: serde_json::Map<String, Value>,
}

/// Janus core's `error` object as a [`JanusError::Api`], if `msg` is one.
fn core_error(msg: &Value) -> Option<JanusError> {
    if msg["janus"] != "error" {
        return None;
    }
    Some(JanusError::Api {
        code: msg["error"]["code"].as_i64().unwrap_or(0),
        reason: msg["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// `data.id` of a `success` answer (new session or handle id).
fn success_id(answer: &Value, request: &str) -> Result<u64, JanusError> {
    match answer["data"]["id"].as_u64() {
        Some(id) if answer["janus"] == "success" => Ok(id),
        _ => Err(JanusError::Unexpected {
            request: request.to_owned(),
            answer: answer.to_string(),
        }),
    }
}

static CLIENT_TRANSACTIONS: AtomicU64 = AtomicU64::new(0);

/// The Janus API at one base URL (`http://IP:PORT/janus`). Cheap to clone; clones share one
/// connection pool.
#[derive(Clone, Debug)]
pub struct JanusClient {
    http: ApiHttp,
    keepalive: Option<Duration>,
}

impl JanusClient {
    /// A client whose sessions send a keepalive every [`KEEPALIVE_PERIOD`].
    pub fn new(api_url: &str) -> Result<Self, JanusError> {
        Ok(Self {
            http: ApiHttp::new(api_url)?,
            keepalive: Some(KEEPALIVE_PERIOD),
        })
    }

    /// Sets how often new sessions send a keepalive; `None` relies on the long poll alone, which
    /// touches the session only when a poll starts (at least every ~30 s).
    pub fn with_keepalive(mut self, every: Option<Duration>) -> Self {
        self.keepalive = every;
        self
    }

    /// The API's base URL.
    pub fn api_url(&self) -> &str {
        self.http.base()
    }

    /// `GET /janus/info`.
    pub async fn info(&self) -> Result<ServerInfo, JanusError> {
        self.info_within(REQUEST_TIMEOUT).await
    }

    /// `GET /janus/info` with its own deadline (readiness probes use a short one).
    pub async fn info_within(&self, timeout: Duration) -> Result<ServerInfo, JanusError> {
        let answer = self.http.get("/info", timeout).await?;
        if let Some(e) = core_error(&answer) {
            return Err(e);
        }
        if answer["janus"] != "server_info" {
            return Err(JanusError::Unexpected {
                request: "info".into(),
                answer: answer.to_string(),
            });
        }
        serde_json::from_value(answer.clone()).map_err(|e| JanusError::Unexpected {
            request: "info".into(),
            answer: format!("{e}: {answer}"),
        })
    }

    /// Creates a session and starts its event pump.
    pub async fn create_session(&self) -> Result<Session, JanusError> {
        let n = CLIENT_TRANSACTIONS.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .http
            .post(
                "",
                &json!({"janus": "create", "transaction": format!("create-{n}")}),
                REQUEST_TIMEOUT,
            )
            .await?;
        if let Some(e) = core_error(&answer) {
            return Err(e);
        }
        let id = success_id(&answer, "create")?;
        let shared = Arc::new(Shared {
            http: self.http.clone(),
            id,
            next_transaction: AtomicU64::new(0),
            routes: Mutex::new(Routes::default()),
        });
        let pump = tokio::spawn(pump(Arc::clone(&shared), self.keepalive)).abort_handle();
        Ok(Session {
            core: Arc::new(Core { shared, pump }),
        })
    }
}

/// Where the pump sends what it reads.
#[derive(Default)]
struct Routes {
    /// Waiters for asynchronous answers, by transaction.
    pending: HashMap<String, oneshot::Sender<Value>>,
    /// Event queues of the session's live handles, by handle id.
    handles: HashMap<u64, mpsc::UnboundedSender<HandleEvent>>,
    /// Why the pump stopped; set once.
    ended: Option<String>,
}

/// What a session's users and its pump share.
struct Shared {
    http: ApiHttp,
    id: u64,
    next_transaction: AtomicU64,
    routes: Mutex<Routes>,
}

/// How the answer to a request arrives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// In the POST's response (`success`, or `ack` for keepalive).
    Immediate,
    /// In the POST's response if the plugin answers synchronously, else as an event after `ack`.
    EventAfterAck,
}

impl Shared {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended_error(&self, routes: &Routes) -> JanusError {
        JanusError::SessionEnded {
            session: self.id,
            reason: routes
                .ended
                .clone()
                .unwrap_or_else(|| "event pump stopped".into()),
        }
    }

    /// Stops routing: records `reason` and closes every waiter and handle queue.
    fn end(&self, routes: &mut Routes, reason: String) {
        routes.ended.get_or_insert(reason);
        routes.pending.clear();
        routes.handles.clear();
    }

    /// Routes one message read from the long poll.
    fn dispatch(&self, msg: Value) {
        let kind = msg["janus"].as_str().unwrap_or_default().to_owned();
        if kind == "keepalive" {
            return;
        }
        let mut routes = self.routes();
        if let Some(waiter) = msg["transaction"]
            .as_str()
            .and_then(|t| routes.pending.remove(t))
        {
            // The requester may have given up (timeout); then the answer is dropped.
            let _ = waiter.send(msg);
            return;
        }
        if kind == "timeout" {
            self.end(
                &mut routes,
                "Janus timed the session out (no activity within session_timeout)".into(),
            );
            return;
        }
        if let Some(sender) = msg["sender"].as_u64()
            && let Some(queue) = routes.handles.get(&sender)
            && queue.send(HandleEvent::from_message(msg)).is_err()
        {
            routes.handles.remove(&sender);
        }
    }

    /// Sends `body` (plus a fresh transaction) to `path` below the session and returns the final
    /// answer: the POST's own, or the event Janus sends after `ack` when `answer` says so.
    async fn request(
        &self,
        path: &str,
        mut body: Value,
        answer: Answer,
        what: &str,
    ) -> Result<Value, JanusError> {
        let transaction = format!("t{}", self.next_transaction.fetch_add(1, Ordering::Relaxed));
        body["transaction"] = Value::String(transaction.clone());
        let waiter = match answer {
            Answer::Immediate => None,
            Answer::EventAfterAck => {
                let (tx, rx) = oneshot::channel();
                let mut routes = self.routes();
                if routes.ended.is_some() {
                    return Err(self.ended_error(&routes));
                }
                routes.pending.insert(transaction.clone(), tx);
                Some(rx)
            }
        };
        let unregister = || {
            self.routes().pending.remove(&transaction);
        };
        let reply = match self
            .http
            .post(&format!("/{}{path}", self.id), &body, REQUEST_TIMEOUT)
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                unregister();
                return Err(e);
            }
        };
        let event = match waiter {
            Some(rx) if reply["janus"] == "ack" => rx,
            _ => {
                unregister();
                return match core_error(&reply) {
                    Some(e) => Err(e),
                    None => Ok(reply),
                };
            }
        };
        match tokio::time::timeout(EVENT_TIMEOUT, event).await {
            Ok(Ok(msg)) => match core_error(&msg) {
                Some(e) => Err(e),
                None => Ok(msg),
            },
            Ok(Err(_closed)) => Err(self.ended_error(&self.routes())),
            Err(_elapsed) => {
                unregister();
                Err(JanusError::EventTimeout {
                    request: what.to_owned(),
                    timeout: EVENT_TIMEOUT,
                })
            }
        }
    }
}

/// The session's pump (see the module doc): the long poll and, if `keepalive` is set, a
/// keepalive request every `keepalive`, in one task, until the session ends.
async fn pump(shared: Arc<Shared>, keepalive: Option<Duration>) {
    let reason = match keepalive {
        Some(every) => tokio::select! {
            reason = poll_events(&shared) => reason,
            reason = keep_alive(&shared, every) => reason,
        },
        None => poll_events(&shared).await,
    };
    if let Some(reason) = reason {
        shared.end(&mut shared.routes(), reason);
    }
}

/// Long-polls the session's events and routes them; returns why it stopped (`None` when routing
/// already ended the session, e.g. on Janus's `timeout` event).
async fn poll_events(shared: &Shared) -> Option<String> {
    let path = format!("/{}?maxev={MAX_EVENTS}", shared.id);
    let mut failures = 0;
    loop {
        match shared.http.get(&path, LONG_POLL_TIMEOUT).await {
            Ok(answer) => {
                failures = 0;
                let messages = match answer {
                    Value::Array(list) => list,
                    one => vec![one],
                };
                let mut gone = None;
                for msg in messages {
                    match core_error(&msg) {
                        Some(e) => gone = Some(e.to_string()),
                        None => shared.dispatch(msg),
                    }
                }
                if gone.is_some() {
                    return gone;
                }
                if shared.routes().ended.is_some() {
                    return None;
                }
            }
            // The HTTP transport answers a long poll for a session it no longer has with 404.
            Err(JanusError::Status { status: 404, .. }) => {
                return Some("Janus no longer knows the session (404 on its long poll)".into());
            }
            Err(e) => {
                failures += 1;
                if failures >= PUMP_ATTEMPTS {
                    return Some(format!("{failures} long polls failed, last: {e}"));
                }
                // Back off before polling again (a transport hiccup, not a synchronisation).
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
            }
        }
    }
}

/// Sends a `keepalive` every `every`; returns when Janus no longer knows the session.
async fn keep_alive(shared: &Shared, every: Duration) -> Option<String> {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = shared
            .request(
                "",
                json!({"janus": "keepalive"}),
                Answer::Immediate,
                "keepalive",
            )
            .await;
        // Transport errors are the long poll's to judge; a refused session is final.
        if let Err(e @ JanusError::Api { .. }) = sent {
            return Some(format!("keepalive refused: {e}"));
        }
    }
}

/// Owned by a session and its handles; stops the pump when the last of them is dropped.
struct Core {
    shared: Arc<Shared>,
    pump: tokio::task::AbortHandle,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// A Janus session with its event pump.
pub struct Session {
    core: Arc<Core>,
}

impl Session {
    /// Janus's id for the session.
    pub fn id(&self) -> u64 {
        self.core.shared.id
    }

    /// Why the session ended, if it has (the pump stopped).
    pub fn ended(&self) -> Option<String> {
        self.core.shared.routes().ended.clone()
    }

    /// Attaches a handle to `plugin` (e.g. `janus.plugin.videoroom`).
    pub async fn attach(&self, plugin: &str) -> Result<Handle, JanusError> {
        let shared = &self.core.shared;
        let answer = shared
            .request(
                "",
                json!({"janus": "attach", "plugin": plugin}),
                Answer::Immediate,
                "attach",
            )
            .await?;
        let id = success_id(&answer, "attach")?;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut routes = shared.routes();
            if routes.ended.is_some() {
                return Err(shared.ended_error(&routes));
            }
            routes.handles.insert(id, tx);
        }
        Ok(Handle {
            core: Arc::clone(&self.core),
            id,
            events: rx,
            backlog: VecDeque::new(),
        })
    }

    /// An explicit `keepalive` (the pump sends them on its own; see [`JanusClient::with_keepalive`]).
    pub async fn keepalive(&self) -> Result<(), JanusError> {
        let answer = self
            .core
            .shared
            .request(
                "",
                json!({"janus": "keepalive"}),
                Answer::Immediate,
                "keepalive",
            )
            .await?;
        if answer["janus"] != "ack" {
            return Err(JanusError::Unexpected {
                request: "keepalive".into(),
                answer: answer.to_string(),
            });
        }
        Ok(())
    }

    /// Destroys the session in Janus (detaching its handles, closing their PeerConnections).
    pub async fn destroy(self) -> Result<(), JanusError> {
        let answer = self
            .core
            .shared
            .request(
                "",
                json!({"janus": "destroy"}),
                Answer::Immediate,
                "destroy",
            )
            .await?;
        let shared = &self.core.shared;
        shared.end(&mut shared.routes(), "destroyed by the client".into());
        if answer["janus"] != "success" {
            return Err(JanusError::Unexpected {
                request: "destroy".into(),
                answer: answer.to_string(),
            });
        }
        Ok(())
    }
}

/// A plugin handle: a context for one PeerConnection in Janus.
pub struct Handle {
    core: Arc<Core>,
    id: u64,
    events: mpsc::UnboundedReceiver<HandleEvent>,
    /// Events read while waiting for another one, in arrival order.
    backlog: VecDeque<HandleEvent>,
}

impl Handle {
    /// Janus's id for the handle (the `sender` of its events).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The id of the session the handle belongs to.
    pub fn session_id(&self) -> u64 {
        self.core.shared.id
    }

    /// Sends `body` to the plugin (with `jsep` if given) and returns the plugin's answer, whether
    /// it came synchronously or as the event after an `ack`. A plugin `error_code` is an error.
    pub async fn message(
        &self,
        body: Value,
        jsep: Option<Jsep>,
    ) -> Result<PluginReply, JanusError> {
        let what = format!(
            "{} request",
            body["request"].as_str().unwrap_or("plugin message")
        );
        let mut msg = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = serde_json::to_value(jsep).expect("a JSEP serialises");
        }
        let answer = self
            .core
            .shared
            .request(&format!("/{}", self.id), msg, Answer::EventAfterAck, &what)
            .await?;
        let reply = PluginReply::parse(&answer).ok_or_else(|| JanusError::Unexpected {
            request: what,
            answer: answer.to_string(),
        })?;
        match reply.plugin_error() {
            Some(e) => Err(e),
            None => Ok(reply),
        }
    }

    /// The next event of this handle, at most `timeout` from now.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<HandleEvent, JanusError> {
        self.wait_event("an event", timeout, |_| true).await
    }

    /// The first event that satisfies `pred`, at most `timeout` from now. Events that do not are
    /// kept, in order, for later calls.
    pub async fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&HandleEvent) -> bool,
    ) -> Result<HandleEvent, JanusError> {
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            return Ok(self.backlog.remove(i).expect("index from position"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if pred(&event) => return Ok(event),
                Ok(Some(event)) => self.backlog.push_back(event),
                Ok(None) => {
                    let shared = &self.core.shared;
                    return Err(shared.ended_error(&shared.routes()));
                }
                Err(_elapsed) => {
                    return Err(JanusError::EventTimeout {
                        request: format!("{what} on handle {}", self.id),
                        timeout,
                    });
                }
            }
        }
    }

    /// Waits for `webrtcup`: Janus's side of the handle's PeerConnection is up.
    pub async fn wait_webrtcup(&mut self, timeout: Duration) -> Result<(), JanusError> {
        self.wait_event("webrtcup", timeout, |e| matches!(e, HandleEvent::WebrtcUp))
            .await
            .map(drop)
    }

    /// Closes the handle's PeerConnection in Janus (the handle stays attached).
    pub async fn hangup(&self) -> Result<(), JanusError> {
        self.core
            .shared
            .request(
                &format!("/{}", self.id),
                json!({"janus": "hangup"}),
                Answer::Immediate,
                "hangup",
            )
            .await
            .map(drop)
    }

    /// Detaches the handle from its plugin.
    pub async fn detach(self) -> Result<(), JanusError> {
        let answer = self
            .core
            .shared
            .request(
                &format!("/{}", self.id),
                json!({"janus": "detach"}),
                Answer::Immediate,
                "detach",
            )
            .await?;
        if answer["janus"] != "success" {
            return Err(JanusError::Unexpected {
                request: "detach".into(),
                answer: answer.to_string(),
            });
        }
        Ok(())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.shared.routes().handles.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_handle_events() {
        let ev = HandleEvent::from_message(json!({"janus": "webrtcup", "sender": 7}));
        assert!(matches!(ev, HandleEvent::WebrtcUp));
        let ev = HandleEvent::from_message(
            json!({"janus": "media", "sender": 7, "type": "video", "mid": "0", "receiving": true}),
        );
        assert!(matches!(
            ev,
            HandleEvent::Media { ref kind, ref mid, receiving: true }
                if kind == "video" && mid.as_deref() == Some("0")
        ));
        let ev = HandleEvent::from_message(json!({
            "janus": "event", "sender": 7,
            "plugindata": {"plugin": "janus.plugin.videoroom",
                           "data": {"videoroom": "event", "unpublished": 42}},
        }));
        let HandleEvent::Plugin(reply) = ev else {
            panic!("not a plugin event: {ev:?}")
        };
        assert_eq!(reply.data["unpublished"], 42);
        assert!(reply.jsep.is_none());
    }

    #[test]
    fn plugin_and_core_errors_become_typed_errors() {
        let reply = PluginReply::parse(&json!({
            "janus": "event",
            "plugindata": {"data": {"videoroom": "event", "error_code": 426,
                                    "error": "No such room (1234)"}},
        }))
        .unwrap();
        assert!(matches!(
            reply.plugin_error(),
            Some(JanusError::Plugin { code: 426, ref reason }) if reason.contains("1234")
        ));
        let err = core_error(&json!({"janus": "error",
                                     "error": {"code": 458, "reason": "No such session"}}));
        assert!(matches!(err, Some(JanusError::Api { code: 458, .. })));
        assert!(core_error(&json!({"janus": "ack"})).is_none());
    }

    #[test]
    fn jsep_has_janus_field_names() {
        let v = serde_json::to_value(Jsep::answer("v=0")).unwrap();
        assert_eq!(v, json!({"type": "answer", "sdp": "v=0"}));
        let j: Jsep = serde_json::from_value(json!({"type": "offer", "sdp": "v=0"})).unwrap();
        assert_eq!(j, Jsep::offer("v=0"));
    }

    #[tokio::test]
    async fn routes_transactions_to_waiters_and_the_rest_to_handles() {
        let shared = Shared {
            http: ApiHttp::new("http://127.0.0.1:9/janus").unwrap(),
            id: 1,
            next_transaction: AtomicU64::new(0),
            routes: Mutex::new(Routes::default()),
        };
        let (wtx, wrx) = oneshot::channel();
        let (htx, mut hrx) = mpsc::unbounded_channel();
        shared.routes().pending.insert("t0".into(), wtx);
        shared.routes().handles.insert(5, htx);
        shared.dispatch(json!({"janus": "keepalive"}));
        shared.dispatch(json!({"janus": "webrtcup", "sender": 5}));
        shared.dispatch(json!({"janus": "event", "transaction": "t0", "sender": 5}));
        assert_eq!(wrx.await.unwrap()["transaction"], "t0");
        assert!(matches!(hrx.recv().await, Some(HandleEvent::WebrtcUp)));
        assert!(hrx.try_recv().is_err(), "the answer went to the handle too");
        shared.dispatch(json!({"janus": "timeout", "session_id": 1}));
        assert!(
            hrx.recv().await.is_none(),
            "a timed-out session keeps its queues"
        );
        assert!(shared.routes().ended.is_some());
    }
}
