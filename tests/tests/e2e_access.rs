//! Owns: end-to-end tests of access control on one node started with `--data-dir` (accounts made
//! by the real `kaskade accounts` command): login and lockout; every endpoint (WebSocket join,
//! WHIP, WHEP, room listing, admin, metrics) refuses callers without or with a bad token and
//! other tenants' tokens; a participant cannot open a room but joins one a host opened, under
//! its account name and at most as speaker; an aiortc WHIP publisher with a participant's token
//! publishes.

use kaskade_tests::access::{
    self, ADMIN, Accounts, HOST, OPERATOR, PARTICIPANT, PASSWORD, STRANGER, login, login_response,
};
use kaskade_tests::clients::PyClient;
use kaskade_tests::http;
use kaskade_tests::ws::WsConn;
use kaskade_tests::{NodeProcess, heavy_test_lock, node_bin};
use serde_json::{Value, json};
use std::time::Duration;

const STEP: Duration = Duration::from_secs(20);
const SCRAPE_TOKEN: &str = "scrape-secret-for-tests";

fn secure_node(accounts: &Accounts) -> NodeProcess {
    let mut args = accounts.node_args();
    args.extend(["--metrics-token".into(), SCRAPE_TOKEN.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start(node_bin!(), &args).expect("node starts")
}

/// Sends a join and returns the first `joined` or `error` answer.
fn join(ws: &mut WsConn, room: &str, name: &str, token: Option<&str>) -> Value {
    let mut msg = json!({"type": "join", "room": room, "name": name});
    if let Some(t) = token {
        msg["token"] = json!(t);
    }
    ws.send_json(&msg).unwrap();
    ws.recv_until("joined or error", STEP, |v| {
        v["type"] == "joined" || v["type"] == "error"
    })
    .unwrap()
}

fn get(url: &str, token: Option<&str>) -> http::Response {
    http::get_with_bearer(url, token).unwrap()
}

fn post_sdp(url: &str, token: Option<&str>) -> http::Response {
    let headers = [("Content-Type", "application/sdp")];
    http::request_with_bearer("POST", url, token, &headers, b"v=0\r\n").unwrap()
}

#[test]
fn logins_are_checked_and_repeated_failures_lock_the_account() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let node = secure_node(&accounts);
    let ok = login_response(&node.url, HOST, PASSWORD).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json().unwrap();
    assert_eq!(body["role"], "host");
    assert_eq!(body["tenant"], access::TENANT);
    assert_eq!(body["name"], "Teacher");
    assert_eq!(body["grants"]["moderate"], true);

    // Wrong password, unknown user and the right user in the wrong tenant look the same.
    let wrong = login_response(&node.url, HOST, "not the password at all").unwrap();
    assert_eq!(wrong.status, 401);
    let unknown = access::Account {
        tenant: Some(access::TENANT),
        user: "nobody",
    };
    let nobody = login_response(&node.url, unknown, PASSWORD).unwrap();
    assert_eq!(nobody.status, 401);
    assert_eq!(
        wrong.text(),
        nobody.text(),
        "no hint whether the user exists"
    );
    let elsewhere = access::Account {
        tenant: Some(access::OTHER_TENANT),
        user: HOST.user,
    };
    assert_eq!(
        login_response(&node.url, elsewhere, PASSWORD)
            .unwrap()
            .status,
        401
    );
    let garbage = http::post(&format!("{}/api/login", node.url), "application/json", b"{").unwrap();
    assert_eq!(garbage.status, 400);

    // Five failures lock the account: then even the right password is refused, with Retry-After.
    for _ in 0..4 {
        assert_eq!(
            login_response(&node.url, STRANGER, "wrong password guess")
                .unwrap()
                .status,
            401
        );
    }
    let fifth = login_response(&node.url, STRANGER, "wrong password guess").unwrap();
    assert_eq!(fifth.status, 429, "{}", fifth.text());
    let locked = login_response(&node.url, STRANGER, PASSWORD).unwrap();
    assert_eq!(locked.status, 429);
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 60, "locked for minutes, not seconds: {retry}");
    // Other accounts are not affected.
    assert!(login(&node.url, PARTICIPANT).is_ok());
}

