//! One relay link: a QUIC connection to another node of the mesh. The handshake exchanges
//! `Hello`s on the connection's first bidirectional stream (the accepting side checks that the
//! node id claimed is the one the client certificate was issued for); then that stream carries
//! length-prefixed control frames both ways and datagrams carry media. Every frame is
//! size-checked before it is read and decoded with limits; a malformed one closes this
//! connection only. Incoming media goes straight to the engine's queue; control goes to the
//! manager.

use super::bridge::{LinkId, LinkTx, RelayPacketIn};
use super::tls;
use crate::metrics::{Metrics, RelayPeerMetrics};
use kaskade_mesh::core::LinkQuality;
use kaskade_proto::relay::{
    self, RELAY_VERSION, RelayDecodeError, RelayMessage, SUPPORTED_VERSIONS,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::field::Empty;
use tracing::{debug, info, warn};

/// How long the Hello exchange may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of link statistics and keepalive pings.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// QUIC application error codes used when closing a link.
pub mod close_code {
    pub const NORMAL: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const UNAUTHORISED: u32 = 2;
    pub const REPLACED: u32 = 3;
}

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("stream failed: {0}")]
    Stream(String),
    #[error("bad frame: {0}")]
    Frame(#[from] RelayDecodeError),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("peer claims node {0} but its certificate is for another node")]
    WrongIdentity(String),
    #[error("timed out")]
    Timeout,
}

/// What a link reports to the manager.
pub enum LinkEvent {
    Up(Arc<LinkTx>),
    Control { link: LinkId, message: RelayMessage },
    Down { link: LinkId, peer: String },
}

/// The peer's side of a completed handshake.
pub struct Handshaken {
    pub peer: String,
    pub site: String,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

async fn write_frame(
    send: &mut quinn::SendStream,
    message: &RelayMessage,
) -> Result<(), LinkError> {
    let frame = relay::encode_control(message)?;
    send.write_all(&frame)
        .await
        .map_err(|e| LinkError::Stream(e.to_string()))
}

/// Reads one control frame; the length is checked before the body is read.
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<RelayMessage>, LinkError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(LinkError::Stream(e.to_string())),
    }
    let len = relay::control_frame_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| LinkError::Stream(e.to_string()))?;
    Ok(Some(relay::decode_control(&body)?))
}

fn hello(node: &str, site: &str) -> RelayMessage {
    RelayMessage::Hello {
        node: node.to_owned(),
        site: site.to_owned(),
        versions: SUPPORTED_VERSIONS.to_vec(),
        software: format!("kaskade {}", env!("CARGO_PKG_VERSION")),
    }
}

fn check_hello(message: Option<RelayMessage>) -> Result<(String, String), LinkError> {
    match message {
        Some(RelayMessage::Hello {
            node,
            site,
            versions,
            ..
        }) => {
            if !versions.contains(&RELAY_VERSION) {
                return Err(LinkError::Handshake(format!(
                    "no common relay version (peer speaks {versions:?}, we speak {SUPPORTED_VERSIONS:?})"
                )));
            }
            if node.is_empty() || node.len() > 64 || site.len() > 64 {
                return Err(LinkError::Handshake("invalid node id or site".into()));
            }
            Ok((node, site))
        }
        Some(_) => Err(LinkError::Handshake("first frame is not Hello".into())),
        None => Err(LinkError::Handshake("stream closed before Hello".into())),
    }
}

/// Dials `peer` at `addr` and exchanges Hellos, timed by a `cascade.dial` span.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    client_config: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    peer: &str,
    node: &str,
    site: &str,
) -> Result<(quinn::Connection, Handshaken), LinkError> {
    let span = tracing::info_span!(
        "cascade.dial",
        node,
        site,
        peer,
        peer_site = Empty,
        outcome = Empty,
        otel.status_code = Empty
    );
    let result = dial_peer(endpoint, client_config, addr, peer, node, site).await;
    handshake_outcome(&span, result.as_ref().map(|(_, h)| h));
    result
}

