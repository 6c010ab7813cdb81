//! Owns: the end-to-end robustness tests — malformed and oversized WHIP/WHEP requests, bad
//! WebSocket signalling frames, and garbage UDP datagrams sent at the media port while a real
//! aiortc WHIP→WHEP stream keeps flowing in another room.

use kaskade_tests::clients::{final_result, num};
use kaskade_tests::metrics::scrape;
use kaskade_tests::ws::WsConn;
use kaskade_tests::{NodeProcess, PyClient, heavy_test_lock, http, node_bin, poll_until};
use serde_json::{Value, json};
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RECV: Duration = Duration::from_secs(10);

/// A syntactically valid recvonly offer (Opus + VP8), for requests that must fail for another
/// reason than the SDP.
const VALID_RECVONLY_OFFER: &str = "v=0\r\n\
o=- 3900000000 3900000000 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=msid-semantic:WMS *\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:kskt\r\n\
a=ice-pwd:kaskadetestpasswordabcdef\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=recvonly\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:kskt\r\n\
a=ice-pwd:kaskadetestpasswordabcdef\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=recvonly\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtcp-fb:96 ccm fir\r\n";

const MALFORMED_SDP: &[&str] = &["this is not an SDP offer", "v=0\r\nm=video banana\r\n", ""];

fn assert_status_with_reason(r: &http::Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: body {:?}", r.text());
    if status == 400 {
        assert!(!r.text().trim().is_empty(), "{what}: 400 without a reason");
    }
}

