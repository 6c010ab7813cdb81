//! Owns: the headless-Chromium room-protection test — a node WITH access control (accounts made
//! by `kaskade accounts`) and Chromium run inside a network namespace made for the test;
//! tests/browser/lobby.mjs (Playwright) drives a teacher page (host token) that turns the lobby
//! on and sets a room password, a student page (participant token) that is asked for the
//! password, refused a wrong one, waits in the lobby, is admitted and decodes the teacher's
//! camera, a guest page (invite token minted here) that waits and is denied, and a "Remove and
//! ban" of the student whose reload ends in state `banned`; this test asserts on its JSON.
//!
//! Needs /usr/bin/chromium (or $KASKADE_CHROMIUM), node + npm, iproute2 and root; the test FAILS
//! when they are missing unless KASKADE_SKIP_BROWSER=1.

use kaskade_tests::access::{Accounts, HOST, PARTICIPANT, login};
use kaskade_tests::browser::{browser_kit, in_netns, run_scenario};
use kaskade_tests::clients::num;
use kaskade_tests::ws::WsConn;
use kaskade_tests::{NetNs, NodeProcess, heavy_test_lock, http, node_bin};
use serde_json::{Value, json};
use std::time::Duration;

const ROOM: &str = "lobby-room";
/// The room password the teacher sets (only ever typed into the pages).
const ROOM_PASSWORD: &str = "staffroom-4729";
/// Frames the student must decode from the teacher's camera once admitted.
const MIN_FRAME_GROWTH: f64 = 30.0;

/// Access tokens of the three pages.
struct Tokens {
    host: String,
    student: String,
    guest: String,
}

/// Logs the host and the participant in, opens the room (a host's join: rooms exist once a host
/// opened them, and invites are minted for existing rooms only) and mints a watch-only guest
/// invite for it. Runs inside the namespace, where the node listens.
fn tokens(node: &NodeProcess) -> Tokens {
    let host = login(&node.url, HOST).expect("the host logs in");
    let student = login(&node.url, PARTICIPANT).expect("the participant logs in");
    let mut ws = WsConn::connect(&node.ws_url()).expect("WebSocket to the node");
    ws.send_json(&json!({"type": "join", "room": ROOM, "name": "opener", "token": host}))
        .expect("send join");
    let joined = ws
        .recv_until("joined or error", Duration::from_secs(10), |v| {
            v["type"] == "joined" || v["type"] == "error"
        })
        .expect("an answer to the host's join");
    assert_eq!(
        joined["type"], "joined",
        "the host opens the room: {joined}"
    );
    let r = http::request_with_bearer(
        "POST",
        &node.at(&format!("/api/rooms/{ROOM}/invites")),
        Some(&host),
        &[("Content-Type", "application/json")],
        json!({}).to_string().as_bytes(),
    )
    .expect("POST invites");
    assert_eq!(r.status, 201, "guest invite: {}", r.text());
    let guest = r.json().expect("invite JSON")["token"]
        .as_str()
        .expect("invite token")
        .to_owned();
    let _ = ws.send_json(&json!({"type": "leave"}));
    Tokens {
        host,
        student,
        guest,
    }
}

