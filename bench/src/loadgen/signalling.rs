//! `loadgen::signalling`: how a load-generator session meets an SFU.
//!
//! Owns the [`SfuSignalling`] trait — publish, subscribe, close — that every SFU driver
//! implements, the [`Negotiator`] trait through which a driver asks the WebRTC side for an offer
//! or an answer (Kaskade's WHEP lets the client offer; Janus's VideoRoom offers itself, so the
//! direction is the driver's choice, not the caller's), [`SessionResource`], and the Kaskade
//! implementation [`KaskadeWhipWhep`]: `POST /whip/{room}` and `POST /whep/{room}[/{publisher}]`
//! with the complete SDP offer, `307` redirects followed (the same offer POSTed again where the
//! `Location` points), `201 Created` with the answer and the session's `Location`, `DELETE` on it
//! at the end. HTTP is hyper-util's pooled client ([`HttpClient`]), which also reads `/metrics`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::{LoadgenError, SignallingError};

/// Deadline of one HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// The WebRTC side of one session, as a signalling driver sees it.
#[async_trait::async_trait]
pub trait Negotiator: Send {
    /// The session's complete offer (with its ICE candidates).
    async fn offer(&mut self) -> Result<String, LoadgenError>;
    /// Applies the SFU's answer to [`offer`](Self::offer)'s SDP.
    async fn accept_answer(&mut self, answer: String) -> Result<(), LoadgenError>;
    /// Answers an offer the SFU made (for SFUs that offer to subscribers).
    async fn answer(&mut self, offer: String) -> Result<String, LoadgenError>;
}

/// What [`SfuSignalling::close`] needs to end a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionResource {
    /// Driver-specific handle: for WHIP/WHEP the absolute URL of the session's `Location`.
    pub id: String,
    /// The publisher's id in the SFU, when the SFU names it (Kaskade's `X-Kaskade-Publisher`).
    pub publisher: Option<String>,
}

/// The highest simulcast layer a subscription wants (the SFU's default when not given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerCap {
    Low,
    Medium,
    High,
}

impl LayerCap {
    /// `low`, `medium`, `high` (Kaskade's WHEP `?layer=`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// One SFU's signalling, as the load generator drives it.
#[async_trait::async_trait]
pub trait SfuSignalling: Send + Sync {
    /// A short name for reports (`kaskade`, `janus`).
    fn name(&self) -> &str;

    /// Publishes `peer`'s media in `room`.
    async fn publish(
        &self,
        room: &str,
        peer: &mut dyn Negotiator,
    ) -> Result<SessionResource, LoadgenError>;

    /// Subscribes `peer` to `publisher` in `room` (to the room's first publisher when `None`),
    /// receiving at most simulcast layer `layer`.
    async fn subscribe(
        &self,
        room: &str,
        publisher: Option<&str>,
        layer: Option<LayerCap>,
        peer: &mut dyn Negotiator,
    ) -> Result<SessionResource, LoadgenError>;

    /// Ends a session made by [`publish`](Self::publish) or [`subscribe`](Self::subscribe).
    async fn close(&self, resource: &SessionResource) -> Result<(), LoadgenError>;

    /// Waits until `tracks` published tracks of `room` can be subscribed to through this SFU
    /// (an SFU whose `publish` returns only once the media is up needs no wait).
    async fn wait_tracks(
        &self,
        _room: &str,
        _tracks: usize,
        _timeout: Duration,
    ) -> Result<(), LoadgenError> {
        Ok(())
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The URL that gave this answer (after redirects).
    pub url: Uri,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// hyper-util's pooled HTTP/1 client with deadlines and `307`/`308` redirects followed.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { client }
    }

    /// `GET url` (expects `200`), the body as text.
    pub async fn get_text(&self, url: &str) -> Result<String, SignallingError> {
        let uri = parse_url(url)?;
        let r = self.request(Method::GET, uri, None, Bytes::new()).await?;
        if r.status != StatusCode::OK {
            return Err(status_error("GET", &r));
        }
        Ok(r.text())
    }

    /// One request; `307`/`308` answers are followed with the same method and body.
    pub async fn request(
        &self,
        method: Method,
        mut url: Uri,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<HttpResponse, SignallingError> {
        let name = method_name(&method);
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = hyper::Request::builder()
                .method(method.clone())
                .uri(url.clone());
            if let Some(ct) = content_type {
                builder = builder.header(header::CONTENT_TYPE, ct);
            }
            let request =
                builder
                    .body(Full::new(body.clone()))
                    .map_err(|e| SignallingError::BadUrl {
                        url: url.to_string(),
                        reason: e.to_string(),
                    })?;
            let exchange =
                async {
                    let response = self.client.request(request).await.map_err(|source| {
                        SignallingError::Http {
                            method: name,
                            url: url.to_string(),
                            source,
                        }
                    })?;
                    let (parts, body) = response.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map_err(|source| SignallingError::Body {
                            method: name,
                            url: url.to_string(),
                            source,
                        })?
                        .to_bytes();
                    Ok::<_, SignallingError>((parts, body))
                };
            let (parts, body_bytes) = tokio::time::timeout(HTTP_TIMEOUT, exchange)
                .await
                .map_err(|_| SignallingError::Timeout {
                    method: name,
                    url: url.to_string(),
                    after: HTTP_TIMEOUT,
                })??;
            let response = HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body: body_bytes,
                url: url.clone(),
            };
            if matches!(
                response.status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) {
                let location = response.header(header::LOCATION).ok_or_else(|| {
                    SignallingError::BadResponse {
                        url: url.to_string(),
                        reason: format!("{} without Location", response.status),
                    }
                })?;
                url = resolve(&url, location)?;
                continue;
            }
            return Ok(response);
        }
        Err(SignallingError::TooManyRedirects {
            url: url.to_string(),
            max: MAX_REDIRECTS,
        })
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "HTTP",
    }
}

