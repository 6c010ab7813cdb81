//! Owns: end-to-end tests of webinar roles and the dominant speaker with real aiortc clients
//! against one node: an audience member is refused when it publishes and publishes once a host
//! promotes it (and stops when moved back); non-hosts cannot moderate; a host's mute stops the
//! node forwarding; the dominant speaker follows the client that starts speaking louder.

use kaskade_tests::clients::{PyClient, final_result};
use kaskade_tests::ws::WsConn;
use kaskade_tests::{NodeProcess, heavy_test_lock, node_bin};
use serde_json::{Value, json};
use std::time::Duration;

const STEP: Duration = Duration::from_secs(20);

fn join(ws_url: &str, room: &str, name: &str, role: Option<&str>) -> (WsConn, Value) {
    WsConn::join(ws_url, room, name, role, STEP).expect("joined")
}

#[test]
fn audience_publishes_only_after_a_host_promotes_it() {
    let _heavy = heavy_test_lock();
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    let room = "class-roles";
    let ws_url = node.ws_url();

    let (mut host, joined) = join(&ws_url, room, "Teacher", None);
    assert_eq!(
        joined["role"], "host",
        "the first participant hosts: {joined}"
    );
    let (mut speaker, joined) = join(&ws_url, room, "Speaker", None);
    assert_eq!(joined["role"], "speaker", "{joined}");

    // A speaker may not moderate.
    speaker
        .send_json(&json!({"type": "mute_participant"}))
        .unwrap();
    let refused = speaker
        .recv_until("forbidden", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");

    let mut student = PyClient::ws_client(
        "student",
        &ws_url,
        room,
        "Student",
        60.0,
        &["--role", "audience", "--publish"],
    )
    .expect("start the student");
    let joined = student.wait_event("joined", STEP).expect("student joins");
    assert_eq!(joined["role"], "audience", "{joined}");
    let student_id = joined["participant"].as_str().unwrap().to_owned();
    let refused = student
        .wait_json("publish refused", STEP, |v| v["event"] == "error")
        .expect("the audience member's publish offer is refused");
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("raise your hand")),
        "the refusal says what to do: {refused}"
    );

    // Hosts see audience members; speakers only their count.
    let listed = host
        .recv_until("the student listed to the host", STEP, |v| {
            v["type"] == "participant_joined" && v["participant"]["id"] == student_id.as_str()
        })
        .unwrap();
    assert_eq!(listed["participant"]["role"], "audience");
    let count = speaker
        .recv_until("audience count", STEP, |v| {
            v["type"] == "audience_count"
                || (v["type"] == "participant_joined"
                    && v["participant"]["id"] == student_id.as_str())
        })
        .unwrap();
    assert_eq!(
        count,
        json!({"type": "audience_count", "count": 1}),
        "speakers are not told who is in the audience"
    );

    // A raised hand is seen by hosts only.
    let (mut hand, _) = join(&ws_url, room, "Hand", Some("audience"));
    let hand_id = host
        .recv_until("the second audience member", STEP, |v| {
            v["type"] == "participant_joined" && v["participant"]["name"] == "Hand"
        })
        .unwrap()["participant"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    hand.send_json(&json!({"type": "raise_hand", "raised": true}))
        .unwrap();
    let raised = host
        .recv_until("the raised hand", STEP, |v| {
            v["type"] == "participant_updated" && v["participant"]["id"] == hand_id.as_str()
        })
        .unwrap();
    assert!(
        raised["participant"]["hand_raised_at"].as_u64().is_some(),
        "{raised}"
    );
    let mine = hand
        .recv_until("own hand", STEP, |v| v["type"] == "participant_updated")
        .unwrap();
    assert_eq!(mine["participant"]["id"], hand_id.as_str(), "{mine}");

    // Promote → the student publishes.
    host.send_json(&json!({"type": "set_role", "participant": student_id, "role": "speaker"}))
        .unwrap();
    let appeared = speaker
        .recv_until("the promoted student appears", STEP, |v| {
            v["type"] == "participant_joined" && v["participant"]["id"] == student_id.as_str()
        })
        .unwrap();
    assert_eq!(appeared["participant"]["role"], "speaker");
    let published = student
        .wait_event("published", STEP)
        .expect("the promoted student publishes");
    assert_eq!(published["tracks"].as_object().map(|m| m.len()), Some(2));
    student
        .wait_event("publish_connected", STEP)
        .expect("its publish connection comes up");
    let camera = speaker
        .recv_until("the student's camera", STEP, |v| {
            v["type"] == "track_published"
                && v["track"]["participant"] == student_id.as_str()
                && v["track"]["kind"] == "video"
        })
        .unwrap();
    assert_eq!(camera["track"]["participant"], student_id.as_str());
    let camera_id = camera["track"]["id"].as_str().unwrap().to_owned();

    // A host mutes the student's camera: everyone sees it muted, the student is told who did it.
    host.send_json(
        &json!({"type": "mute_participant", "participant": student_id, "kind": "video"}),
    )
    .unwrap();
    let muted = student
        .wait_json("muted by host", STEP, |v| v["event"] == "muted_by_host")
        .expect("the student hears of the mute");
    assert_eq!(muted["track"], camera_id.as_str(), "{muted}");
    speaker
        .recv_until("the camera shown muted", STEP, |v| {
            v["type"] == "track_muted" && v["track"] == camera_id.as_str() && v["muted"] == true
        })
        .unwrap();

    // Back to the audience: the node closes the student's publish connection.
    host.send_json(&json!({"type": "set_role", "participant": student_id, "role": "audience"}))
        .unwrap();
    student
        .wait_event("publish_closed", STEP)
        .expect("the node closes the demoted student's publish connection");
    speaker
        .recv_until("the demoted student's tracks go", STEP, |v| {
            v["type"] == "track_unpublished"
        })
        .unwrap();
    speaker
        .recv_until("the demoted student leaves the speakers' view", STEP, |v| {
            v["type"] == "participant_left" && v["participant"] == student_id.as_str()
        })
        .unwrap();
    // Speakers never heard of the raised hand.
    let (mut late, joined) = join(&ws_url, room, "Late", None);
    assert!(
        joined["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["role"] != "audience"),
        "audience members are not listed to speakers: {joined}"
    );
    assert_eq!(joined["audience"], 2, "{joined}");
    late.send_json(&json!({"type": "leave"})).unwrap();

    // Remove: the student's session ends with a fatal `removed`.
    host.send_json(&json!({"type": "remove_participant", "participant": student_id}))
        .unwrap();
    let removed = student
        .wait_json("removed", STEP, |v| {
            v["event"] == "error" && v["code"] == "removed"
        })
        .expect("the student is told it was removed");
    assert_eq!(removed["fatal"], true, "{removed}");
    student.wait_event("closed", STEP).expect("socket closed");
    final_result(&mut student, STEP).expect("the student ends");
    node.assert_alive();
}

#[test]
fn dominant_speaker_follows_the_client_that_speaks_louder() {
    let _heavy = heavy_test_lock();
    let mut node = NodeProcess::start(node_bin!(), &[]).expect("node starts");
    let room = "loud";
    let ws_url = node.ws_url();
    let (mut observer, _) = join(&ws_url, room, "Observer", None);

    let steady = PyClient::ws_client(
        "steady",
        &ws_url,
        room,
        "Steady",
        40.0,
        &["--publish", "--audio-only", "--tone-amplitude", "3000"],
    )
    .expect("start the steady speaker");
    let steady_id = steady.wait_event("joined", STEP).unwrap()["participant"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = observer
        .recv_until("the steady speaker dominates", STEP, |v| {
            v["type"] == "dominant_speaker" && v["participant"] == steady_id.as_str()
        })
        .unwrap();
    assert_eq!(first["recent"][0], steady_id.as_str());

    // Silent at first, then much louder than the steady one.
    let loud = PyClient::ws_client(
        "loud",
        &ws_url,
        room,
        "Loud",
        40.0,
        &[
            "--publish",
            "--audio-only",
            "--tone-amplitude",
            "0",
            "--loud-after",
            "3",
            "--loud-amplitude",
            "24000",
        ],
    )
    .expect("start the loud speaker");
    let loud_id = loud.wait_event("joined", STEP).unwrap()["participant"]
        .as_str()
        .unwrap()
        .to_owned();
    loud.wait_event("got_loud", STEP).expect("it gets loud");
    let switched = observer
        .recv_until("the louder client dominates", STEP, |v| {
            v["type"] == "dominant_speaker" && v["participant"] == loud_id.as_str()
        })
        .unwrap();
    assert_eq!(
        switched["recent"],
        json!([loud_id, steady_id]),
        "last-N history, newest first"
    );
    node.assert_alive();
}