#[test]
fn every_endpoint_refuses_missing_bad_and_foreign_tokens() {
    let _heavy = heavy_test_lock();
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let node = secure_node(&accounts);
    let host = login(&node.url, HOST).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    let stranger = login(&node.url, STRANGER).unwrap();
    let admin = login(&node.url, ADMIN).unwrap();
    let operator = login(&node.url, OPERATOR).unwrap();
    let forged = format!("{}x", &host[..host.len() - 1]);

    // WebSocket: no token, a forged one, a participant opening a room.
    let mut ws = WsConn::connect(&node.ws_url()).unwrap();
    for token in [None, Some(forged.as_str()), Some("garbage")] {
        let answer = join(&mut ws, "maths", "Eve", token);
        assert_eq!(answer["code"], "unauthorized", "{answer}");
    }
    let answer = join(&mut ws, "maths", "Pupil", Some(&pupil));
    assert_eq!(
        answer["code"], "unknown_room",
        "participants do not open rooms: {answer}"
    );

    // The host opens it; the participant then joins under its account name, at most speaker.
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    let joined = join(&mut teacher, "maths", "T", Some(&host));
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["role"], "host");
    let joined = join(&mut ws, "maths", "I am the teacher", Some(&pupil));
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["role"], "speaker");
    let me = joined["participant"].as_str().unwrap().to_owned();
    let listed = teacher
        .recv_until("the pupil", STEP, |v| v["type"] == "participant_joined")
        .unwrap();
    assert_eq!(listed["participant"]["id"], me.as_str());
    assert_eq!(
        listed["participant"]["name"], "Pupil",
        "the account's name: {listed}"
    );
    let mut asks_host = WsConn::connect(&node.ws_url()).unwrap();
    let joined = join(&mut asks_host, "maths", "P2", Some(&pupil));
    assert_eq!(joined["role"], "speaker", "{joined}");
    let msg =
        json!({"type": "join", "room": "maths", "name": "P3", "role": "host", "token": pupil});
    let mut p3 = WsConn::connect(&node.ws_url()).unwrap();
    p3.send_json(&msg).unwrap();
    let joined = p3
        .recv_until("joined", STEP, |v| v["type"] == "joined")
        .unwrap();
    assert_eq!(
        joined["role"], "speaker",
        "a participant's token caps the role: {joined}"
    );
    // Another tenant's host sees no room of that name (and cannot take it over).
    let mut other = WsConn::connect(&node.ws_url()).unwrap();
    let answer = join(&mut other, "maths", "Stranger", Some(&stranger));
    assert_eq!(answer["code"], "unknown_room", "{answer}");

    // WHIP and WHEP.
    let whip = node.at("/whip/maths");
    let whep = node.at("/whep/maths");
    assert_eq!(post_sdp(&whip, None).status, 401);
    assert_eq!(post_sdp(&whep, None).status, 401);
    assert_eq!(post_sdp(&whip, Some(&forged)).status, 401);
    assert_eq!(post_sdp(&whep, Some("garbage")).status, 401);
    assert_eq!(post_sdp(&whep, Some(&stranger)).status, 404);
    assert_eq!(post_sdp(&whip, Some(&stranger)).status, 404);
    assert_eq!(
        post_sdp(&whep, Some(&pupil)).status,
        404,
        "no publisher yet, but allowed"
    );

    // Room listing: operators and tenant admins only, each their own.
    assert_eq!(get(&node.at("/api/rooms"), None).status, 401);
    assert_eq!(get(&node.at("/api/rooms"), Some(&host)).status, 403);
    assert_eq!(get(&node.at("/api/rooms/maths"), Some(&pupil)).status, 403);
    let rooms = get(&node.at("/api/rooms"), Some(&admin)).json().unwrap();
    assert_eq!(rooms["rooms"][0]["name"], "maths", "{rooms}");
    let rooms = get(&node.at("/api/rooms"), Some(&operator)).json().unwrap();
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1, "{rooms}");
    let stranger_admin = login(&node.url, STRANGER).unwrap();
    assert_eq!(
        get(&node.at("/api/rooms/maths"), Some(&stranger_admin)).status,
        403
    );
    assert_eq!(get(&node.at("/api/rooms/maths"), Some(&admin)).status, 200);

    // Admin: operators (or the node's admin token, not configured here).
    assert_eq!(get(&node.at("/admin/status"), None).status, 401);
    assert_eq!(get(&node.at("/admin/status"), Some(&admin)).status, 401);
    assert_eq!(get(&node.at("/admin/status"), Some(&operator)).status, 200);

    // Metrics: the scrape credential, not an access token.
    assert_eq!(get(&node.at("/metrics"), None).status, 401);
    assert_eq!(get(&node.at("/metrics"), Some(&operator)).status, 401);
    assert_eq!(get(&node.at("/metrics"), Some(SCRAPE_TOKEN)).status, 200);
    // The open parts stay open.
    assert_eq!(get(&node.at("/healthz"), None).status, 200);
    assert_eq!(get(&node.at("/"), None).status, 200);

    // A real WHIP publisher with the participant's token publishes into the host's room.
    let publisher = PyClient::spawn(
        "whip-pub",
        "whip_publish.py",
        &["--url", &whip, "--seconds", "30", "--token", &pupil],
        None,
    )
    .expect("start publisher");
    publisher
        .wait_event("publishing", STEP)
        .expect("the participant's WHIP publish is accepted");
    let track = teacher
        .recv_until("the WHIP publisher's track", STEP, |v| {
            v["type"] == "track_published"
        })
        .unwrap();
    assert_eq!(track["track"]["kind"], "audio", "{track}");
}

