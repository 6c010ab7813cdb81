//! Owns: TURN for clients that cannot reach the media port directly — a node configured with
//! Debian's coturn (`--turn-url`, `--turn-secret`: coturn's REST-API `use-auth-secret`) hands
//! every participant short-lived credentials in `joined`, and two aiortc clients that may use
//! relay candidates only (`iceTransportPolicy: relay`) publish and watch through coturn: the
//! media arrives, and coturn's log shows allocations under the node-made usernames. Also the
//! WHIP answer's `Link: …; rel="ice-server"` header (RFC 9725).

use kaskade_tests::browser::find_in_path;
use kaskade_tests::clients::{final_result, num};
use kaskade_tests::mesh::TempDir;
use kaskade_tests::{NodeProcess, PyClient, Spawned, heavy_test_lock, node_bin};
use std::process::Command;
use std::time::Duration;

const TURN_IP: &str = "127.0.0.104";
const TURN_PORT: &str = "3478";
const SECRET: &str = "turn-test-secret";

/// coturn on loopback with the REST-API secret; waits for its UDP listener.
fn start_coturn(dir: &TempDir) -> Spawned {
    let bin = find_in_path("turnserver")
        .expect("coturn's turnserver is not installed: run .ci/setup (Debian `coturn`)");
    let mut cmd = Command::new(bin);
    cmd.args([
        "-n",
        "--listening-ip",
        TURN_IP,
        "--relay-ip",
        TURN_IP,
        "--listening-port",
        TURN_PORT,
        "--min-port",
        "49160",
        "--max-port",
        "49260",
        "--use-auth-secret",
        "--static-auth-secret",
        SECRET,
        "--realm",
        "kaskade.test",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--log-file",
        "stdout",
        "-v",
    ])
    .arg("--pidfile")
    .arg(dir.0.join("turnserver.pid"))
    .arg("--userdb")
    .arg(dir.0.join("turndb"));
    let turn = Spawned::spawn("coturn", cmd).expect("coturn starts");
    turn.wait_line("coturn's UDP listener", Duration::from_secs(10), |l| {
        l.contains("UDP listener opened on") && l.contains(TURN_IP)
    })
    .expect("coturn listens");
    turn
}

#[test]
fn relay_only_clients_publish_and_watch_through_coturn() {
    let _heavy = heavy_test_lock();
    let dir = TempDir::new("coturn");
    let turn = start_coturn(&dir);
    let turn_url = format!("turn:{TURN_IP}:{TURN_PORT}?transport=udp");
    let node = NodeProcess::start(
        node_bin!(),
        &["--turn-url", &turn_url, "--turn-secret", SECRET],
    )
    .expect("node starts");
    let room = "behind-a-firewall";

    let mut watcher = PyClient::ws_client(
        "relay-watcher",
        &node.ws_url(),
        room,
        "Watcher",
        15.0,
        &["--relay-only"],
    )
    .expect("start the watcher");
    let joined = watcher
        .wait_event("joined", Duration::from_secs(15))
        .expect("the watcher joins");
    let watcher_id = joined["participant"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let servers = joined["ice_servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(servers.len(), 1, "one TURN server in joined: {joined}");
    assert_eq!(servers[0]["urls"][0], turn_url.as_str(), "{joined}");
    let username = servers[0]["username"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (expiry, who) = username
        .split_once(':')
        .expect("REST-API username: expiry:id");
    assert_eq!(
        who, watcher_id,
        "the credential names the participant: {username}"
    );
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry > now && expiry <= now + 3600 + 60,
        "the credential expires within the default hour: {expiry} vs now {now}"
    );
    assert!(
        servers[0]["credential"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    let mut publisher = PyClient::ws_client(
        "relay-publisher",
        &node.ws_url(),
        room,
        "Publisher",
        30.0,
        &["--publish", "--relay-only"],
    )
    .expect("start the publisher");
    publisher
        .wait_event("publish_connected", Duration::from_secs(30))
        .unwrap_or_else(|e| {
            panic!(
                "the publisher connects through TURN: {e}\n{}",
                turn.diagnostics()
            )
        });
    let camera = watcher
        .wait_json("the camera track", Duration::from_secs(15), |v| {
            v["event"] == "track_published" && v["track"]["source"] == "camera"
        })
        .expect("the camera is announced");
    let camera_id = camera["track"]["id"].as_str().unwrap().to_owned();
    watcher
        .wait_json("the camera's first frame", Duration::from_secs(30), |v| {
            v["event"] == "first_frame" && v["track"] == camera_id.as_str()
        })
        .unwrap_or_else(|e| {
            panic!(
                "the watcher decodes through TURN: {e}\n{}",
                turn.diagnostics()
            )
        });
    let r = final_result(&mut watcher, Duration::from_secs(40)).expect("the watcher's result");
    assert!(
        num(&r["tracks"][&camera_id], "frames") >= 60.0,
        "video through TURN: {r}"
    );
    assert!(num(&r, "audio_frames") > 0.0, "audio through TURN: {r}");

    // coturn allocated relays for both, under the usernames the node made.
    let log = turn.lines().join("\n");
    assert!(
        log.contains(&format!("username=<{username}>")) || log.contains(&username),
        "coturn never saw the watcher's credential:\n{}",
        turn.diagnostics()
    );
    publisher.signal(libc::SIGTERM);
    final_result(&mut publisher, Duration::from_secs(20)).expect("the publisher ends cleanly");

    // WHIP answers name the TURN server too (RFC 9725 ice-server links).
    let mut whip = PyClient::whip_publish("whip-links", &node.at("/whip/links"), 1.0)
        .expect("start the WHIP publisher");
    let publishing = whip
        .wait_event("publishing", Duration::from_secs(30))
        .expect("the WHIP publisher connects");
    let link = publishing["ice_server_link"].as_str().unwrap_or_default();
    assert!(
        link.contains(&format!("<{turn_url}>"))
            && link.contains("rel=\"ice-server\"")
            && link.contains("credential-type=\"password\""),
        "WHIP answer without the TURN link: {publishing}"
    );
    whip.wait_exit(Duration::from_secs(20))
        .expect("the WHIP publisher ends");
}