async fn dial_peer(
    endpoint: &quinn::Endpoint,
    client_config: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    peer: &str,
    node: &str,
    site: &str,
) -> Result<(quinn::Connection, Handshaken), LinkError> {
    let connecting = endpoint
        .connect_with(client_config, addr, peer)
        .map_err(|e| LinkError::Connect(e.to_string()))?;
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| LinkError::Timeout)?
        .map_err(|e| LinkError::Connect(e.to_string()))?;
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| LinkError::Stream(e.to_string()))?;
        write_frame(&mut send, &hello(node, site)).await?;
        let (peer_node, peer_site) = check_hello(read_frame(&mut recv).await?)?;
        if peer_node != peer {
            return Err(LinkError::WrongIdentity(peer_node));
        }
        Ok(Handshaken {
            peer: peer_node,
            site: peer_site,
            send,
            recv,
        })
    })
    .await
    .map_err(|_| LinkError::Timeout)
    .and_then(|r| r);
    match result {
        Ok(h) => Ok((conn, h)),
        Err(e) => {
            conn.close(close_code::PROTOCOL.into(), b"handshake failed");
            Err(e)
        }
    }
}

/// Records the end of a link's handshake on its `cascade.*` span: the peer and its site, or the
/// kind of failure (never addresses). The span is never entered: quinn's connection span would
/// become its child and keep it open for the whole life of the link.
fn handshake_outcome(span: &tracing::Span, result: Result<&Handshaken, &LinkError>) {
    match result {
        Ok(h) => {
            span.record("peer", h.peer.as_str());
            span.record("peer_site", h.site.as_str());
            span.record("outcome", "up");
        }
        Err(e) => {
            span.record(
                "outcome",
                match e {
                    LinkError::Connect(_) => "connect_failed",
                    LinkError::Stream(_) => "stream_failed",
                    LinkError::Frame(_) => "malformed_frame",
                    LinkError::Handshake(_) => "handshake_failed",
                    LinkError::WrongIdentity(_) => "wrong_identity",
                    LinkError::Timeout => "timeout",
                },
            );
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Completes an incoming connection: TLS (the client certificate is checked by the verifier),
/// then the Hello, whose node id must match the certificate. Timed by a `cascade.accept` span.
pub async fn accept(
    incoming: quinn::Incoming,
    node: &str,
    site: &str,
) -> Result<(quinn::Connection, Handshaken), LinkError> {
    let span = tracing::info_span!(
        "cascade.accept",
        node,
        site,
        peer = Empty,
        peer_site = Empty,
        outcome = Empty,
        otel.status_code = Empty
    );
    let result = accept_peer(incoming, node, site).await;
    handshake_outcome(&span, result.as_ref().map(|(_, h)| h));
    result
}

async fn accept_peer(
    incoming: quinn::Incoming,
    node: &str,
    site: &str,
) -> Result<(quinn::Connection, Handshaken), LinkError> {
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        incoming
            .accept()
            .map_err(|e| LinkError::Connect(e.to_string()))?
            .await
            .map_err(|e| LinkError::Connect(e.to_string()))
    })
    .await
    .map_err(|_| LinkError::Timeout)??;
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| LinkError::Stream(e.to_string()))?;
        let (peer_node, peer_site) = check_hello(read_frame(&mut recv).await?)?;
        if !tls::peer_node_id_matches(&conn, &peer_node) {
            return Err(LinkError::WrongIdentity(peer_node));
        }
        write_frame(&mut send, &hello(node, site)).await?;
        Ok(Handshaken {
            peer: peer_node,
            site: peer_site,
            send,
            recv,
        })
    })
    .await
    .map_err(|_| LinkError::Timeout)
    .and_then(|r| r);
    match result {
        Ok(h) => Ok((conn, h)),
        Err(e) => {
            let code = match e {
                LinkError::WrongIdentity(_) => close_code::UNAUTHORISED,
                _ => close_code::PROTOCOL,
            };
            conn.close(code.into(), b"handshake failed");
            Err(e)
        }
    }
}