fn status_error(method: &'static str, r: &HttpResponse) -> SignallingError {
    SignallingError::Status {
        method,
        url: r.url.to_string(),
        status: r.status.as_u16(),
        body: r.text().trim().to_owned(),
    }
}

/// Parses an absolute `http://` URL.
pub fn parse_url(url: &str) -> Result<Uri, SignallingError> {
    let uri: Uri =
        url.parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SignallingError::BadUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(SignallingError::BadUrl {
            url: url.to_owned(),
            reason: "expected http://HOST:PORT/PATH".into(),
        });
    }
    Ok(uri)
}

/// `location` (absolute, or an absolute path) relative to `base`.
pub fn resolve(base: &Uri, location: &str) -> Result<Uri, SignallingError> {
    if location.starts_with('/') {
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        let scheme = base.scheme_str().unwrap_or("http");
        return parse_url(&format!("{scheme}://{authority}{location}"));
    }
    parse_url(location)
}

/// Kaskade's WHIP and WHEP endpoints on one node (or a mesh entry node that redirects).
#[derive(Clone, Debug)]
pub struct KaskadeWhipWhep {
    http: HttpClient,
    base: String,
}

impl KaskadeWhipWhep {
    /// Endpoints below `base` (`http://IP:PORT`).
    pub fn new(base: &str) -> Result<Self, SignallingError> {
        let base = base.trim_end_matches('/').to_owned();
        parse_url(&base)?;
        Ok(Self {
            http: HttpClient::new(),
            base,
        })
    }

    /// The HTTP client, e.g. to read the node's `/metrics`.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `peer`'s offer to `path` and applies the `201` answer.
    async fn offer_answer(
        &self,
        path: &str,
        peer: &mut dyn Negotiator,
    ) -> Result<SessionResource, LoadgenError> {
        let offer = peer.offer().await?;
        let url = parse_url(&self.url(path))?;
        let r = self
            .http
            .request(
                Method::POST,
                url,
                Some("application/sdp"),
                Bytes::from(offer),
            )
            .await?;
        if r.status != StatusCode::CREATED {
            return Err(status_error("POST", &r).into());
        }
        let location = r
            .header(header::LOCATION)
            .ok_or_else(|| SignallingError::BadResponse {
                url: r.url.to_string(),
                reason: "201 without Location".into(),
            })?;
        let resource = SessionResource {
            id: resolve(&r.url, location)?.to_string(),
            publisher: r.header("x-kaskade-publisher").map(str::to_owned),
        };
        peer.accept_answer(r.text()).await?;
        Ok(resource)
    }
}

#[async_trait::async_trait]
impl SfuSignalling for KaskadeWhipWhep {
    fn name(&self) -> &str {
        "kaskade"
    }

    async fn publish(
        &self,
        room: &str,
        peer: &mut dyn Negotiator,
    ) -> Result<SessionResource, LoadgenError> {
        self.offer_answer(&format!("/whip/{room}"), peer).await
    }

    async fn subscribe(
        &self,
        room: &str,
        publisher: Option<&str>,
        layer: Option<LayerCap>,
        peer: &mut dyn Negotiator,
    ) -> Result<SessionResource, LoadgenError> {
        let mut path = match publisher {
            Some(p) => format!("/whep/{room}/{p}"),
            None => format!("/whep/{room}"),
        };
        if let Some(layer) = layer {
            path = format!("{path}?layer={}", layer.name());
        }
        self.offer_answer(&path, peer).await
    }

