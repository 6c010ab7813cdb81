//! Owns: the webcast-ingest end-to-end tests — a studio encoder stand-in built on GStreamer's own
//! WebRTC stack (webrtcbin, libnice, libsrtp: `tests/clients/gst_whip_publish.py`, independent of
//! aiortc and of Kaskade's code) publishes into a room of a node with access control by WHIP
//! with a host's token: VP8, H264 (constrained baseline, as OBS sends) and three VP8 simulcast
//! layers; aiortc WHEP viewers with a participant's token decode it at the publisher's resolution
//! with its audio. The same publish without a token, with a participant's token (participants do
//! not open rooms) and with another tenant's token is refused, and the WHIP session's DELETE
//! ends it (the room's track list empties at once, long before ICE would time out).

use kaskade_tests::access::{ADMIN, Accounts, HOST, PARTICIPANT, STRANGER, login};
use kaskade_tests::clients::{clients_dir, final_result, num, python_check};
use kaskade_tests::{NodeProcess, PyClient, Spawned, heavy_test_lock, node_bin, poll_until};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(30);
/// The full-size picture the publisher sends.
const WIDTH: f64 = 1280.0;
const HEIGHT: f64 = 720.0;
/// Seconds a viewer counts decoded frames after its first one.
const VIEW_SECONDS: f64 = 5.0;
/// How long the lecture's viewer watches: past the node's ICE disconnected + failed timeouts
/// (10 + 20 s without STUN). GStreamer's libnice sends no STUN between keepalives 25 s apart,
/// so a node that took that quiet agent for a gone one would cut the webcast while it is watched.
const LECTURE_SECONDS: f64 = 32.0;
/// Frame rate a viewer must decode on average (30 fps sent; 2 cores run everything).
const MIN_FPS: f64 = 15.0;
/// Longest gap between two decoded frames a viewer may see.
const MAX_GAP_MS: f64 = 1000.0;
/// How soon after the publisher's DELETE its tracks must be gone. Without the DELETE the node
/// would only drop the publisher once ICE failed (30 s of silence), so this checks the DELETE.
const GONE_AFTER_DELETE: Duration = Duration::from_secs(3);