fn invite(node: &NodeProcess, room: &str, token: Option<&str>, body: Value) -> http::Response {
    let url = node.at(&format!("/api/rooms/{room}/invites"));
    let headers = [("Content-Type", "application/json")];
    http::request_with_bearer("POST", &url, token, &headers, body.to_string().as_bytes()).unwrap()
}

#[test]
fn hosts_invite_guests_into_one_room_for_a_time_window() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let node = secure_node(&accounts);
    let host = login(&node.url, HOST).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    let stranger = login(&node.url, STRANGER).unwrap();
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut teacher, "history", "T", Some(&host))["type"],
        "joined"
    );

    assert_eq!(invite(&node, "history", None, json!({})).status, 401);
    assert_eq!(
        invite(&node, "history", Some(&pupil), json!({})).status,
        403
    );
    assert_eq!(
        invite(&node, "history", Some(&stranger), json!({})).status,
        404
    );
    assert_eq!(
        invite(&node, "no-such-room", Some(&host), json!({})).status,
        404
    );
    let bad = invite(&node, "history", Some(&host), json!({"valid_for_secs": 0}));
    assert_eq!(bad.status, 400, "{}", bad.text());
    let r = invite(&node, "history", Some(&host), json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json().unwrap();
    let guest = body["token"].as_str().unwrap().to_owned();
    let url = body["url"].as_str().unwrap();
    assert!(
        url.contains("room=history") && url.contains(&guest),
        "{url}"
    );

    // A guest keeps its own name, watches only, and only in the invited room.
    let mut gina = WsConn::connect(&node.ws_url()).unwrap();
    let answer = join(&mut gina, "maths", "Gina", Some(&guest));
    assert_eq!(answer["code"], "unauthorized", "another room: {answer}");
    let mut msg = json!({"type": "join", "room": "history", "name": "Gina", "role": "speaker", "token": guest});
    gina.send_json(&msg).unwrap();
    let joined = gina
        .recv_until("joined", STEP, |v| v["type"] == "joined")
        .unwrap();
    assert_eq!(joined["role"], "audience", "{joined}");
    let listed = teacher
        .recv_until("the guest", STEP, |v| v["type"] == "participant_joined")
        .unwrap();
    assert_eq!(listed["participant"]["name"], "Gina", "{listed}");
    // A guest cannot invite further.
    assert_eq!(
        invite(&node, "history", Some(&guest), json!({})).status,
        403
    );
    // WHIP with a watch-only invite is refused; a speaking invite publishes.
    assert_eq!(
        post_sdp(&node.at("/whip/history"), Some(&guest)).status,
        403
    );
    let speaking = invite(&node, "history", Some(&host), json!({"may_publish": true}));
    let speaking = speaking.json().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sam = WsConn::connect(&node.ws_url()).unwrap();
    msg["name"] = json!("Sam");
    msg["token"] = json!(speaking);
    sam.send_json(&msg).unwrap();
    let joined = sam
        .recv_until("joined", STEP, |v| v["type"] == "joined")
        .unwrap();
    assert_eq!(joined["role"], "speaker", "{joined}");

    // An invite that starts later is not valid yet.
    let later = invite(
        &node,
        "history",
        Some(&host),
        json!({"valid_from": now_secs() + 3600, "valid_for_secs": 3600}),
    );
    let later = later.json().unwrap()["token"].as_str().unwrap().to_owned();
    let mut early = WsConn::connect(&node.ws_url()).unwrap();
    let answer = join(&mut early, "history", "Early", Some(&later));
    assert_eq!(answer["code"], "unauthorized", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("not valid yet"),
        "{answer}"
    );
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn floods_of_logins_joins_and_messages_are_refused_without_harm() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let mut args = accounts.node_args();
    args.extend(
        [
            "--max-logins-per-minute",
            "4",
            "--max-joins-per-minute",
            "6",
            "--max-messages-per-second",
            "5",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = NodeProcess::start(node_bin!(), &args).expect("node starts");

    // Logins: a burst of 2, then 429 with Retry-After.
    let host = login(&node.url, HOST).unwrap();
    assert_eq!(
        login_response(&node.url, HOST, "wrong password guess")
            .unwrap()
            .status,
        401
    );
    let limited = login_response(&node.url, HOST, PASSWORD).unwrap();
    assert_eq!(limited.status, 429, "{}", limited.text());
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=15).contains(&retry), "{retry}");

    // Messages: a flood of chat is cut at twice the rate; the session stays and works.
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut teacher, "flood", "T", Some(&host))["type"],
        "joined"
    );
    for i in 0..30 {
        teacher
            .send_json(&json!({"type": "chat", "text": format!("spam {i}")}))
            .unwrap();
    }
    // Every spam message comes back either as its chat echo or as a refusal.
    let (mut echoes, mut refusals) = (0, 0);
    while echoes + refusals < 30 {
        let answer = teacher
            .recv_until("echo or refusal", STEP, |v| {
                v["type"] == "error"
                    || (v["type"] == "chat" && v["text"].as_str().unwrap_or("").starts_with("spam"))
            })
            .unwrap();
        if answer["type"] == "chat" {
            echoes += 1;
        } else {
            assert_eq!(answer["code"], "rate_limited", "{answer}");
            assert_eq!(answer["fatal"], false, "{answer}");
            refusals += 1;
        }
    }
    assert!((5..=15).contains(&echoes), "a burst passes: {echoes} of 30");
    assert!(refusals >= 15, "the rest is refused: {refusals}");

    // Joins from one address: 3 in a burst (one above), then refused with a wait.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let mut ws = WsConn::connect(&node.ws_url()).unwrap();
        let answer = join(&mut ws, "flood", "Again", Some(&host));
        codes.push(answer["code"].as_str().unwrap_or("joined").to_owned());
    }
    assert!(codes.contains(&"rate_limited".to_owned()), "{codes:?}");
    // WHIP and WHEP count as joins.
    assert_eq!(post_sdp(&node.at("/whep/flood"), Some(&host)).status, 429);
    // The flooded teacher's session is still alive: once the allowance refills (the node says
    // when), a message goes through and comes back.
    let mut echoed = false;
    for _ in 0..10 {
        teacher
            .send_json(&json!({"type": "chat", "text": "still here"}))
            .unwrap();
        let answer = teacher
            .recv_until("echo or refusal", STEP, |v| {
                (v["type"] == "chat" && v["text"] == "still here") || v["code"] == "rate_limited"
            })
            .unwrap();
        if answer["type"] == "chat" {
            echoed = true;
            break;
        }
        let wait_ms: u64 = answer["message"]
            .as_str()
            .and_then(|m| m.split("wait ").nth(1))
            .and_then(|m| m.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(200);
        std::thread::sleep(Duration::from_millis(wait_ms)); // the wait the node asked for
    }
    assert!(echoed, "the session works again after the flood");
}