    /// Polls `GET /api/rooms/{room}` until it lists `tracks` tracks (remote ones included).
    async fn wait_tracks(
        &self,
        room: &str,
        tracks: usize,
        timeout: Duration,
    ) -> Result<(), LoadgenError> {
        let url = self.url(&format!("/api/rooms/{room}"));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.http.get_text(&url).await {
                Ok(text) => {
                    let listed = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["tracks"].as_array().map(Vec::len))
                        .unwrap_or(0);
                    if listed >= tracks {
                        return Ok(());
                    }
                    format!("{listed} tracks listed")
                }
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(SignallingError::BadResponse {
                    url,
                    reason: format!("{tracks} tracks not listed within {timeout:?} ({last})"),
                }
                .into());
            }
            // The node announces tracks only through this API (or the WebSocket protocol).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn close(&self, resource: &SessionResource) -> Result<(), LoadgenError> {
        let url = parse_url(&resource.id)?;
        let r = self
            .http
            .request(Method::DELETE, url, None, Bytes::new())
            .await?;
        if !r.status.is_success() {
            return Err(status_error("DELETE", &r).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A request as the fake server saw it: method, path, body.
    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

    /// A one-purpose HTTP/1.1 server for the tests: answers each request with
    /// `respond(method, path)` (status line + headers, the body), closing the connection.
    async fn fake_server(
        respond: impl Fn(&str, &str) -> (String, String) + Send + Sync + 'static,
    ) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        let respond = Arc::new(respond);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (log, respond) = (Arc::clone(&log), Arc::clone(&respond));
                tokio::spawn(async move {
                    let mut raw = Vec::new();
                    let mut buf = [0u8; 4096];
                    let (head, body) = loop {
                        let n = stream.read(&mut buf).await.unwrap();
                        raw.extend_from_slice(&buf[..n]);
                        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if raw.len() >= end + 4 + len {
                            break (
                                head,
                                String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).into_owned(),
                            );
                        }
                    };
                    let mut words = head.split_whitespace();
                    let (method, path) = (
                        words.next().unwrap().to_owned(),
                        words.next().unwrap().to_owned(),
                    );
                    let (status_and_headers, reply) = respond(&method, &path);
                    log.lock().unwrap().push((method, path, body));
                    let out = format!(
                        "HTTP/1.1 {status_and_headers}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    stream.write_all(out.as_bytes()).await.unwrap();
                });
            }
        });
        (base, seen)
    }

    /// A negotiator that offers a fixed SDP and records the answer.
    #[derive(Default)]
    struct Scripted {
        answer: Option<String>,
    }

    #[async_trait::async_trait]
    impl Negotiator for Scripted {
        async fn offer(&mut self) -> Result<String, LoadgenError> {
            Ok("v=0 offer".into())
        }
        async fn accept_answer(&mut self, answer: String) -> Result<(), LoadgenError> {
            self.answer = Some(answer);
            Ok(())
        }
        async fn answer(&mut self, _offer: String) -> Result<String, LoadgenError> {
            unreachable!("WHIP/WHEP clients offer")
        }
    }

    #[tokio::test]
    async fn whep_follows_a_redirect_and_deletes_where_the_session_lives() {
        let (target, target_seen) = fake_server(|method, path| match (method, path) {
            ("POST", "/whep/room1") => (
                "201 Created\r\nLocation: /sessions/s1\r\nContent-Type: application/sdp".into(),
                "v=0 answer".into(),
            ),
            ("DELETE", "/sessions/s1") => ("200 OK".into(), String::new()),
            _ => ("404 Not Found".into(), "no".into()),
        })
        .await;
        let redirect_to = format!("{target}/whep/room1");
        let (entry, entry_seen) = fake_server(move |_, _| {
            (
                format!("307 Temporary Redirect\r\nLocation: {redirect_to}"),
                String::new(),
            )
        })
        .await;
        let kaskade = KaskadeWhipWhep::new(&entry).unwrap();
        let mut peer = Scripted::default();
        let resource = kaskade
            .subscribe("room1", None, None, &mut peer)
            .await
            .unwrap();
        assert_eq!(peer.answer.as_deref(), Some("v=0 answer"));
        assert_eq!(resource.id, format!("{target}/sessions/s1"));
        assert_eq!(resource.publisher, None);
        kaskade.close(&resource).await.unwrap();
        let seen = target_seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                ("POST".into(), "/whep/room1".into(), "v=0 offer".into()),
                ("DELETE".into(), "/sessions/s1".into(), String::new()),
            ]
        );
        assert_eq!(entry_seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn whip_reports_the_publisher_and_refusals_carry_the_status() {
        let (base, _) = fake_server(|_, path| match path {
            "/whip/ok" => (
                "201 Created\r\nLocation: /sessions/p\r\nX-Kaskade-Publisher: pabc".into(),
                "answer".into(),
            ),
            "/whip/loop" => (
                "307 Temporary Redirect\r\nLocation: /whip/loop".into(),
                String::new(),
            ),
            _ => ("503 Service Unavailable".into(), "full".into()),
        })
        .await;
        let kaskade = KaskadeWhipWhep::new(&base).unwrap();
        let mut peer = Scripted::default();
        let r = kaskade.publish("ok", &mut peer).await.unwrap();
        assert_eq!(r.publisher.as_deref(), Some("pabc"));
        let e = kaskade.publish("busy", &mut peer).await.unwrap_err();
        assert!(
            matches!(&e, LoadgenError::Signalling(SignallingError::Status { status: 503, body, .. }) if body == "full"),
            "{e}"
        );
        let e = kaskade.publish("loop", &mut peer).await.unwrap_err();
        assert!(
            matches!(
                e,
                LoadgenError::Signalling(SignallingError::TooManyRedirects { .. })
            ),
            "{e}"
        );
        assert!(KaskadeWhipWhep::new("https://127.0.0.1:1").is_err());
        assert!(resolve(&parse_url("http://127.0.0.1:8/a/b").unwrap(), "x").is_err());
    }
}