/// The Python with GStreamer's bindings: `$KASKADE_GST_PYTHON`, else Debian's `/usr/bin/python3`
/// (python3-gi is built for it, not for a pyenv or venv interpreter).
fn gst_python() -> PathBuf {
    std::env::var_os("KASKADE_GST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// Panics with setup instructions unless GStreamer's bindings and the elements the publisher
/// uses are there (checked once).
fn require_gstreamer() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = "import gi\n\
        for ns in ('Gst', 'GstRtp', 'GstSdp', 'GstWebRTC'): gi.require_version(ns, '1.0')\n\
        from gi.repository import Gst, GstRtp, GstSdp, GstWebRTC\n\
        Gst.init(None)\n\
        missing = [e for e in ('webrtcbin', 'nicesrc', 'dtlssrtpenc', 'vp8enc', 'x264enc', \
        'opusenc', 'rtpfunnel', 'rtpvp8pay', 'rtph264pay', 'rtpopuspay', 'videotestsrc', \
        'audiotestsrc') if Gst.ElementFactory.find(e) is None]\n\
        assert not missing, f'missing GStreamer elements: {missing}'\n";
    let result = CHECK.get_or_init(|| python_check(&gst_python(), check));
    if let Err(e) = result {
        panic!(
            "the webcast test needs GStreamer 1.22's WebRTC stack and its Python bindings: run \
             `bash .ci/setup` as root (or set KASKADE_GST_PYTHON); the check failed with:\n{e}"
        );
    }
}

/// Starts `gst_whip_publish.py --url {url} [--token T] {extra…}` (1280x720 at 30 fps).
fn gst_publish(name: &str, url: &str, token: Option<&str>, extra: &[&str]) -> Spawned {
    require_gstreamer();
    let mut cmd = Command::new(gst_python());
    cmd.arg(clients_dir().join("gst_whip_publish.py"))
        .args(["--url", url, "--width", "1280", "--height", "720"])
        .args(extra)
        .current_dir(clients_dir())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    Spawned::spawn(name, cmd).expect("start the GStreamer publisher")
}

/// Runs a publish that the node must refuse; returns the HTTP status of the refusal.
fn refused_status(name: &str, url: &str, token: Option<&str>) -> u64 {
    let mut publisher = gst_publish(name, url, token, &["--seconds", "5"]);
    let error = publisher
        .wait_event("error", STEP)
        .expect("the publisher reports the refusal");
    publisher.wait_exit(STEP).expect("the publisher exits");
    assert_eq!(error["stage"], "post", "{name}: {error}");
    assert!(
        publisher.events("published").is_empty(),
        "{name} published: {:?}",
        publisher.lines()
    );
    error["status"].as_u64().unwrap_or_default()
}

/// A node with access control and the test accounts.
fn secure_node(accounts: &Accounts) -> NodeProcess {
    let args = accounts.node_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start(node_bin!(), &args).expect("node starts")
}

/// Waits until `room` lists the publisher's audio and video tracks.
fn wait_for_tracks(node: &NodeProcess, room: &str, publisher: &str) {
    let tracks = poll_until(
        &format!("the publisher's audio and video in /api/rooms/{room}"),
        Duration::from_secs(10),
        || {
            let t = node.room_tracks(room).map_err(|e| e.to_string())?;
            let mut kinds: Vec<&str> = t
                .iter()
                .filter(|t| t["participant"] == publisher)
                .filter_map(|t| t["kind"].as_str())
                .collect();
            kinds.sort_unstable();
            if kinds == ["audio", "video"] {
                Ok(t)
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .unwrap();
    assert_eq!(tracks.len(), 2, "only the webcast publishes: {tracks:?}");
}

/// A WHEP viewer with `token` counting for `seconds`; `query` is appended to the WHEP URL
/// (e.g. `?layer=low`).
fn whep_viewer(
    node: &NodeProcess,
    name: &str,
    room: &str,
    query: &str,
    token: &str,
    seconds: f64,
) -> Spawned {
    let url = node.at(&format!("/whep/{room}{query}"));
    let seconds = seconds.to_string();
    PyClient::spawn(
        name,
        "whep_subscribe.py",
        &["--url", &url, "--seconds", &seconds, "--token", token],
        None,
    )
    .expect("start the WHEP viewer")
}

/// Checks a viewer's result: frames all through its window at `width`x`height`, audio, its
/// DELETE.
fn assert_decoded(name: &str, r: &Value, width: f64, height: f64) {
    println!("{name}: {r}");
    assert!(
        num(r, "video_fps") >= MIN_FPS,
        "{name}: video below {MIN_FPS} fps: {r}"
    );
    assert!(
        num(r, "max_video_gap_ms") <= MAX_GAP_MS,
        "{name}: the video stalled: {r}"
    );
    assert_eq!(
        (num(r, "width"), num(r, "height")),
        (width, height),
        "{name}: {r}"
    );
    assert!(
        num(r, "audio_frames") > 0.0,
        "{name}: no audio decoded: {r}"
    );
    assert_eq!(
        r["delete_status"], 200,
        "{name}: DELETE of the WHEP session"
    );
}

/// Stops the publisher (it DELETEs its session on SIGTERM), checks its report, and that the
/// room's tracks are gone right after the DELETE.
fn end_webcast(node: &NodeProcess, mut publisher: Spawned, room: &str, codec_mime: &str) {
    publisher.signal(libc::SIGTERM);
    let result = final_result(&mut publisher, STEP).expect("the publisher's result");
    println!("publisher: {result}");
    assert_eq!(result["delete_status"], 200, "DELETE of the WHIP session");
    assert_eq!(result["connection_state"], "connected", "{result}");
    assert!(
        num(&result["rtp"][codec_mime], "packets") > 0.0,
        "no {codec_mime} RTP sent: {result}"
    );
    assert!(
        num(&result["rtp"]["audio/OPUS"], "packets") > 0.0,
        "{result}"
    );
    poll_until(
        "the room's tracks to go after the WHIP DELETE",
        GONE_AFTER_DELETE,
        || {
            let t = node.room_tracks(room).map_err(|e| e.to_string())?;
            if t.is_empty() {
                Ok(())
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .unwrap();
}

/// A host's GStreamer encoder webcasts into `room` with `codec`; a participant watches.
fn webcast_reaches_a_viewer(codec: &str, codec_mime: &str, room: &str) {
    let _heavy = heavy_test_lock();
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let mut node = secure_node(&accounts);
    let host = login(&node.url, HOST).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    node.api_token = Some(login(&node.url, ADMIN).unwrap());
    let whip = node.at(&format!("/whip/{room}"));

    let publisher = gst_publish(
        &format!("gst-{codec}"),
        &whip,
        Some(&host),
        &["--video-codec", codec, "--seconds", "60"],
    );
    let published = publisher
        .wait_event("published", STEP)
        .expect("the host's WHIP publish is accepted");
    let id = published["publisher"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!id.is_empty(), "no X-Kaskade-Publisher: {published}");
    wait_for_tracks(&node, room, &id);

    let mut viewer = whep_viewer(
        &node,
        &format!("viewer-{codec}"),
        room,
        "",
        &pupil,
        VIEW_SECONDS,
    );
    let r = final_result(&mut viewer, STEP).expect("the viewer's result");
    assert_decoded(viewer.name(), &r, WIDTH, HEIGHT);
    end_webcast(&node, publisher, room, codec_mime);
    node.assert_alive();
}

#[test]
fn a_gstreamer_vp8_webcast_reaches_whep_viewers_and_strangers_are_refused() {
    let _heavy = heavy_test_lock();
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let mut node = secure_node(&accounts);
    let host = login(&node.url, HOST).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    let stranger = login(&node.url, STRANGER).unwrap();
    node.api_token = Some(login(&node.url, ADMIN).unwrap());
    let room = "lecture";
    let whip = node.at(&format!("/whip/{room}"));

    // Before the host opens the room: no token → 401; a participant may publish but not open
    // a room → 404 (the room does not exist for it).
    assert_eq!(refused_status("gst-no-token", &whip, None), 401);
    assert_eq!(refused_status("gst-pupil", &whip, Some(&pupil)), 404);
    assert!(node.room_tracks(room).unwrap().is_empty());

    let publisher = gst_publish("gst-host", &whip, Some(&host), &["--seconds", "60"]);
    let published = publisher
        .wait_event("published", STEP)
        .expect("the host's WHIP publish is accepted");
    assert_eq!(published["video_codec"], "VP8", "{published}");
    let id = published["publisher"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!id.is_empty(), "no X-Kaskade-Publisher: {published}");
    assert!(
        published["location"]
            .as_str()
            .is_some_and(|l| l.contains("/sessions/")),
        "{published}"
    );
    wait_for_tracks(&node, room, &id);

    // Another tenant's host sees no room of that name, even while it is live.
    assert_eq!(refused_status("gst-stranger", &whip, Some(&stranger)), 404);

    let mut viewer = whep_viewer(&node, "viewer-pupil", room, "", &pupil, LECTURE_SECONDS);
    let watching = Duration::from_secs_f64(LECTURE_SECONDS) + STEP;
    let r = final_result(&mut viewer, watching).expect("the viewer's result");
    assert_decoded("viewer-pupil", &r, WIDTH, HEIGHT);
    end_webcast(&node, publisher, room, "video/VP8");
    node.assert_alive();
}

#[test]
fn a_gstreamer_h264_webcast_like_obs_sends_reaches_a_whep_viewer() {
    webcast_reaches_a_viewer("h264", "video/H264", "lecture-h264");
}

#[test]
fn a_gstreamer_simulcast_webcast_serves_each_viewer_its_layer() {
    let _heavy = heavy_test_lock();
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let mut node = secure_node(&accounts);
    let host = login(&node.url, HOST).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    node.api_token = Some(login(&node.url, ADMIN).unwrap());
    let room = "lecture-simulcast";
    let whip = node.at(&format!("/whip/{room}"));

    let publisher = gst_publish(
        "gst-simulcast",
        &whip,
        Some(&host),
        &["--simulcast", "--seconds", "60"],
    );
    let published = publisher
        .wait_event("published", STEP)
        .expect("the host's simulcast WHIP publish is accepted");
    assert_eq!(
        published["simulcast"],
        serde_json::json!(["q", "h", "f"]),
        "{published}"
    );
    let id = published["publisher"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for_tracks(&node, room, &id);
    let tracks = node.room_tracks(room).unwrap();
    let video = tracks.iter().find(|t| t["kind"] == "video").unwrap();
    assert_eq!(
        video["layers"],
        serde_json::json!(["q", "h", "f"]),
        "the node sees three layers, lowest first: {video}"
    );

    // Two viewers at once: one capped to the lowest layer, one on the highest.
    let mut low = whep_viewer(
        &node,
        "viewer-low",
        room,
        "?layer=low",
        &pupil,
        VIEW_SECONDS,
    );
    let mut high = whep_viewer(
        &node,
        "viewer-high",
        room,
        "?layer=high",
        &pupil,
        VIEW_SECONDS,
    );
    let low_result = final_result(&mut low, STEP).expect("the low viewer's result");
    let high_result = final_result(&mut high, STEP).expect("the high viewer's result");
    assert_decoded("viewer-low", &low_result, 320.0, 180.0);
    assert_decoded("viewer-high", &high_result, WIDTH, HEIGHT);
    end_webcast(&node, publisher, room, "video/VP8");
    node.assert_alive();
}