#[test]
fn tenant_caps_on_rooms_and_participants_are_enforced() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let dir = accounts.dir.0.as_path();
    access::run(
        node_bin!(),
        dir,
        &[
            "create-tenant",
            "--id",
            "tiny",
            "--name",
            "Tiny",
            "--max-rooms",
            "1",
            "--max-participants",
            "2",
        ],
    )
    .unwrap();
    access::run(
        node_bin!(),
        dir,
        &[
            "create-user",
            "--tenant",
            "tiny",
            "--user",
            "boss",
            "--role",
            "host",
        ],
    )
    .unwrap();
    let node = secure_node(&accounts);
    let boss = access::Account {
        tenant: Some("tiny"),
        user: "boss",
    };
    let token = login(&node.url, boss).unwrap();
    let mut first = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut first, "tiny-1", "A", Some(&token))["type"],
        "joined"
    );
    let mut second_room = WsConn::connect(&node.ws_url()).unwrap();
    let answer = join(&mut second_room, "tiny-2", "B", Some(&token));
    assert_eq!(answer["code"], "limit_reached", "one room only: {answer}");
    let mut second = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut second, "tiny-1", "B", Some(&token))["type"],
        "joined"
    );
    let mut third = WsConn::connect(&node.ws_url()).unwrap();
    let answer = join(&mut third, "tiny-1", "C", Some(&token));
    assert_eq!(
        answer["code"], "limit_reached",
        "two participants only: {answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("full"),
        "{answer}"
    );
    // Someone leaving makes room again.
    drop(second);
    kaskade_tests::poll_until("the room has space again", STEP, || {
        let mut again = WsConn::connect(&node.ws_url()).map_err(|e| e.to_string())?;
        let answer = join(&mut again, "tiny-1", "C", Some(&token));
        if answer["type"] == "joined" {
            Ok(())
        } else {
            Err(answer.to_string())
        }
    })
    .unwrap();
}

