//! `cascade_client`: the WebRTC side of the `cascade-hop` benchmark — a WHIP publisher that
//! writes its own numbered VP8 RTP packets and WHEP subscribers that time their arrival — plus
//! the minimal HTTP/1.1 client both use (and that reads a node's `/metrics`). Compiled as a
//! module of the `cascade-hop` binary, not of the library (see there why).
//!
//! The peer connections, the VP8 sender and the benchmark payload are `webrtc_peer.rs`'s (each
//! peer binds one UDP socket on 127.0.0.1; every packet is a keyframe start, so a node's layer
//! selector forwards all of them, and carries a packet id).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use crate::webrtc_peer::{Peer, Vp8Sender, packet_id};

/// Where the benchmark's peers bind.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Deadline of one HTTP exchange with a node.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A node's HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 exchange (`Connection: close`) with `addr`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    })
    .await
    .map_err(|_| anyhow!("{method} http://{addr}{path}: no answer within {HTTP_TIMEOUT:?}"))?
    .with_context(|| format!("{method} http://{addr}{path}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("truncated HTTP response ({} bytes)", raw.len()))?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&data[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Sum of the samples of `name` (or `name_total`) whose labels include every `labels` pair, in
/// Prometheus text format; `None` when there is no such sample.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name && metric.strip_suffix("_total") != Some(name) {
            continue;
        }
        let matches = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")));
        if matches && let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Peer connections
// ---------------------------------------------------------------------------------------------

/// Offers, POSTs the complete offer to `path` on `node`, applies the 201 answer and waits until
/// the connection is up. Returns the session's `Location`.
async fn negotiate(peer: &mut Peer, node: SocketAddr, path: &str) -> anyhow::Result<String> {
    let offer = peer.pc.create_offer(None).await?;
    let offer = peer.complete_local(offer).await?;
    let resp = http_request(
        node,
        "POST",
        path,
        Some("application/sdp"),
        offer.as_bytes(),
    )
    .await?;
    if resp.status != 201 {
        bail!(
            "POST {path}: status {}: {}",
            resp.status,
            resp.text().trim()
        );
    }
    let location = resp.header("location").unwrap_or_default().to_owned();
    let answer = RTCSessionDescription::answer(resp.text())?;
    peer.pc.set_remote_description(answer).await?;
    peer.wait_connected(path).await?;
    Ok(location)
}

/// `DELETE` on a WHIP/WHEP session's `Location`; errors are ignored (the node may be gone).
async fn end_session(node: SocketAddr, location: &str) {
    if location.starts_with('/') {
        let _ = http_request(node, "DELETE", location, None, b"").await;
    }
}

/// A WHIP publisher of one VP8 track whose RTP packets the caller writes.
pub struct Publisher {
    pc: Arc<dyn PeerConnection>,
    video: Vp8Sender,
    /// `Location` of the WHIP session.
    pub location: String,
}

impl Publisher {
    /// Publishes to `POST /whip/{room}` on `node` and waits until connected.
    pub async fn connect(node: SocketAddr, room: &str) -> anyhow::Result<Self> {
        let mut peer = Peer::new(LOOPBACK).await?;
        let video = Vp8Sender::add_to(&peer, "kaskade-bench").await?;
        let location = negotiate(&mut peer, node, &format!("/whip/{room}"))
            .await
            .context("WHIP publish")?;
        Ok(Self {
            pc: peer.pc,
            video,
            location,
        })
    }

    /// Writes one packet carrying `id`, `payload_len` bytes of payload, as a one-packet
    /// keyframe at `rtp_ts`.
    pub async fn send(&mut self, id: u64, rtp_ts: u32, payload_len: usize) -> anyhow::Result<()> {
        self.video.send(id, rtp_ts, payload_len).await
    }

    /// Ends the session: `DELETE` on its `Location` at `node`, then closes the connection.
    pub async fn close(&self, node: SocketAddr) {
        end_session(node, &self.location).await;
        let _ = self.pc.close().await;
    }
}

/// Arrivals seen by one subscriber: (packet id, receive instant), in arrival order.
pub type Arrivals = Arc<Mutex<Vec<(u64, Instant)>>>;

/// A WHEP subscriber (recvonly video) that timestamps every benchmark packet it receives.
pub struct Subscriber {
    pc: Arc<dyn PeerConnection>,
    /// Filled by the reader task.
    pub arrivals: Arrivals,
    /// `Location` of the WHEP session.
    pub location: String,
}

impl Subscriber {
    /// Watches `POST /whep/{room}` on `node`; the reader task records arrivals from the first
    /// packet on.
    pub async fn connect(node: SocketAddr, room: &str) -> anyhow::Result<Self> {
        let mut peer = Peer::new(LOOPBACK).await?;
        peer.add_recvonly_video().await?;
        let arrivals: Arrivals = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let sink = Arc::clone(&arrivals);
        crate::webrtc_peer::spawn_track_readers(&mut peer, move |packet| {
            let at = Instant::now();
            if let Some(id) = packet_id(&packet.payload) {
                sink.lock().expect("arrivals lock").push((id, at));
            }
        });
        let location = negotiate(&mut peer, node, &format!("/whep/{room}"))
            .await
            .with_context(|| format!("WHEP subscribe at {node}"))?;
        Ok(Self {
            pc: peer.pc,
            arrivals,
            location,
        })
    }

    /// Arrivals so far.
    pub fn received(&self) -> usize {
        self.arrivals.lock().expect("arrivals lock").len()
    }

    /// Ends the session: `DELETE` on its `Location` at `node`, then closes the connection.
    pub async fn close(&self, node: SocketAddr) {
        end_session(node, &self.location).await;
        let _ = self.pc.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nLocation: /sessions/s1\r\ncontent-length: 3\r\n\r\nv=0",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.header("location")),
            (201, Some("/sessions/s1"))
        );
        assert_eq!(r.text(), "v=0");
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.text(), "abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn reads_metric_samples_by_label() {
        let text = "# HELP kaskade_relay_link_up up\n\
                    kaskade_relay_link_up{peer=\"n3\"} 1\n\
                    kaskade_relay_link_up{peer=\"n2\"} 0\n\
                    kaskade_relay_media_dropped_total{peer=\"n3\"} 4\n";
        assert_eq!(
            metric_value(text, "kaskade_relay_link_up", &[("peer", "n3")]),
            Some(1.0)
        );
        assert_eq!(
            metric_value(text, "kaskade_relay_media_dropped", &[("peer", "n3")]),
            Some(4.0)
        );
        assert_eq!(
            metric_value(text, "kaskade_relay_link_up", &[("peer", "n9")]),
            None
        );
    }
}
