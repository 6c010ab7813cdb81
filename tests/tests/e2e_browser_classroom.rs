//! Owns: the headless-Chromium classroom test — the node and Chromium run inside a network
//! namespace made for the test; tests/browser/classroom.mjs (Playwright) drives a teacher page
//! (first in the room, so host; turns on "only hosts publish") and a student page joined with
//! `?role=audience` through watching, a refused publish, a raised hand, a promotion ("Let speak")
//! with the student's camera decoded at the teacher, "Mute all", a demotion that stops the
//! student's publishing, a locked room (the student sees the Locked badge, a late student's join
//! is refused with `room_locked` until the teacher unlocks and it tries again), a removal that the
//! student's page shows and does not undo by reconnecting, and "End meeting for all", after which
//! the late student's and the teacher's pages are ended for good; this test asserts on its JSON.
//!
//! Needs /usr/bin/chromium (or $KASKADE_CHROMIUM), node + npm, iproute2 and root; the test FAILS
//! when they are missing unless KASKADE_SKIP_BROWSER=1. `npm ci --prefix tests/browser` is run
//! here when tests/browser/node_modules is missing (.ci/run should do it up front).

use kaskade_tests::browser::{browser_kit, run_scenario};
use kaskade_tests::clients::num;
use kaskade_tests::{NetNs, NodeProcess, heavy_test_lock, node_bin};
use serde_json::Value;
use std::time::Duration;

/// Frames the scenario waits to see decoded (it asks for 30 more than when first seen).
const MIN_FRAME_GROWTH: f64 = 30.0;

#[test]
fn a_teacher_lets_an_audience_member_speak_locks_the_room_and_ends_the_meeting() {
    let Some((chromium, node_js)) = browser_kit() else {
        return;
    };
    let _heavy = heavy_test_lock();

    // Drop order (reverse of declaration): script, node, then the namespace.
    let ns = NetNs::create().expect("create the test network namespace");
    let node =
        NodeProcess::start_in(Some(&ns), node_bin!(), &[]).expect("node starts in the namespace");
    let room = "classroom-room";
    let result = run_scenario(
        &ns,
        &node_js,
        &chromium,
        "classroom.mjs",
        &["--url", &node.url, "--room", room, "--timeout", "170"],
        Duration::from_secs(220),
        || node.proc.diagnostics(),
    );
    eprintln!("classroom scenario result: {result}");
    assert_classroom_scenario(&result);
    drop(node);
    drop(ns);
}

/// What classroom.mjs's result must show beyond `ok`.
fn assert_classroom_scenario(result: &Value) {
    let ids = &result["ids"];
    assert!(
        ids["teacher"].is_string()
            && ids["student"].is_string()
            && ids["teacher"] != ids["student"],
        "participant ids: {ids}"
    );

    // The teacher published camera and microphone; the student decoded the camera, on its stage.
    let published: Vec<&str> = result["teacher_published"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        published.contains(&"camera") && published.contains(&"microphone"),
        "teacher's published tracks: {published:?}"
    );
    let watched = &result["student_sees_teacher"];
    assert!(
        num(watched, "growth") >= MIN_FRAME_GROWTH,
        "student sees teacher: {watched}"
    );
    assert!(
        num(watched, "width") > 0.0 && num(watched, "height") > 0.0,
        "student sees teacher: {watched}"
    );
    assert_eq!(
        watched["stage"], true,
        "the host's camera belongs on the stage: {watched}"
    );

    // As audience: no publish controls, no publish connection, no live camera or microphone;
    // a publish forced through the page was refused by the node.
    let audience = &result["student_audience"];
    for control in ["mic", "cam", "screen"] {
        assert_eq!(
            audience["controls"][control], false,
            "audience {control} control: {audience}"
        );
    }
    assert_eq!(audience["controls"]["raiseHand"], true, "{audience}");
    assert!(audience["publishPc"].is_null(), "{audience}");
    assert_eq!(
        audience["liveLocalTracks"],
        serde_json::json!([]),
        "{audience}"
    );
    let forced = &result["forced_publish"];
    assert!(
        forced["error"]
            .as_str()
            .unwrap_or_default()
            .contains("forbidden"),
        "the forced publish must be refused as forbidden: {forced}"
    );
    assert_eq!(forced["role"], "audience", "{forced}");

    for who in ["student", "teacher"] {
        let shown = result["audience_count"][who].as_str().unwrap_or_default();
        assert!(
            shown.contains("1 in the audience"),
            "{who} audience count: {shown:?}"
        );
    }
    assert!(
        result["hand_queue"]
            .as_array()
            .is_some_and(|q| q.contains(&ids["student"])),
        "hand queue: {}",
        result["hand_queue"]
    );

    // Promoted: the student published its camera and the teacher decoded frames from it.
    let promoted = &result["student_promoted"];
    assert_eq!(promoted["controls"]["mic"], true, "{promoted}");
    assert_eq!(promoted["controls"]["cam"], true, "{promoted}");
    let heard = &result["teacher_sees_student"];
    assert!(
        num(heard, "growth") >= MIN_FRAME_GROWTH,
        "the student's video frames at the teacher must increase after the promotion: {heard}"
    );
    assert!(
        num(heard, "fps") > 5.0,
        "student's camera at the teacher: {heard}"
    );
    assert!(
        num(heard, "width") > 0.0 && num(heard, "height") > 0.0,
        "student's camera at the teacher: {heard}"
    );
    assert_eq!(
        heard["stage"], false,
        "a speaker's camera is in the strip: {heard}"
    );
    // The tile's indicator: received resolution and forwarded layer; the node's estimate shown.
    let quality = &result["quality"];
    let indicator = quality["indicator"].as_str().unwrap_or_default();
    assert!(
        indicator.contains('\u{d7}') && indicator.contains("layer"),
        "tile quality indicator: {quality}"
    );
    assert!(
        num(&quality["receive_quality"], "estimate_bps") > 0.0,
        "receive_quality: {quality}"
    );

    // "Mute all" muted the student (its page shows its microphone muted), not the host.
    let mute_all = &result["mute_all"];
    assert_eq!(mute_all["student"]["pressed"], "true", "{mute_all}");
    assert_eq!(mute_all["teacher_lists_muted"], true, "{mute_all}");
    assert_ne!(mute_all["teacher_own_mic"]["pressed"], "true", "{mute_all}");

    // Moved back: publishing stopped, the teacher's tile of the student went at once (not after
    // the 4 s a tile keeps its last frame while its participant moves between nodes), and the
    // teacher still lists the student (hosts see the audience).
    let demoted = &result["student_demoted"];
    for control in ["mic", "cam", "screen"] {
        assert_eq!(
            demoted["controls"][control], false,
            "demoted {control} control: {demoted}"
        );
    }
    assert!(
        num(&result["student_tile_gone"], "ms") < 3_000.0,
        "{}",
        result["student_tile_gone"]
    );
    assert_eq!(result["teacher_lists_student_as"], "audience", "{result}");

    // Removed: a fatal `removed`, shown as such, and no reconnection afterwards.
    let removed = &result["removed"];
    assert_eq!(removed["state"], "removed", "{removed}");
    assert!(
        removed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("removed"),
        "{removed}"
    );
    assert_eq!(removed["after_3s"]["state"], "removed", "{removed}");
    assert_eq!(removed["after_3s"]["reconnects"], 0, "{removed}");
    assert_eq!(result["teacher_role_at_end"], "host", "{result}");

    assert_lock_and_end(result);
}