/// The audit log as `admin` sees it: one JSON value per line.
fn audit_lines(node: &NodeProcess, token: &str, query: &str) -> Result<Vec<Value>, String> {
    let r = get(&node.at(&format!("/api/audit{query}")), Some(token));
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.text()));
    }
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn changing_actions_leave_audit_records_that_admins_read_per_tenant() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let node = secure_node(&accounts);
    assert_eq!(
        login_response(&node.url, HOST, "not the password at all")
            .unwrap()
            .status,
        401
    );
    let host = login(&node.url, HOST).unwrap();
    let admin = login(&node.url, ADMIN).unwrap();
    let operator = login(&node.url, OPERATOR).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut teacher, "audited", "T", Some(&host))["type"],
        "joined"
    );
    assert_eq!(invite(&node, "audited", Some(&host), json!({})).status, 201);
    // Moderation by the host: recorded with the accounts of host and target.
    let mut pupil_ws = WsConn::connect(&node.ws_url()).unwrap();
    let joined = join(&mut pupil_ws, "audited", "P", Some(&pupil));
    let pupil_id = joined["participant"].as_str().unwrap().to_owned();
    teacher
        .recv_until("the pupil", STEP, |v| v["type"] == "participant_joined")
        .unwrap();
    for msg in [
        json!({"type": "mute_participant", "participant": pupil_id, "kind": "audio"}),
        json!({"type": "set_role", "participant": pupil_id, "role": "audience"}),
        json!({"type": "set_room_settings", "settings": {"locked": true}}),
        json!({"type": "remove_participant", "participant": pupil_id}),
        json!({"type": "end_meeting"}),
    ] {
        teacher.send_json(&msg).unwrap();
    }
    let ended = teacher
        .recv_until("the end", STEP, |v| v["code"] == "meeting_ended")
        .unwrap();
    assert_eq!(ended["fatal"], true);

    let has = |lines: &[Value], action: &str, actor: &str| {
        lines
            .iter()
            .any(|l| l["action"] == action && l["actor"] == actor)
    };
    let school = kaskade_tests::poll_until("the school's records", STEP, || {
        let lines = audit_lines(&node, &admin, "")?;
        let all_there = has(&lines, "login_failed", HOST.user)
            && has(&lines, "login", HOST.user)
            && has(&lines, "room_opened", HOST.user)
            && has(&lines, "invite_issued", HOST.user)
            && has(&lines, "account_created", "cli")
            && has(&lines, "participant_muted", HOST.user)
            && has(&lines, "role_changed", HOST.user)
            && has(&lines, "settings_changed", HOST.user)
            && has(&lines, "participant_removed", HOST.user)
            && has(&lines, "room_ended", HOST.user);
        if all_there {
            Ok(lines)
        } else {
            Err(format!("{lines:?}"))
        }
    })
    .unwrap();
    assert!(
        school.iter().all(|l| l["tenant"] == access::TENANT),
        "{school:?}"
    );
    let failed = school
        .iter()
        .find(|l| l["action"] == "login_failed")
        .unwrap();
    assert_eq!(failed["address"], "127.0.0.1", "{failed}");
    assert!(
        !failed.to_string().contains("not the password"),
        "no password in the log"
    );
    let opened = school
        .iter()
        .find(|l| l["action"] == "room_opened")
        .unwrap();
    assert_eq!(opened["target"], "audited", "{opened}");
    let removed = school
        .iter()
        .find(|l| l["action"] == "participant_removed")
        .unwrap();
    assert_eq!(removed["target"], "pupil in audited", "{removed}");
    let demoted = school
        .iter()
        .find(|l| l["action"] == "role_changed")
        .unwrap();
    assert_eq!(demoted["detail"], "audience", "{demoted}");

    // Who may read what.
    assert!(
        audit_lines(&node, &pupil, "")
            .unwrap_err()
            .starts_with("403")
    );
    assert!(
        audit_lines(&node, &host, "")
            .unwrap_err()
            .starts_with("403")
    );
    let other = format!("?tenant={}", access::OTHER_TENANT);
    assert!(
        audit_lines(&node, &admin, &other)
            .unwrap_err()
            .starts_with("403")
    );
    assert_eq!(get(&node.at("/api/audit"), None).status, 401);
    let everything = audit_lines(&node, &operator, "").unwrap();
    assert!(
        has(&everything, "tenant_created", "cli"),
        "installation records for operators"
    );
    assert!(everything.len() > school.len());
    let theirs = audit_lines(&node, &operator, &other).unwrap();
    assert!(
        theirs.iter().all(|l| l["tenant"] == access::OTHER_TENANT),
        "{theirs:?}"
    );
    // A time window.
    let none = audit_lines(&node, &admin, "?from=0&to=1").unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn a_room_password_keeps_out_who_lacks_it_and_a_ban_keeps_out_for_good() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let node = secure_node(&accounts);
    let host = login(&node.url, HOST).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    let admin = login(&node.url, ADMIN).unwrap();
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut teacher, "secret", "T", Some(&host))["type"],
        "joined"
    );

    // Only hosts set it; a participant is refused.
    let mut early = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut early, "secret", "P", Some(&pupil))["type"],
        "joined"
    );
    early
        .send_json(&json!({"type": "set_room_password", "password": "mine now"}))
        .unwrap();
    let refused = early
        .recv_until("forbidden", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");
    teacher
        .send_json(&json!({"type": "set_room_password", "password": "open sesame"}))
        .unwrap();
    let set = teacher
        .recv_until("password set", STEP, |v| {
            v["type"] == "room_password_set" || v["type"] == "error"
        })
        .unwrap();
    assert_eq!(set["protected"], true, "{set}");

    let with_password = |token: &str, password: Option<&str>| {
        let mut ws = WsConn::connect(&node.ws_url()).unwrap();
        let mut msg = json!({"type": "join", "room": "secret", "name": "P", "token": token});
        if let Some(p) = password {
            msg["password"] = json!(p);
        }
        ws.send_json(&msg).unwrap();
        let answer = ws
            .recv_until("joined or error", STEP, |v| {
                v["type"] == "joined" || v["type"] == "error"
            })
            .unwrap();
        (ws, answer)
    };
    let (_, answer) = with_password(&pupil, None);
    assert_eq!(answer["code"], "password_required", "{answer}");
    let (_, answer) = with_password(&pupil, Some("open says me"));
    assert_eq!(answer["code"], "password_required", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("wrong"),
        "{answer}"
    );
    let (_, answer) = with_password(&admin, None);
    assert_eq!(answer["type"], "joined", "hosts need no password: {answer}");
    let (mut pupil_ws, answer) = with_password(&pupil, Some("open sesame"));
    assert_eq!(answer["type"], "joined", "{answer}");
    let pupil_id = answer["participant"].as_str().unwrap().to_owned();
    // WHEP the same way, the password in a header.
    let whep = node.at("/whep/secret");
    assert_eq!(post_sdp(&whep, Some(&pupil)).status, 403);
    let headers = [
        ("Content-Type", "application/sdp"),
        ("X-Kaskade-Room-Password", "open sesame"),
    ];
    let r = http::request_with_bearer("POST", &whep, Some(&pupil), &headers, b"v=0\r\n").unwrap();
    assert_ne!(r.status, 403, "{}", r.text());

    // A ban: removed now, and refused later even with the password.
    teacher
        .send_json(&json!({"type": "remove_participant", "participant": pupil_id, "ban": true}))
        .unwrap();
    let removed = pupil_ws
        .recv_until("removed", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(removed["code"], "removed", "{removed}");
    kaskade_tests::poll_until("the ban holds", STEP, || {
        let (_, answer) = with_password(&pupil, Some("open sesame"));
        if answer["code"] == "banned" {
            Ok(())
        } else {
            Err(answer.to_string())
        }
    })
    .unwrap();
    // Clearing the password lets the others in without it; the ban stays.
    teacher
        .send_json(&json!({"type": "set_room_password", "password": null}))
        .unwrap();
    let cleared = teacher
        .recv_until("cleared", STEP, |v| v["type"] == "room_password_set")
        .unwrap();
    assert_eq!(cleared["protected"], false);
    let (_, answer) = with_password(&pupil, None);
    assert_eq!(answer["code"], "banned", "{answer}");
}

fn send_json(
    method: &str,
    node: &NodeProcess,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> http::Response {
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = [("Content-Type", "application/json")];
    http::request_with_bearer(method, &node.at(path), token, &headers, text.as_bytes()).unwrap()
}

#[test]
fn operators_manage_tenants_and_tenant_admins_their_own_accounts_over_http() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let node = secure_node(&accounts);
    let operator = login(&node.url, OPERATOR).unwrap();
    let admin = login(&node.url, ADMIN).unwrap();
    let host = login(&node.url, HOST).unwrap();
    let stranger = login(&node.url, STRANGER).unwrap();

    // Tenants: operators only.
    let new_tenant = json!({"id": "museum", "name": "The Museum", "max_rooms": 3});
    assert_eq!(
        send_json(
            "POST",
            &node,
            "/api/tenants",
            Some(&admin),
            Some(new_tenant.clone())
        )
        .status,
        403
    );
    assert_eq!(
        send_json(
            "POST",
            &node,
            "/api/tenants",
            None,
            Some(new_tenant.clone())
        )
        .status,
        401
    );
    let r = send_json(
        "POST",
        &node,
        "/api/tenants",
        Some(&operator),
        Some(new_tenant.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json().unwrap()["limits"]["max_rooms"], 3);
    assert_eq!(
        send_json(
            "POST",
            &node,
            "/api/tenants",
            Some(&operator),
            Some(new_tenant)
        )
        .status,
        409
    );
    let listed = send_json("GET", &node, "/api/tenants", Some(&operator), None)
        .json()
        .unwrap();
    assert_eq!(listed["tenants"].as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(
        send_json("GET", &node, "/api/tenants", Some(&host), None).status,
        403
    );

    // Accounts: the tenant's admin (up to its own role), not hosts, not other tenants.
    let path = format!("/api/tenants/{}/users", access::TENANT);
    let new_host = json!({"user": "mr-b", "name": "Mr B", "role": "host", "password": PASSWORD});
    assert_eq!(
        send_json("POST", &node, &path, Some(&host), Some(new_host.clone())).status,
        403
    );
    assert_eq!(
        send_json(
            "POST",
            &node,
            &path,
            Some(&stranger),
            Some(new_host.clone())
        )
        .status,
        403
    );
    let r = send_json("POST", &node, &path, Some(&admin), Some(new_host));
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !r.text().contains("argon2"),
        "no hash in answers: {}",
        r.text()
    );
    let weak = json!({"user": "weak", "role": "participant", "password": "short"});
    let r = send_json("POST", &node, &path, Some(&admin), Some(weak));
    assert_eq!(r.status, 400, "the password policy: {}", r.text());
    let op = json!({"user": "root2", "role": "operator", "password": PASSWORD});
    assert_eq!(
        send_json("POST", &node, &path, Some(&admin), Some(op)).status,
        400
    );
    let mr_b = access::Account {
        tenant: Some(access::TENANT),
        user: "mr-b",
    };
    assert!(login(&node.url, mr_b).is_ok(), "the new host logs in");
    let users = send_json("GET", &node, &path, Some(&admin), None)
        .json()
        .unwrap();
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user"] == "mr-b"),
        "{users}"
    );
    // Unlock after a lockout.
    for _ in 0..5 {
        login_response(&node.url, mr_b, "wrong password guess").unwrap();
    }
    assert_eq!(
        login_response(&node.url, mr_b, PASSWORD).unwrap().status,
        429
    );
    let unlock = format!("{path}/mr-b/unlock");
    assert_eq!(
        send_json("POST", &node, &unlock, Some(&admin), None).status,
        200
    );
    assert!(login(&node.url, mr_b).is_ok(), "unlocked");
    // Delete.
    let one = format!("{path}/mr-b");
    assert_eq!(
        send_json("DELETE", &node, &one, Some(&admin), None).status,
        204
    );
    assert_eq!(
        login_response(&node.url, mr_b, PASSWORD).unwrap().status,
        401
    );
    // Rooms: deleting one forgets its protection (here: the password).
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut teacher, "temporary", "T", Some(&host))["type"],
        "joined"
    );
    teacher
        .send_json(&json!({"type": "set_room_password", "password": "gone soon"}))
        .unwrap();
    teacher
        .recv_until("set", STEP, |v| v["type"] == "room_password_set")
        .unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    let delete_room =
        |token: &str| send_json("DELETE", &node, "/api/rooms/temporary", Some(token), None).status;
    assert_eq!(delete_room(&pupil), 403);
    assert_eq!(delete_room(&stranger), 404);
    assert_eq!(delete_room(&host), 204);
    let mut later = WsConn::connect(&node.ws_url()).unwrap();
    let answer = join(&mut later, "temporary", "P", Some(&pupil));
    assert_eq!(
        answer["code"], "unknown_room",
        "the record is gone: {answer}"
    );
    assert_eq!(
        send_json("DELETE", &node, "/api/tenants/museum", Some(&admin), None).status,
        403
    );
    assert_eq!(
        send_json(
            "DELETE",
            &node,
            "/api/tenants/museum",
            Some(&operator),
            None
        )
        .status,
        204
    );
}

