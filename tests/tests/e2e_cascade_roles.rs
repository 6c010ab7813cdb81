//! Owns: roles and moderation across a mesh — a host on one node moderates members served by
//! another node (two sites, so each node serves its own members): promotion, the room setting
//! "only hosts publish" moving the other node's speakers to the audience, and removal, all
//! carried by the relay and checked by the target's node; a non-host elsewhere is refused.

use kaskade_tests::mesh::{MeshNodeSpec, TempDir, make_certs, start_mesh, wait_all_linked};
use kaskade_tests::ws::WsConn;
use kaskade_tests::{heavy_test_lock, node_bin};
use serde_json::{Value, json};
use std::time::Duration;

const STEP: Duration = Duration::from_secs(20);

fn join(ws_url: &str, room: &str, name: &str, role: Option<&str>) -> (WsConn, Value) {
    WsConn::join(ws_url, room, name, role, STEP).expect("joined")
}

#[test]
fn a_host_on_one_node_moderates_members_of_another() {
    let _heavy = heavy_test_lock();
    let certs = TempDir::new("certs-roles");
    make_certs(node_bin!(), &certs.0, &["n1", "n2"]).expect("certs");
    let specs = [
        MeshNodeSpec::new("n1", "a", "127.0.0.41"),
        MeshNodeSpec::new("n2", "b", "127.0.0.42"),
    ];
    let mut nodes = start_mesh(node_bin!(), &specs, &certs.0, &[]).expect("mesh starts");
    wait_all_linked(None, &nodes, &["n1", "n2"]);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let room = "xroles";

    let (mut host, joined) = join(&n1.ws_url(), room, "Teacher", None);
    assert_eq!(joined["role"], "host", "{joined}");
    let (mut student, joined) = join(&n2.ws_url(), room, "Student", Some("audience"));
    assert_eq!(joined["role"], "audience", "{joined}");
    let student_id = joined["participant"].as_str().unwrap().to_owned();
    host.recv_until("the student listed to the host over the relay", STEP, |v| {
        v["type"] == "participant_joined"
            && v["participant"]["id"] == student_id.as_str()
            && v["participant"]["role"] == "audience"
    })
    .unwrap();
    let (mut speaker, joined) = join(&n2.ws_url(), room, "Speaker", None);
    assert_eq!(joined["role"], "speaker", "{joined}");
    let speaker_id = joined["participant"].as_str().unwrap().to_owned();

    // A non-host is refused by its own node.
    speaker
        .send_json(&json!({"type": "set_role", "participant": student_id, "role": "host"}))
        .unwrap();
    let refused = speaker
        .recv_until("forbidden", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // The host on n1 promotes the student on n2.
    host.send_json(&json!({"type": "set_role", "participant": student_id, "role": "speaker"}))
        .unwrap();
    let promoted = student
        .recv_until("own promotion", STEP, |v| {
            v["type"] == "participant_updated" && v["participant"]["id"] == student_id.as_str()
        })
        .unwrap();
    assert_eq!(promoted["participant"]["role"], "speaker", "{promoted}");
    speaker
        .recv_until("the promoted student appears on n2", STEP, |v| {
            v["type"] == "participant_joined" && v["participant"]["id"] == student_id.as_str()
        })
        .unwrap();

    // "Only hosts publish" from n1: n2 moves its own speakers to the audience.
    host.send_json(&json!({"type": "set_room_settings", "settings": {"only_hosts_publish": true}}))
        .unwrap();
    speaker
        .recv_until("the setting reaches n2", STEP, |v| {
            v["type"] == "room_settings_changed" && v["settings"]["only_hosts_publish"] == true
        })
        .unwrap();
    let demoted = speaker
        .recv_until("the speaker on n2 demoted", STEP, |v| {
            v["type"] == "participant_updated" && v["participant"]["id"] == speaker_id.as_str()
        })
        .unwrap();
    assert_eq!(demoted["participant"]["role"], "audience", "{demoted}");
    host.recv_until("the host sees the demotion", STEP, |v| {
        v["type"] == "participant_updated"
            && v["participant"]["id"] == speaker_id.as_str()
            && v["participant"]["role"] == "audience"
    })
    .unwrap();

    // Removal across the relay.
    host.send_json(&json!({"type": "remove_participant", "participant": student_id}))
        .unwrap();
    let removed = student
        .recv_until("removed", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(removed["code"], "removed", "{removed}");
    assert_eq!(removed["fatal"], true, "{removed}");
    assert!(student.recv_close(STEP).is_ok(), "the socket closes");
    host.recv_until("the student leaves", STEP, |v| {
        v["type"] == "participant_left" && v["participant"] == student_id.as_str()
    })
    .unwrap();

    // Locking from n1 keeps newcomers out of n2 too; unlocking lets them in.
    let lock = |locked: bool| {
        json!({"type": "set_room_settings",
               "settings": {"only_hosts_publish": true, "locked": locked}})
    };
    host.send_json(&lock(true)).unwrap();
    speaker
        .recv_until("the lock reaches n2", STEP, |v| {
            v["type"] == "room_settings_changed" && v["settings"]["locked"] == true
        })
        .unwrap();
    let mut late = WsConn::connect(&n2.ws_url()).unwrap();
    late.send_json(&json!({"type": "join", "room": room, "name": "Late"}))
        .unwrap();
    let refused = late
        .recv_until("refused", STEP, |v| {
            v["type"] == "error" || v["type"] == "joined"
        })
        .unwrap();
    assert_eq!(refused["code"], "room_locked", "{refused}");
    assert_eq!(refused["fatal"], false, "{refused}");
    host.send_json(&lock(false)).unwrap();
    speaker
        .recv_until("the unlock reaches n2", STEP, |v| {
            v["type"] == "room_settings_changed" && v["settings"]["locked"] == false
        })
        .unwrap();
    late.send_json(&json!({"type": "join", "room": room, "name": "Late"}))
        .unwrap();
    late.recv_until("joined after the unlock", STEP, |v| v["type"] == "joined")
        .unwrap();

    // The lobby: newcomers on n2 wait until the host on n1 lets them in or turns them away.
    host.send_json(&json!({"type": "set_room_settings",
                           "settings": {"only_hosts_publish": true, "lobby": true}}))
        .unwrap();
    speaker
        .recv_until("the lobby setting reaches n2", STEP, |v| {
            v["type"] == "room_settings_changed" && v["settings"]["lobby"] == true
        })
        .unwrap();
    let mut guest = WsConn::connect(&n2.ws_url()).unwrap();
    guest
        .send_json(&json!({"type": "join", "room": room, "name": "Guest"}))
        .unwrap();
    guest
        .recv_until("waiting", STEP, |v| v["type"] == "lobby_waiting")
        .unwrap();
    let mut intruder = WsConn::connect(&n2.ws_url()).unwrap();
    intruder
        .send_json(&json!({"type": "join", "room": room, "name": "Intruder"}))
        .unwrap();
    intruder
        .recv_until("waiting", STEP, |v| v["type"] == "lobby_waiting")
        .unwrap();
    let lobby = host
        .recv_until("both waiting, seen on n1", STEP, |v| {
            v["type"] == "lobby_changed" && v["waiting"].as_array().is_some_and(|w| w.len() == 2)
        })
        .unwrap();
    let id_of = |name: &str| {
        lobby["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .map(|w| w["participant"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (guest_id, intruder_id) = (id_of("Guest"), id_of("Intruder"));
    // A non-host cannot decide.
    speaker
        .send_json(&json!({"type": "admit_participant", "participant": intruder_id}))
        .unwrap();
    let refused = speaker
        .recv_until("forbidden", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");
    host.send_json(&json!({"type": "admit_participant", "participant": guest_id}))
        .unwrap();
    let joined = guest
        .recv_until("admitted", STEP, |v| {
            v["type"] == "joined" || v["type"] == "error"
        })
        .unwrap();
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["participant"], guest_id.as_str());
    host.send_json(&json!({"type": "deny_participant", "participant": intruder_id}))
        .unwrap();
    let denied = intruder
        .recv_until("denied", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(denied["code"], "lobby_denied", "{denied}");
    assert_eq!(denied["fatal"], true, "{denied}");
    assert!(
        intruder.recv_close(STEP).is_ok(),
        "the denied socket closes"
    );
    host.recv_until("the lobby is empty again", STEP, |v| {
        v["type"] == "lobby_changed" && v["waiting"].as_array().is_some_and(|w| w.is_empty())
    })
    .unwrap();

    // A non-host cannot end the meeting; the host on n1 ends it for everyone on both nodes.
    late.send_json(&json!({"type": "end_meeting"})).unwrap();
    let refused = late
        .recv_until("forbidden", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");
    host.send_json(&json!({"type": "end_meeting"})).unwrap();
    for (who, ws) in [
        ("speaker on n2", &mut speaker),
        ("newcomer on n2", &mut late),
        ("admitted guest on n2", &mut guest),
        ("host", &mut host),
    ] {
        let ended = ws
            .recv_until(who, STEP, |v| v["type"] == "error" && v["fatal"] == true)
            .unwrap();
        assert_eq!(ended["code"], "meeting_ended", "{who}: {ended}");
        assert!(ws.recv_close(STEP).is_ok(), "{who}: the socket closes");
    }
    for node in &mut nodes {
        node.assert_alive();
    }
}