#[test]
fn http_rejects_malformed_unknown_and_oversized_requests() {
    let _heavy = heavy_test_lock();
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    assert_eq!(node.get("/healthz").unwrap().status, 200);

    // A live room, so that WHEP's 400 for bad SDP cannot be mistaken for its 404 for no room.
    let publisher = PyClient::whip_publish("whip-live", &node.at("/whip/live"), 60.0).unwrap();
    let publishing = publisher
        .wait_event("publishing", Duration::from_secs(30))
        .expect("publisher connects");
    let publisher_id = publishing["publisher"].as_str().unwrap().to_owned();

    for sdp in MALFORMED_SDP {
        let r = http::post(&node.at("/whip/bad-sdp"), "application/sdp", sdp.as_bytes()).unwrap();
        assert_status_with_reason(&r, 400, &format!("WHIP with SDP {sdp:?}"));
        let r = http::post(&node.at("/whep/live"), "application/sdp", sdp.as_bytes()).unwrap();
        assert_status_with_reason(&r, 400, &format!("WHEP with SDP {sdp:?}"));
    }
    // A refused WHIP offer must not leave a room or a track behind.
    assert!(node.room_tracks("bad-sdp").unwrap().is_empty());

    let r = http::post(
        &node.at("/whep/no-such-room"),
        "application/sdp",
        VALID_RECVONLY_OFFER.as_bytes(),
    )
    .unwrap();
    assert_status_with_reason(&r, 404, "WHEP for an unknown room");
    let r = http::post(
        &node.at("/whep/live/p0000000000000000"),
        "application/sdp",
        VALID_RECVONLY_OFFER.as_bytes(),
    )
    .unwrap();
    assert_status_with_reason(&r, 404, "WHEP for an unknown publisher");
    for url in [
        "/whep/live?layer=ultra",
        &format!("/whep/live/{publisher_id}?layer=2"),
    ] {
        let r = http::post(
            &node.at(url),
            "application/sdp",
            VALID_RECVONLY_OFFER.as_bytes(),
        )
        .unwrap();
        assert_status_with_reason(&r, 400, &format!("WHEP {url} (no such layer)"));
        assert!(r.text().contains("layer"), "{url}: {}", r.text());
    }

    // 70 KiB, larger than the 64 KiB limit, starting like an SDP.
    let mut big = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    while big.len() < 70 * 1024 {
        big.push_str("a=x-padding:0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
    }
    let r = http::post(&node.at("/whip/too-big"), "application/sdp", big.as_bytes()).unwrap();
    assert_status_with_reason(&r, 413, "WHIP with a 70 KiB body");
    let r = http::post(&node.at("/whep/live"), "application/sdp", big.as_bytes()).unwrap();
    assert_status_with_reason(&r, 413, "WHEP with a 70 KiB body");

    // The API knows nothing of rooms that never were, and the live one is untouched.
    assert_eq!(node.get("/api/rooms/no-such-room").unwrap().status, 404);
    let tracks = node.room_tracks("live").unwrap();
    assert_eq!(
        tracks
            .iter()
            .filter(|t| t["participant"] == publisher_id.as_str())
            .count(),
        2,
        "{tracks:?}"
    );
    assert_eq!(node.get("/healthz").unwrap().status, 200);
    node.assert_alive();
}

fn expect_error(ws: &mut WsConn, code: &str, after: &str) -> Value {
    let v = ws
        .recv_until(&format!("error {code} after {after}"), RECV, |v| {
            v["type"] == "error"
        })
        .unwrap();
    assert_eq!(v["code"], code, "after {after}: {v}");
    assert_ne!(
        v["fatal"], true,
        "after {after}: the error must not be fatal: {v}"
    );
    v
}

#[test]
fn websocket_survives_bad_frames_and_closes_on_oversized_ones() {
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    let url = node.ws_url();

    let mut ws = WsConn::connect(&url).expect("connect");
    ws.send_text("this is {not json").unwrap();
    expect_error(&mut ws, "invalid_json", "a non-JSON frame");
    ws.send_text("[1,2,3]").unwrap();
    expect_error(&mut ws, "invalid_json", "a JSON array");
    // The socket still serves a valid join.
    ws.send_json(&json!({"type": "join", "room": "ws-bad", "name": "tester"}))
        .unwrap();
    let joined = ws
        .recv_until("joined", RECV, |v| v["type"] == "joined")
        .unwrap();
    assert_eq!(joined["room"], "ws-bad");
    let me = joined["participant"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!me.is_empty(), "{joined}");

    ws.send_json(&json!({"type": "fly", "to": "moon"})).unwrap();
    expect_error(&mut ws, "unknown_message", "an unknown type");
    ws.send_json(&json!({"type": "chat", "text": ""})).unwrap();
    expect_error(&mut ws, "bad_request", "an empty chat text");
    ws.send_binary(vec![0xde, 0xad, 0xbe, 0xef]).unwrap();
    expect_error(&mut ws, "binary_not_supported", "a binary frame");
    ws.send_json(&json!({"type": "join", "room": "ws-bad", "name": "again"}))
        .unwrap();
    expect_error(&mut ws, "already_joined", "a second join");
    ws.send_json(&json!({"type": "publish_offer", "sdp": "not an sdp"}))
        .unwrap();
    expect_error(&mut ws, "invalid_sdp", "a malformed publish offer");

    // Still in the room, under its name.
    let room = node.get_json("/api/rooms/ws-bad").expect("room exists");
    let participants = room["participants"].as_array().cloned().unwrap_or_default();
    assert!(
        participants
            .iter()
            .any(|p| p["id"] == me.as_str() && p["name"] == "tester"),
        "{room}"
    );

    // Anything but join before join is refused.
    let mut early = WsConn::connect(&url).expect("connect");
    early
        .send_json(&json!({"type": "chat", "text": "hi"}))
        .unwrap();
    expect_error(&mut early, "not_joined", "a chat before join");

    // More than 64 KiB in one message closes the socket with 1009 (message too big).
    let mut big = WsConn::connect(&url).expect("connect");
    let text = json!({"type": "chat", "text": "x".repeat(70 * 1024)}).to_string();
    big.send_text(text).unwrap();
    let close = big.recv_close(RECV).expect("the node closes the socket");
    assert_eq!(
        close.as_ref().map(|c| c.0),
        Some(1009),
        "close frame: {close:?}"
    );

    // The first socket was not affected: leaving is acknowledged by the node closing it.
    ws.send_json(&json!({"type": "leave"})).unwrap();
    let end = ws.recv_close(RECV).expect("closed after leave");
    assert!(
        matches!(end, None | Some((1000, _))),
        "close after leave: {end:?}"
    );
    poll_until(
        "the room to empty after leave",
        Duration::from_secs(10),
        || {
            let r = node.get("/api/rooms/ws-bad").map_err(|e| e.to_string())?;
            if r.status == 404 {
                return Ok(());
            }
            let v = r.json().map_err(|e| e.to_string())?;
            match v["participants"].as_array() {
                Some(p) if p.iter().all(|p| p["id"] != me.as_str()) => Ok(()),
                _ => Err(v.to_string()),
            }
        },
    )
    .unwrap();
    node.assert_alive();
}

/// xorshift64*: reproducible noise without a rand dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One round of garbage: each kind once. Returns (datagram, kind).
fn garbage_round(noise: &mut Noise, seq: u16) -> Vec<(Vec<u8>, &'static str)> {
    let random_len = 20 + noise.below(1180) as usize;
    let mut rtp = vec![0x80, 0x60];
    rtp.extend_from_slice(&seq.to_be_bytes());
    rtp.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    rtp.extend_from_slice(&(noise.next() as u32).to_be_bytes());
    let payload_len = 100 + noise.below(1000) as usize;
    rtp.extend(noise.bytes(payload_len));
    let mut dtls = vec![22, 0xfe, 0xfd];
    dtls.extend(noise.bytes(60));
    vec![
        (noise.bytes(random_len), "random"),
        // A STUN binding request header cut short after 10 of its 20 bytes.
        (
            vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 0x01, 0x02],
            "truncated_stun",
        ),
        (rtp, "fake_rtp"),
        (dtls, "fake_dtls"),
        (Vec::new(), "empty"),
        (noise.bytes(2000), "oversized"),
    ]
}