/// The locked room, the late student refused and then let in, and the meeting ended for all.
fn assert_lock_and_end(result: &Value) {
    // Locked: the badge for those in the room; "only hosts publish" was sent along and kept.
    let locked = &result["locked"];
    assert_settings_seen(locked, true);
    assert!(
        locked["student"]["badge"]
            .as_str()
            .unwrap_or_default()
            .contains("Locked"),
        "the student's Locked badge: {locked}"
    );
    assert_eq!(
        locked["teacher"]["lockRoomLabel"], "Unlock room",
        "{locked}"
    );

    // The late student: refused, on the join form with the reason and a way to try again, no
    // retry by itself, no camera left on.
    let refused = &result["late_locked"];
    assert_eq!(refused["state"], "locked", "{refused}");
    assert_eq!(refused["joinForm"], true, "{refused}");
    assert!(
        refused["joinNote"]
            .as_str()
            .unwrap_or_default()
            .contains("This room is locked; ask a host to unlock it"),
        "{refused}"
    );
    assert_eq!(refused["joinButton"], "Try again", "{refused}");
    assert_eq!(refused["after_2s"]["state"], "locked", "{refused}");
    assert_eq!(refused["after_2s"]["reconnects"], 0, "{refused}");
    assert_eq!(
        refused["after_2s"]["liveLocalTracks"],
        serde_json::json!([]),
        "{refused}"
    );

    // Unlocked: the badge went, and "Try again" got the late student in.
    let unlocked = &result["unlocked"];
    assert_settings_seen(unlocked, false);
    assert!(unlocked["student"]["badge"].is_null(), "{unlocked}");
    let late = &result["late_joined"];
    assert_eq!(late["state"], "joined", "{late}");
    assert_eq!(late["role"], "audience", "{late}");
    assert!(result["ids"]["late"].is_string(), "{}", result["ids"]);

    // Ended: confirmed in a dialog, every page still in the room ended for good.
    let ended = &result["ended"];
    assert_eq!(ended["dialog"]["type"], "confirm", "{ended}");
    for who in ["late", "teacher"] {
        assert_eq!(ended[who]["state"], "ended", "{who}: {ended}");
        assert!(
            ended[who]["status"]
                .as_str()
                .unwrap_or_default()
                .contains("The host ended the meeting"),
            "{who}: {ended}"
        );
        let after = &ended["after_3s"][who];
        assert_eq!(after["state"], "ended", "{who}: {ended}");
        assert_eq!(after["reconnects"], 0, "{who}: {ended}");
        assert!(after["moving"].is_null(), "{who}: {ended}");
        assert_eq!(
            after["liveLocalTracks"],
            serde_json::json!([]),
            "{who}: {ended}"
        );
    }
    // The student removed before stays removed.
    assert_eq!(ended["after_3s"]["student"]["state"], "removed", "{ended}");
}

/// Both pages in the room saw `locked`, with "only hosts publish" still on (each toggle sends
/// the whole settings, so one must not reset the other).
fn assert_settings_seen(stage: &Value, locked: bool) {
    for who in ["teacher", "student"] {
        let settings = &stage[who]["settings"];
        assert_eq!(settings["locked"], locked, "{who}: {stage}");
        assert_eq!(settings["only_hosts_publish"], true, "{who}: {stage}");
    }
}