#[test]
fn lock_and_lobby_are_kept_with_the_room_and_hold_from_the_first_join() {
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let node = secure_node(&accounts);
    let host = login(&node.url, HOST).unwrap();
    let pupil = login(&node.url, PARTICIPANT).unwrap();
    let settings = |locked: bool, lobby: bool| json!({"type": "set_room_settings", "settings": {"locked": locked, "lobby": lobby}});
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut teacher, "kept", "T", Some(&host))["type"],
        "joined"
    );
    teacher.send_json(&settings(true, false)).unwrap();
    teacher
        .recv_until("locked", STEP, |v| v["type"] == "room_settings_changed")
        .unwrap();
    drop(teacher);

    // The room closed here; its record keeps the lock: a pupil opening it again is refused.
    kaskade_tests::poll_until("the lock outlives the room actor", STEP, || {
        let mut ws = WsConn::connect(&node.ws_url()).map_err(|e| e.to_string())?;
        let answer = join(&mut ws, "kept", "P", Some(&pupil));
        if answer["code"] == "room_locked" {
            Ok(())
        } else {
            Err(answer.to_string())
        }
    })
    .unwrap();
    // The host gets in, sees the kept setting, switches to the lobby instead.
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    let joined = join(&mut teacher, "kept", "T", Some(&host));
    assert_eq!(joined["settings"]["locked"], true, "{joined}");
    teacher.send_json(&settings(false, true)).unwrap();
    teacher
        .recv_until("lobby on", STEP, |v| {
            v["type"] == "room_settings_changed" && v["settings"]["lobby"] == true
        })
        .unwrap();
    drop(teacher);

    // A pupil first in the reopened room waits; the host arriving later sees it and admits it.
    let mut waiting = kaskade_tests::poll_until("the pupil waits in the lobby", STEP, || {
        let mut ws = WsConn::connect(&node.ws_url()).map_err(|e| e.to_string())?;
        ws.send_json(&json!({"type": "join", "room": "kept", "name": "P", "token": pupil}))
            .map_err(|e| e.to_string())?;
        let answer = ws
            .recv_until("waiting", STEP, |v| {
                v["type"] == "lobby_waiting" || v["type"] == "joined" || v["type"] == "error"
            })
            .map_err(|e| e.to_string())?;
        if answer["type"] == "lobby_waiting" {
            Ok(ws)
        } else {
            Err(answer.to_string())
        }
    })
    .unwrap();
    let mut teacher = WsConn::connect(&node.ws_url()).unwrap();
    assert_eq!(
        join(&mut teacher, "kept", "T", Some(&host))["type"],
        "joined"
    );
    let lobby = teacher
        .recv_until("the waiting pupil", STEP, |v| v["type"] == "lobby_changed")
        .unwrap();
    let pupil_id = lobby["waiting"][0]["participant"]
        .as_str()
        .unwrap()
        .to_owned();
    teacher
        .send_json(&json!({"type": "admit_participant", "participant": pupil_id}))
        .unwrap();
    let joined = waiting
        .recv_until("admitted", STEP, |v| v["type"] == "joined")
        .unwrap();
    assert_eq!(joined["role"], "speaker", "{joined}");
}
