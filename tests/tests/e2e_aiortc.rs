//! Owns: the end-to-end media tests with real aiortc clients against a real node on loopback —
//! WHIP publish fanned out to WHEP and WebSocket subscribers at full frame rate, publishing over
//! the WebSocket protocol with chat, and clean-up after a publisher is killed with SIGKILL.

use kaskade_tests::clients::{final_result, num};
use kaskade_tests::{NodeProcess, PyClient, heavy_test_lock, node_bin, poll_until};
use serde_json::Value;
use std::time::Duration;

const PUBLISHING_TIMEOUT: Duration = Duration::from_secs(30);
/// Frame rate every subscriber of a 30 fps publisher must decode.
const MIN_FPS: f64 = 25.0;

fn track_ids_of(tracks: &[Value], participant: &str) -> Vec<String> {
    tracks
        .iter()
        .filter(|t| t["participant"] == participant)
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect()
}

/// The tracks a ws_client learnt about: those in `joined` plus every `track_published`.
fn tracks_seen_by(client: &kaskade_tests::Spawned) -> Vec<Value> {
    let mut tracks: Vec<Value> = client
        .events("joined")
        .iter()
        .flat_map(|j| j["tracks"].as_array().cloned().unwrap_or_default())
        .collect();
    tracks.extend(
        client
            .events("track_published")
            .iter()
            .map(|e| e["track"].clone()),
    );
    tracks
}