/// Runs an established link until the connection ends, then reports it down.
pub async fn run(
    id: LinkId,
    conn: quinn::Connection,
    handshaken: Handshaken,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<LinkEvent>,
    media: mpsc::Sender<RelayPacketIn>,
) {
    let Handshaken {
        peer,
        site,
        mut send,
        mut recv,
    } = handshaken;
    let peer_metrics = metrics.relay.peer(&peer, &site);
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<RelayMessage>();
    let link = Arc::new(LinkTx::new(
        id,
        peer.clone(),
        site.clone(),
        conn.clone(),
        control_tx,
        peer_metrics.clone(),
    ));
    peer_metrics.link_up.set(1);
    peer_metrics.connects.inc();
    info!(peer = %peer, site = %site, link = id, "relay link up");
    let _ = events.send(LinkEvent::Up(link.clone()));

    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        while let Some(message) = control_rx.recv().await {
            if let Err(e) = write_frame(&mut send, &message).await {
                debug!(error = %e, "relay control write failed");
                break;
            }
        }
        let _ = send.finish();
        let _ = send.flush().await;
        drop(writer_conn);
    });

    let reader_conn = conn.clone();
    let reader_events = events.clone();
    let reader_media = media.clone();
    let reader_metrics = metrics.clone();
    let reader_peer_metrics = peer_metrics.clone();
    let reader_peer = peer.clone();
    let reader = tokio::spawn(async move {
        loop {
            match read_frame(&mut recv).await {
                Ok(Some(RelayMessage::Media {
                    channel,
                    layer,
                    rtp,
                    ..
                })) => {
                    reader_peer_metrics
                        .media_bytes_received
                        .inc_by(rtp.len() as u64);
                    reader_peer_metrics.media_packets_received.inc();
                    let packet = RelayPacketIn {
                        link: id,
                        channel,
                        layer,
                        rtp: rtp.into(),
                        arrival: Instant::now(),
                    };
                    if reader_media.try_send(packet).is_err() {
                        reader_peer_metrics.media_dropped.inc();
                    }
                }
                Ok(Some(RelayMessage::Error { reason })) => {
                    warn!(peer = %reader_peer, reason, "relay peer reported an error");
                    break;
                }
                Ok(Some(message)) => {
                    if reader_events
                        .send(LinkEvent::Control { link: id, message })
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(None) => break,
                Err(LinkError::Frame(e)) => {
                    warn!(peer = %reader_peer, error = %e, "malformed relay frame; closing the link");
                    reader_metrics.relay.refuse("malformed_frame");
                    reader_conn.close(close_code::PROTOCOL.into(), b"malformed frame");
                    break;
                }
                Err(e) => {
                    debug!(peer = %reader_peer, error = %e, "relay control stream ended");
                    break;
                }
            }
        }
        reader_conn.close(close_code::NORMAL.into(), b"control stream ended");
    });

    datagram_loop(id, &conn, &link, &peer_metrics, &metrics, &media).await;

    reader.abort();
    writer.abort();
    peer_metrics.link_up.set(0);
    info!(peer = %peer, link = id, reason = %conn.close_reason().map(|r| r.to_string()).unwrap_or_default(), "relay link down");
    let _ = events.send(LinkEvent::Down { link: id, peer });
}

/// Reads media datagrams into the engine's queue and keeps the link statistics, until the
/// connection closes.
async fn datagram_loop(
    id: LinkId,
    conn: &quinn::Connection,
    link: &LinkTx,
    peer_metrics: &RelayPeerMetrics,
    metrics: &Metrics,
    media: &mpsc::Sender<RelayPacketIn>,
) {
    let mut quality = LinkQuality::new();
    let mut tick = tokio::time::interval(STATS_INTERVAL);
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            datagram = conn.read_datagram() => {
                let Ok(datagram) = datagram else { break };
                let now = Instant::now();
                let decoded = match relay::decode_datagram(&datagram) {
                    Ok(d) => (d.channel, d.layer, d.link_seq, datagram.slice_ref(d.rtp)),
                    Err(e) => {
                        warn!(peer = %link.peer, error = %e, "malformed relay datagram; closing the link");
                        metrics.relay.refuse("malformed_datagram");
                        conn.close(close_code::PROTOCOL.into(), b"malformed datagram");
                        break;
                    }
                };
                let (channel, layer, link_seq, rtp) = decoded;
                quality.on_datagram_received(link_seq);
                quality.on_bytes_received(rtp.len(), now);
                peer_metrics.media_bytes_received.inc_by(rtp.len() as u64);
                peer_metrics.media_packets_received.inc();
                let packet = RelayPacketIn { link: id, channel, layer, rtp, arrival: now };
                if media.try_send(packet).is_err() {
                    peer_metrics.media_dropped.inc();
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                quality.on_rtt_sample(conn.rtt());
                quality.roll(now);
                peer_metrics.rtt.set(quality.srtt().unwrap_or_default().as_secs_f64());
                peer_metrics.loss.set(quality.loss_fraction().unwrap_or(0.0));
                peer_metrics.receive_rate.set(quality.recv_bps() as f64);
                nonce += 1;
                let rtt_us = u32::try_from(conn.rtt().as_micros()).unwrap_or(u32::MAX);
                link.send_control(RelayMessage::Ping { nonce, rtt_us });
            }
        }
    }
}

