//! Owns: the headless-Chromium end-to-end test — the node and Chromium run inside a network
//! namespace made for the test; tests/browser/two_pages.mjs (Playwright) drives two pages of the
//! web client through camera, audio, chat and screen share, and this test asserts on its JSON.
//!
//! Needs /usr/bin/chromium (or $KASKADE_CHROMIUM), node + npm, iproute2 and root; the test FAILS
//! when they are missing unless KASKADE_SKIP_BROWSER=1. `npm ci --prefix tests/browser` is run
//! here when tests/browser/node_modules is missing (.ci/run should do it up front).

use kaskade_tests::browser::{ensure_playwright, preflight, skip_requested};
use kaskade_tests::clients::num;
use kaskade_tests::{
    NetNs, NodeProcess, Spawned, artifacts_dir, heavy_test_lock, node_bin, tests_dir,
};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

fn api_tracks(api: &Value) -> Vec<Value> {
    assert_eq!(
        api["status"], 200,
        "GET /api/rooms/{{room}} from the page: {api}"
    );
    api["body"]["tracks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn two_browsers_see_each_other_chat_and_share_a_screen() {
    if skip_requested() {
        eprintln!("browser test skipped: KASKADE_SKIP_BROWSER=1");
        return;
    }
    let (chromium, node_js) = preflight();
    let browser_dir = tests_dir().join("browser");
    ensure_playwright(&browser_dir);
    let _heavy = heavy_test_lock();

    // Drop order (reverse of declaration): script, node, then the namespace.
    let ns = NetNs::create().expect("create the test network namespace");
    let node =
        NodeProcess::start_in(Some(&ns), node_bin!(), &[]).expect("node starts in the namespace");
    let room = "browser-room";
    let mut cmd = Command::new(node_js);
    cmd.arg(browser_dir.join("two_pages.mjs"))
        .args(["--url", &node.url, "--room", room, "--timeout", "150"])
        .arg("--artifacts")
        .arg(artifacts_dir())
        .arg("--chromium")
        .arg(&chromium)
        .current_dir(&browser_dir);
    let mut script = Spawned::spawn("two_pages.mjs", ns.wrap(&cmd)).expect("start two_pages.mjs");
    script.grace = Duration::from_secs(10);
    let status = script
        .wait_exit(Duration::from_secs(200))
        .expect("two_pages.mjs ends");
    let result = script
        .events("result")
        .pop()
        .unwrap_or_else(|| panic!("two_pages.mjs printed no result\n{}", script.diagnostics()));
    assert!(
        result["ok"] == true && status.success(),
        "browser scenario failed at stage {}: {}\nfull result: {result}\n{}",
        result["stage"],
        result["reason"],
        script.diagnostics()
    );

    eprintln!("browser scenario result: {result}");
    let ids = &result["ids"];
    for (seen, who) in [("a_sees_b_camera", "b"), ("b_sees_a_camera", "a")] {
        let cam = &result[seen];
        assert!(num(cam, "growth") >= 30.0, "{seen}: {cam}");
        assert!(
            num(cam, "width") > 0.0 && num(cam, "height") > 0.0,
            "{seen}: {cam}"
        );
        assert!(
            ids[who].is_string(),
            "no participant id for {who}: {result}"
        );
    }
    for who in ["a", "b"] {
        assert!(
            num(&result["audio"][who], "packetsReceived") > 0.0,
            "audio at {who}: {result}"
        );
    }
    let chat = &result["chat"];
    assert_eq!(chat["text"], chat["sent"], "{chat}");
    assert!(
        chat["name"]
            .as_str()
            .unwrap_or_default()
            .contains(result["names"]["a"].as_str().unwrap()),
        "the chat line should carry the sender's name: {chat}"
    );
    let screen = &result["screen"];
    assert!(num(screen, "growth") >= 15.0, "screen share at B: {screen}");

    // The node's own view, fetched by the page (same origin) while both were in the room.
    let joined_tracks = api_tracks(&result["api_after_join"]);
    let participants = result["api_after_join"]["body"]["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(participants.len(), 2, "participants: {participants:?}");
    for who in ["a", "b"] {
        let mine: Vec<&Value> = joined_tracks
            .iter()
            .filter(|t| t["participant"] == ids[who])
            .collect();
        assert!(
            mine.iter()
                .any(|t| t["kind"] == "video" && t["source"] == "camera")
                && mine
                    .iter()
                    .any(|t| t["kind"] == "audio" && t["source"] == "microphone"),
            "{who}'s camera and microphone in /api/rooms: {joined_tracks:?}"
        );
    }
    let screen_tracks: Vec<Value> = api_tracks(&result["api_after_screen"])
        .into_iter()
        .filter(|t| t["source"] == "screen")
        .collect();
    assert_eq!(screen_tracks.len(), 1, "{screen_tracks:?}");
    assert_eq!(screen_tracks[0]["participant"], ids["a"]);
    drop(script);
    drop(node);
    drop(ns);
}