#[test]
fn a_host_admits_from_the_lobby_denies_a_guest_and_bans_a_participant() {
    let Some((chromium, node_js)) = browser_kit() else {
        return;
    };
    let _heavy = heavy_test_lock();

    // Drop order (reverse of declaration): script, node, then the namespace and the accounts.
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let ns = NetNs::create().expect("create the test network namespace");
    // `--data-dir`: access control on (the harness then adds no --insecure-dev).
    let args = accounts.node_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node =
        NodeProcess::start_in(Some(&ns), node_bin!(), &args).expect("node starts in the namespace");
    let tokens = in_netns(&ns, || tokens(&node));
    let result = run_scenario(
        &ns,
        &node_js,
        &chromium,
        "lobby.mjs",
        &[
            "--url",
            &node.url,
            "--room",
            ROOM,
            "--timeout",
            "170",
            "--host-token",
            &tokens.host,
            "--student-token",
            &tokens.student,
            "--guest-token",
            &tokens.guest,
            "--password",
            ROOM_PASSWORD,
        ],
        Duration::from_secs(220),
        || node.proc.diagnostics(),
    );
    eprintln!("lobby scenario result: {result}");
    assert_lobby_scenario(&result);
    drop(node);
    drop(ns);
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// What lobby.mjs's result must show beyond `ok`.
fn assert_lobby_scenario(result: &Value) {
    let ids = &result["ids"];
    assert!(
        ids["teacher"].is_string()
            && ids["student"].is_string()
            && ids["teacher"] != ids["student"],
        "participant ids: {ids}"
    );

    // a. Lobby on (all three settings sent: the others kept), password set, the field emptied.
    let on = &result["lobby_on"];
    assert_eq!(on["settings"]["lobby"], true, "{on}");
    assert_eq!(on["settings"]["locked"], false, "{on}");
    assert_eq!(on["settings"]["only_hosts_publish"], false, "{on}");
    assert_eq!(on["badge"], true, "the Lobby badge: {on}");
    let set = &result["password_set"];
    assert!(text(set, "status").contains("Password set"), "{set}");
    assert_eq!(set["protected"], true, "{set}");
    assert_eq!(set["inputAfter"], "", "the host panel keeps no copy: {set}");
    assert_eq!(set["settings"]["lobby"], true, "{set}");

    // b. Asked for the password (the node's reason shown), a wrong one named wrong, the right
    // one into the lobby — which outlasts the page's 5 s join-reply timeout.
    let asked = &result["student_asked"];
    assert_eq!(asked["state"], "password", "{asked}");
    assert!(
        text(asked, "reason").to_lowercase().contains("password"),
        "{asked}"
    );
    assert_eq!(
        asked["liveLocalTracks"],
        json!([]),
        "no camera while asked for the password: {asked}"
    );
    let wrong = &result["student_wrong"];
    assert_eq!(wrong["state"], "password", "{wrong}");
    assert!(
        text(wrong, "reason").to_lowercase().contains("wrong"),
        "{wrong}"
    );
    let lobby = &result["student_lobby"];
    assert_eq!(lobby["state"], "lobby", "{lobby}");
    assert!(
        text(lobby, "wait").contains("Waiting for a host to let you in"),
        "{lobby}"
    );
    assert_eq!(lobby["joinForm"], false, "{lobby}");
    assert!(lobby["participantId"].is_null(), "{lobby}");
    assert_eq!(lobby["after_6s"]["state"], "lobby", "{lobby}");
    assert_eq!(lobby["after_6s"]["reconnects"], 0, "{lobby}");

    // c. The teacher listed the student (name, Admit/Deny for its id, the count, the hook), and
    // admitting it got it in; it decodes the teacher's camera.
    let student_name = text(&result["names"], "student");
    let seen = &result["teacher_lobby"];
    assert!(
        text(&seen["entry"], "text").contains(student_name),
        "{seen}"
    );
    assert_eq!(seen["count"], "1", "{seen}");
    assert_eq!(seen["hook"][0]["name"], student_name, "{seen}");
    assert_eq!(
        seen["entry"]["admit"], seen["hook"][0]["participant"],
        "{seen}"
    );
    let admitted = &result["admitted"];
    assert_eq!(admitted["state"], "joined", "{admitted}");
    assert!(admitted["role"].is_string(), "{admitted}");
    assert_eq!(
        admitted["participantId"], seen["entry"]["admit"],
        "the admitted participant is the one that waited: {admitted} {seen}"
    );
    let after = &result["teacher_lobby_after_admit"];
    assert_eq!(after["list"], json!([]), "{after}");
    assert_eq!(after["listed"], true, "{after}");
    let watched = &result["student_sees_teacher"];
    assert!(num(watched, "growth") >= MIN_FRAME_GROWTH, "{watched}");
    assert!(
        num(watched, "width") > 0.0 && num(watched, "height") > 0.0,
        "{watched}"
    );

    // d. The guest waited and was denied: state denied, said so, no retry, nothing left on.
    assert_eq!(result["guest_lobby"]["state"], "lobby", "{result}");
    let guest = text(&result["names"], "guest");
    assert!(
        text(&result["teacher_lobby_guest"]["entry"], "text").contains(guest),
        "{}",
        result["teacher_lobby_guest"]
    );
    let denied = &result["denied"];
    assert_eq!(denied["state"], "denied", "{denied}");
    assert!(
        text(denied, "joinNote").contains("A host did not let you in"),
        "{denied}"
    );
    assert_eq!(denied["after_3s"]["state"], "denied", "{denied}");
    assert_eq!(denied["after_3s"]["reconnects"], 0, "{denied}");
    assert_eq!(denied["after_3s"]["liveLocalTracks"], json!([]), "{denied}");
    assert_eq!(denied["teacher"]["lobbyList"], json!([]), "{denied}");
    assert_eq!(denied["teacher"]["listsGuest"], false, "{denied}");

    // e. "Remove and ban" was confirmed, removed the student, and its reload is refused for good.
    let ban = &result["ban"];
    assert_eq!(ban["dialog"]["type"], "confirm", "{ban}");
    assert_eq!(ban["removed"]["state"], "removed", "{ban}");
    let banned = &ban["banned"];
    assert_eq!(banned["state"], "banned", "{ban}");
    assert!(
        text(banned, "joinNote").contains("A host removed you from this room"),
        "{ban}"
    );
    assert_eq!(banned["after_3s"]["state"], "banned", "{ban}");
    assert_eq!(banned["after_3s"]["reconnects"], 0, "{ban}");
    assert_eq!(banned["after_3s"]["liveLocalTracks"], json!([]), "{ban}");
    assert_eq!(ban["teacher"]["state"], "joined", "{ban}");
    assert_eq!(ban["teacher"]["role"], "host", "{ban}");
    assert_eq!(ban["teacher"]["listsStudent"], false, "{ban}");

    // The room password never in a page's URL, console or storage.
    let leaks = result["leaks"].as_object().expect("leaks");
    assert_eq!(leaks.len(), 3, "{leaks:?}");
    for (who, l) in leaks {
        for place in ["url", "console", "storage"] {
            assert_eq!(l[place], 0, "the password in {who}'s {place}: {l}");
        }
        assert!(num(l, "consoleLines") > 0.0, "{who}: {l}");
    }
}
