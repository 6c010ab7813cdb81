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
