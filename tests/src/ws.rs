//! Owns: [`WsConn`], a blocking WebSocket client (tungstenite) for tests that speak the signalling
//! protocol of `proto/src/signal.rs` by hand — including deliberately bad frames — with
//! deadline-bounded receives; over `ws://`, or `wss://` with a [`TlsClient`].

use crate::http::{Stream, TlsClient};
use serde_json::Value;
use std::io::ErrorKind;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocket;
use tungstenite::{Error, Message};

/// What a receive produced.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    /// A text frame that parsed as JSON.
    Json(Value),
    /// A text frame that did not parse.
    Text(String),
    /// A close frame (code, reason), or `None` if the connection ended without one.
    Closed(Option<(u16, String)>),
}

pub struct WsConn {
    ws: WebSocket<Stream>,
}

impl WsConn {
    /// Connects to `ws://host:port/path`.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_on(None, url)
    }

    /// Connects to `wss://host:port/path`, accepting the server certificates `tls` accepts.
    pub fn connect_tls(url: &str, tls: &TlsClient) -> anyhow::Result<Self> {
        Self::connect_on(Some(tls), url)
    }

    fn connect_on(tls: Option<&TlsClient>, url: &str) -> anyhow::Result<Self> {
        let rest = match tls {
            None => url.strip_prefix("ws://"),
            Some(_) => url.strip_prefix("wss://"),
        }
        .ok_or_else(|| anyhow::anyhow!("ws:// URLs without TLS, wss:// with: {url}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let addr = authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("no address for {authority}"))?;
        let stream = Stream::connect(addr, authority, tls, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
        let (ws, _resp) = tungstenite::client(url, stream)
            .map_err(|e| anyhow::anyhow!("WebSocket handshake with {url} failed: {e}"))?;
        Ok(Self { ws })
    }

    /// Connects to `ws_url` and joins `room` as `name` (asking for `role` if given); returns the
    /// connection and the `joined` message.
    pub fn join(
        ws_url: &str,
        room: &str,
        name: &str,
        role: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<(Self, Value)> {
        let mut ws = Self::connect(ws_url)?;
        let joined = ws.join_room(room, name, role, timeout)?;
        Ok((ws, joined))
    }

    /// Joins `room` as `name` (asking for `role` if given) on this connection; returns the
    /// `joined` message.
    pub fn join_room(
        &mut self,
        room: &str,
        name: &str,
        role: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut msg = serde_json::json!({"type": "join", "room": room, "name": name});
        if let Some(role) = role {
            msg["role"] = serde_json::json!(role);
        }
        self.send_json(&msg)?;
        self.recv_until("joined", timeout, |v| v["type"] == "joined")
    }

    /// The connection underneath (e.g. to see the ALPN protocol a TLS server chose).
    pub fn stream(&self) -> &Stream {
        self.ws.get_ref()
    }

    pub fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.ws.send(Message::text(text.into()))?;
        Ok(())
    }

    pub fn send_json(&mut self, v: &Value) -> anyhow::Result<()> {
        self.send_text(v.to_string())
    }

    pub fn send_binary(&mut self, data: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::binary(data))?;
        Ok(())
    }

    /// Next text or close event within `timeout` (pings and pongs are skipped).
    pub fn recv(&mut self, timeout: Duration) -> anyhow::Result<WsEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(!left.is_zero(), "no WebSocket message within {timeout:?}");
            self.ws.get_mut().set_read_timeout(Some(left))?;
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let t = t.as_str().to_owned();
                    return Ok(match serde_json::from_str::<Value>(&t) {
                        Ok(v) => WsEvent::Json(v),
                        Err(_) => WsEvent::Text(t),
                    });
                }
                Ok(Message::Close(frame)) => {
                    return Ok(WsEvent::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                    ));
                }
                Ok(_) => continue,
                Err(Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    return Ok(WsEvent::Closed(None));
                }
                Err(Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::UnexpectedEof
                            | ErrorKind::BrokenPipe
                    ) =>
                {
                    return Ok(WsEvent::Closed(None));
                }
                // E.g. the peer dropped TCP without a close handshake.
                Err(Error::Protocol(_)) => return Ok(WsEvent::Closed(None)),
                Err(e) => anyhow::bail!("WebSocket read failed: {e}"),
            }
        }
    }

    /// Receives until a JSON message satisfies `pred`; other messages are collected into `skipped`.
    /// Fails on close or timeout, naming what was seen.
    pub fn recv_until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self
                .recv(left)
                .map_err(|e| anyhow::anyhow!("waiting for {what}: {e}; seen before: {seen:?}"))?;
            match ev {
                WsEvent::Json(v) if pred(&v) => return Ok(v),
                WsEvent::Closed(c) => {
                    anyhow::bail!("socket closed ({c:?}) while waiting for {what}; seen: {seen:?}")
                }
                other => seen.push(other),
            }
        }
    }

    /// Receives until the close frame; other messages are skipped.
    pub fn recv_close(&mut self, timeout: Duration) -> anyhow::Result<Option<(u16, String)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let WsEvent::Closed(c) = self.recv(left)? {
                return Ok(c);
            }
        }
    }
}