#[test]
fn whip_publisher_fans_out_to_whep_and_websocket_subscribers() {
    let _heavy = heavy_test_lock();
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    let room = "fanout";

    let publisher = PyClient::whip_publish("whip-pub", &node.at(&format!("/whip/{room}")), 14.0)
        .expect("start publisher");
    let publishing = publisher
        .wait_event("publishing", PUBLISHING_TIMEOUT)
        .expect("publisher connects");
    let publisher_id = publishing["publisher"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !publisher_id.is_empty(),
        "no X-Kaskade-Publisher header: {publishing}"
    );
    let location = publishing["location"].as_str().unwrap_or_default();
    assert!(
        location.contains("/sessions/"),
        "unexpected Location {location:?}"
    );

    // The room and its two tracks are visible through the admin API.
    let tracks = poll_until(
        "the publisher's two tracks in /api/rooms/fanout",
        Duration::from_secs(10),
        || {
            let t = node.room_tracks(room).map_err(|e| e.to_string())?;
            let mine: Vec<_> = t
                .iter()
                .filter(|t| t["participant"] == publisher_id.as_str())
                .cloned()
                .collect();
            if mine.len() == 2 {
                Ok(mine)
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .unwrap();
    let mut kinds: Vec<&str> = tracks.iter().filter_map(|t| t["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["audio", "video"], "{tracks:?}");
    let rooms = node.get_json("/api/rooms").expect("GET /api/rooms");
    let listed = rooms["rooms"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == room).cloned())
        .unwrap_or_else(|| panic!("room {room} not listed: {rooms}"));
    assert!(num(&listed, "tracks") >= 2.0, "{listed}");
    assert!(num(&listed, "participants") >= 1.0, "{listed}");

    let whep_url = node.at(&format!("/whep/{room}"));
    let mut watcher = PyClient::ws_client("ws-watcher", &node.ws_url(), room, "watcher", 8.0, &[])
        .expect("start ws client");
    let mut sub1 = PyClient::whep_subscribe("whep-sub-1", &whep_url, 5.0).expect("start sub 1");
    let mut sub2 = PyClient::whep_subscribe(
        "whep-sub-2",
        &node.at(&format!("/whep/{room}/{publisher_id}")),
        5.0,
    )
    .expect("start sub 2");

    for sub in [&mut sub1, &mut sub2] {
        let r = final_result(sub, Duration::from_secs(40)).expect("subscriber result");
        let name = sub.name().to_owned();
        assert!(
            num(&r, "video_fps") >= MIN_FPS && num(&r, "video_fps_steady") >= MIN_FPS,
            "{name}: video below {MIN_FPS} fps: {r}"
        );
        assert!(
            num(&r, "video_frames") >= 100.0,
            "{name}: too few frames: {r}"
        );
        assert!(
            num(&r, "audio_frames") > 0.0,
            "{name}: no audio decoded: {r}"
        );
        assert_eq!(
            (num(&r, "width"), num(&r, "height")),
            (640.0, 480.0),
            "{name}: {r}"
        );
        assert_eq!(
            r["delete_status"], 200,
            "{name}: DELETE of the WHEP session: {r}"
        );
    }

    let w = final_result(&mut watcher, Duration::from_secs(40)).expect("ws client result");
    let joined = watcher.events("joined");
    assert_eq!(joined.len(), 1, "ws client: {:?}", watcher.lines());
    assert_eq!(joined[0]["room"], room);
    let video_ids: Vec<String> = tracks_seen_by(&watcher)
        .iter()
        .filter(|t| t["participant"] == publisher_id.as_str() && t["kind"] == "video")
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        video_ids.len(),
        1,
        "ws client did not learn the publisher's video: {:?}",
        watcher.lines()
    );
    let frames = num(&w["tracks"][&video_ids[0]], "frames");
    assert!(
        frames > 0.0,
        "ws client decoded no frame of {}: {w}",
        video_ids[0]
    );
    assert!(
        watcher.events("error").is_empty(),
        "node sent errors: {:?}",
        watcher.events("error")
    );

    // Forwarding shows in the metrics.
    for name in [
        "kaskade_packets_in_total",
        "kaskade_packets_out_total",
        "kaskade_bytes_in_total",
        "kaskade_bytes_out_total",
        "kaskade_forward_latency_seconds_count",
    ] {
        let v = node
            .metric(name, &[])
            .expect("scrape")
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(v > 0.0, "{name} = {v}");
    }

    // After its DELETE, the publisher's tracks are gone.
    let done = publisher
        .wait_event("done", Duration::from_secs(40))
        .expect("publisher ends");
    assert_eq!(done["delete_status"], 200, "{done}");
    poll_until(
        "the publisher's tracks to go after DELETE",
        Duration::from_secs(10),
        || {
            let t = node.room_tracks(room).map_err(|e| e.to_string())?;
            if track_ids_of(&t, &publisher_id).is_empty() {
                Ok(())
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .unwrap();
    node.assert_alive();
}

#[test]
fn websocket_publisher_reaches_websocket_subscriber_with_chat() {
    let _heavy = heavy_test_lock();
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    let room = "ws-pub";
    let mut bob =
        PyClient::ws_client("ws-bob", &node.ws_url(), room, "Bob", 12.0, &[]).expect("start Bob");
    bob.wait_event("joined", Duration::from_secs(15))
        .expect("Bob joins");
    let mut alice = PyClient::ws_client(
        "ws-alice",
        &node.ws_url(),
        room,
        "Alice",
        30.0,
        &["--publish", "--chat", "hello from Alice"],
    )
    .expect("start Alice");
    let alice_joined = alice
        .wait_event("joined", Duration::from_secs(15))
        .expect("Alice joins");
    let alice_id = alice_joined["participant"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let names: Vec<&str> = alice_joined["participants"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"Bob"),
        "Alice's joined does not list Bob: {alice_joined}"
    );

    let published = alice
        .wait_event("published", Duration::from_secs(20))
        .expect("publish answer");
    assert_eq!(
        published["tracks"].as_object().map(|m| m.len()),
        Some(2),
        "publish_answer should map both mids: {published}"
    );
    alice
        .wait_event("publish_connected", Duration::from_secs(20))
        .expect("publish connection");

    let chat = bob
        .wait_json("Alice's chat", Duration::from_secs(15), |v| {
            v["event"] == "chat"
        })
        .expect("Bob gets the chat");
    assert_eq!(chat["text"], "hello from Alice", "{chat}");
    assert_eq!(chat["name"], "Alice", "{chat}");
    assert_eq!(chat["from"], alice_id.as_str(), "{chat}");
    bob.wait_json("participant_joined Alice", Duration::from_secs(5), |v| {
        v["event"] == "participant_joined" && v["participant"]["name"] == "Alice"
    })
    .expect("Bob sees Alice join");

    // Sources declared in publish_offer reach the other participant.
    let camera = bob
        .wait_json("Alice's camera track", Duration::from_secs(15), |v| {
            v["event"] == "track_published" && v["track"]["source"] == "camera"
        })
        .expect("camera published");
    assert_eq!(camera["track"]["participant"], alice_id.as_str());
    assert_eq!(camera["track"]["kind"], "video");
    bob.wait_json("Alice's microphone track", Duration::from_secs(15), |v| {
        v["event"] == "track_published" && v["track"]["source"] == "microphone"
    })
    .expect("microphone published");
    let camera_id = camera["track"]["id"].as_str().unwrap().to_owned();
    bob.wait_json(
        "the first frame of Alice's camera",
        Duration::from_secs(20),
        |v| v["event"] == "first_frame" && v["track"] == camera_id.as_str(),
    )
    .expect("Bob decodes Alice's camera");

    let r = final_result(&mut bob, Duration::from_secs(40)).expect("Bob's result");
    let cam = &r["tracks"][&camera_id];
    assert!(num(cam, "fps_steady") >= 20.0, "Alice's camera at Bob: {r}");
    assert_eq!(
        (num(cam, "width"), num(cam, "height")),
        (640.0, 480.0),
        "{r}"
    );
    assert!(num(&r, "audio_frames") > 0.0, "Bob decoded no audio: {r}");
    alice.signal(libc::SIGTERM);
    final_result(&mut alice, Duration::from_secs(20)).expect("Alice ends cleanly");
    node.assert_alive();
}

#[test]
fn killed_publisher_is_removed_from_the_room() {
    let _heavy = heavy_test_lock();
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    let room = "kill9";
    let observer = PyClient::ws_client("ws-observer", &node.ws_url(), room, "observer", 90.0, &[])
        .expect("start observer");
    observer
        .wait_event("joined", Duration::from_secs(15))
        .expect("observer joins");

    let mut publisher =
        PyClient::whip_publish("whip-victim", &node.at(&format!("/whip/{room}")), 90.0)
            .expect("start publisher");
    let publishing = publisher
        .wait_event("publishing", PUBLISHING_TIMEOUT)
        .expect("publisher connects");
    let publisher_id = publishing["publisher"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let ids = poll_until(
        "two tracks of the publisher",
        Duration::from_secs(10),
        || {
            let t = node.room_tracks(room).map_err(|e| e.to_string())?;
            let ids = track_ids_of(&t, &publisher_id);
            if ids.len() == 2 {
                Ok(ids)
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .unwrap();
    for id in &ids {
        observer
            .wait_json(
                &format!("track_published {id}"),
                Duration::from_secs(15),
                |v| v["event"] == "track_published" && v["track"]["id"] == id.as_str(),
            )
            .expect("observer learns of the track");
    }
    observer
        .wait_json(
            "the first decoded video frame",
            Duration::from_secs(20),
            |v| v["event"] == "first_frame" && v["kind"] == "video",
        )
        .expect("observer receives the publisher's video");

    // kill -9: no DELETE, no DTLS close alert; the node must notice by itself.
    publisher.kill9();
    publisher
        .wait_exit(Duration::from_secs(5))
        .expect("publisher dies");
    poll_until(
        "the killed publisher's tracks to leave the room",
        Duration::from_secs(30),
        || {
            let t = node.room_tracks(room).map_err(|e| e.to_string())?;
            if track_ids_of(&t, &publisher_id).is_empty() {
                Ok(())
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .unwrap();
    for id in &ids {
        observer
            .wait_json(
                &format!("track_unpublished {id}"),
                Duration::from_secs(10),
                |v| v["event"] == "track_unpublished" && v["track"] == id.as_str(),
            )
            .expect("observer is told the track is gone");
    }
    let tracks = node
        .metric("kaskade_tracks", &[])
        .expect("scrape")
        .expect("kaskade_tracks");
    assert_eq!(tracks, 0.0, "kaskade_tracks after the only publisher died");
    node.assert_alive();
}