/// Tells a peer why it is being dropped, then closes (best effort).
pub async fn refuse(conn: &quinn::Connection, mut send: quinn::SendStream, reason: &str) {
    let _ = write_frame(
        &mut send,
        &RelayMessage::Error {
            reason: reason.to_owned(),
        },
    )
    .await;
    let _ = send.shutdown().await;
    conn.close(close_code::PROTOCOL.into(), reason.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, TestDir, node_ids};
    use crate::relay::tls::MeshIdentity;

    fn identity(dir: &std::path::Path, id: &str) -> MeshIdentity {
        MeshIdentity::load(
            &dir.join(certs::CA_CERT_FILE),
            &dir.join(format!("{id}.pem")),
            &dir.join(format!("{id}.key")),
            id,
        )
        .unwrap()
    }

    /// Two linked nodes "a" (accepting) and "b" (dialling), each with its link events and the
    /// media queue towards its engine.
    struct Pair {
        a: Arc<LinkTx>,
        b: Arc<LinkTx>,
        a_media: mpsc::Receiver<RelayPacketIn>,
        b_events: mpsc::UnboundedReceiver<LinkEvent>,
    }

    async fn link_pair(dir: &std::path::Path) -> Pair {
        certs::generate(dir, &node_ids(&["a", "b"])).unwrap();
        let (ia, ib) = (identity(dir, "a"), identity(dir, "b"));
        let server =
            quinn::Endpoint::server(ia.server_config().unwrap(), "127.0.0.1:0".parse().unwrap())
                .unwrap();
        let addr = server.local_addr().unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let metrics = Metrics::new();
        let (a_events_tx, mut a_events) = mpsc::unbounded_channel();
        let (b_events_tx, mut b_events) = mpsc::unbounded_channel();
        let (a_media_tx, a_media) = mpsc::channel(64);
        let (b_media_tx, _b_media) = mpsc::channel(64);
        let accept_metrics = metrics.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await.unwrap();
            let (conn, hs) = accept(incoming, "a", "site-a").await.unwrap();
            run(1, conn, hs, accept_metrics, a_events_tx, a_media_tx).await;
        });
        let (conn, hs) = dial(
            &client,
            ib.client_config().unwrap(),
            addr,
            "a",
            "b",
            "site-b",
        )
        .await
        .unwrap();
        assert_eq!(hs.site, "site-a");
        tokio::spawn(run(2, conn, hs, metrics, b_events_tx, b_media_tx));
        let up = |e: Option<LinkEvent>| match e {
            Some(LinkEvent::Up(link)) => link,
            _ => panic!("expected the link up"),
        };
        let a = up(a_events.recv().await);
        let b = up(b_events.recv().await);
        assert_eq!((a.peer.as_str(), a.peer_site.as_str()), ("b", "site-b"));
        assert_eq!(b.peer, "a");
        Pair {
            a,
            b,
            a_media,
            b_events,
        }
    }

    #[tokio::test]
    async fn media_crosses_as_datagrams_and_large_packets_fall_back_to_the_stream() {
        let dir = TestDir::new("link-media");
        let mut pair = link_pair(dir.path()).await;
        let mut scratch = Vec::new();
        let small = vec![0x80u8; 200];
        let large = vec![0x80u8; 5000];
        pair.b.send_media(7, 1, &small, &mut scratch);
        pair.b.send_media(7, 2, &large, &mut scratch);
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = tokio::time::timeout(Duration::from_secs(5), pair.a_media.recv())
                .await
                .expect("media arrives")
                .unwrap();
            got.push((p.channel, p.layer, p.rtp.len()));
        }
        got.sort();
        assert_eq!(got, [(7, 1, 200), (7, 2, 5000)]);
        assert_eq!(pair.b.metrics.stream_fallbacks.get(), 1);
        assert_eq!(pair.b.metrics.media_packets_sent.get(), 2);
    }

    #[tokio::test]
    async fn control_messages_reach_the_manager() {
        let dir = TestDir::new("link-control");
        let mut pair = link_pair(dir.path()).await;
        assert!(pair.a.send_control(RelayMessage::Pong { nonce: 42 }));
        let event = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match pair.b_events.recv().await {
                    Some(LinkEvent::Control {
                        message: RelayMessage::Pong { nonce },
                        ..
                    }) => return nonce,
                    Some(_) => continue,
                    None => panic!("link events ended"),
                }
            }
        })
        .await
        .expect("the Pong arrives");
        assert_eq!(event, 42);
    }
}