#[test]
fn garbage_datagrams_are_dropped_while_media_keeps_flowing() {
    let _heavy = heavy_test_lock();
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    let dropped_before = node
        .metric("kaskade_dropped_datagrams_total", &[])
        .expect("scrape")
        .unwrap_or(0.0);

    let publisher = PyClient::whip_publish("whip-steady", &node.at("/whip/steady"), 40.0).unwrap();
    publisher
        .wait_event("publishing", Duration::from_secs(30))
        .expect("publisher connects");
    let mut subscriber =
        PyClient::whep_subscribe("whep-steady", &node.at("/whep/steady"), 8.0).unwrap();
    subscriber
        .wait_event("first_frame", Duration::from_secs(30))
        .expect("subscriber decodes a first frame");

    // ~3 s of garbage, paced (6 datagrams every 10 ms), inside the subscriber's 8 s window.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut noise = Noise(seed);
    let mut non_empty_sent = 0u32;
    let started = Instant::now();
    for round in 0..300u16 {
        for (datagram, kind) in garbage_round(&mut noise, round) {
            match socket.send_to(&datagram, node.media_addr) {
                Ok(_) if !datagram.is_empty() => non_empty_sent += 1,
                Ok(_) => {}
                Err(e) => panic!("sending {kind} garbage to {}: {e}", node.media_addr),
            }
        }
        // Pacing, not synchronisation: keep the burst from overflowing socket buffers.
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "sent {non_empty_sent} non-empty garbage datagrams in {:?} (seed {seed})",
        started.elapsed()
    );

    let dropped = poll_until(
        "dropped datagrams to be counted",
        Duration::from_secs(10),
        || {
            let v = node
                .metric("kaskade_dropped_datagrams_total", &[])
                .map_err(|e| e.to_string())?
                .unwrap_or(0.0);
            if v - dropped_before >= f64::from(non_empty_sent) / 2.0 {
                Ok(v)
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .unwrap();
    eprintln!("kaskade_dropped_datagrams_total: {dropped_before} -> {dropped}");
    let samples = scrape(&node.url).unwrap();
    for s in samples
        .iter()
        .filter(|s| s.name == "kaskade_dropped_datagrams_total")
    {
        let reason = s
            .labels
            .get("reason")
            .map(String::as_str)
            .unwrap_or("<none>");
        assert!(
            ["unknown_source", "garbage", "srtp"].contains(&reason),
            "unexpected drop reason {reason:?}"
        );
    }
    assert_eq!(node.get("/healthz").unwrap().status, 200);

    let r = final_result(&mut subscriber, Duration::from_secs(40)).expect("subscriber result");
    assert!(
        num(&r, "video_fps") >= 20.0 && num(&r, "video_fps_steady") >= 20.0,
        "media in the other room suffered from the garbage: {r}"
    );
    assert!(num(&r, "audio_frames") > 0.0, "{r}");
    node.assert_alive();
}
