//! Owns: the headless-Chromium test of the operator page (`/operator`) — a two-site mesh WITH
//! access control (etcd, the test accounts made by `kaskade accounts --etcd`: an operator, a
//! host and a participant among them), a room spanning both nodes (an aiortc host publishing on
//! n1, a participant watching on n2, so media crosses the relay and both nodes forward), and
//! tests/browser/operator.mjs (Playwright) on n1's page: a wrong password shows the sign-in error
//! and no data; the operator signs in through the form and sees both nodes and sites, the
//! n1–n2 link with its RTT, the room with its participants and forwarding-latency figures;
//! Drain on n2 (confirm dialog accepted) marks it draining, n2 exits, and the page sees it leave
//! the mesh; End room (confirmed) ends the room for everyone. Screenshots go to
//! tests/artifacts/operator/; with `KASKADE_UPDATE_DOCS=1` the full-page one is also copied to
//! docs/img/operator-page.png for the docs.
//!
//! Everything (etcd on 127.0.0.13, n1 on 127.0.0.11 in site a, n2 on 127.0.0.12 in site b, the
//! clients, Chromium) runs in a network namespace made for the test, as in
//! e2e_browser_cascade.rs. Needs Chromium, node + npm, iproute2, root, etcd and aiortc; FAILS
//! when the browser kit is missing unless KASKADE_SKIP_BROWSER=1.

use kaskade_tests::access::{HOST, OPERATOR, PARTICIPANT, PASSWORD, TENANT, create_in_etcd, login};
use kaskade_tests::browser::{browser_kit, in_netns, run_scenario};
use kaskade_tests::clients::require_python_deps;
use kaskade_tests::etcd::EtcdProcess;
use kaskade_tests::mesh::{MeshNodeSpec, TempDir, make_certs, start_etcd_node, wait_all_linked};
use kaskade_tests::node::WITH_ACCESS_CONTROL;
use kaskade_tests::{NetNs, NodeProcess, PyClient, Spawned, heavy_test_lock, node_bin, tests_dir};
use serde_json::Value;
use std::time::Duration;

const ROOM: &str = "operator-room";
const ETCD_IP: &str = "127.0.0.13";
/// Longest n2's drain waits for its participants to move before it exits.
const DRAIN_DEADLINE_SECS: &str = "8";
/// How long the aiortc clients stay in the room (the test ends them sooner).
const CLIENT_SECONDS: &str = "600";

/// `ws_client.py` in `ns` joining [`ROOM`] on `node` with access token `token`.
fn ws_client(ns: &NetNs, name: &str, node: &NodeProcess, token: &str, publish: bool) -> Spawned {
    let ws_url = node.ws_url();
    let mut args = vec![
        "--url",
        &ws_url,
        "--room",
        ROOM,
        "--name",
        name,
        "--token",
        token,
        "--seconds",
        CLIENT_SECONDS,
    ];
    if publish {
        args.push("--publish");
    }
    PyClient::spawn(name, "ws_client.py", &args, Some(ns))
        .unwrap_or_else(|e| panic!("start {name}: {e}"))
}

#[test]
fn an_operator_signs_in_sees_the_mesh_and_its_room_and_drains_a_node() {
    let Some((chromium, node_js)) = browser_kit() else {
        return;
    };
    require_python_deps();
    let _heavy = heavy_test_lock();
    let bin = node_bin!();

    // Drop order (reverse of declaration): clients, nodes, etcd, certificates, the namespace.
    let ns = NetNs::create().expect("create the test network namespace");
    let certs = TempDir::new("browser-operator-certs");
    make_certs(bin, &certs.0, &["n1", "n2"]).expect("kaskade certs");
    let etcd = EtcdProcess::start_in(Some(&ns), ETCD_IP);
    // The accounts in the mesh's etcd (from a thread in the namespace, where etcd listens).
    in_netns(&ns, || create_in_etcd(bin, &etcd.client_url())).expect("accounts in etcd");
    let extra = [
        WITH_ACCESS_CONTROL,
        "--drain-deadline-secs",
        DRAIN_DEADLINE_SECS,
    ];
    let mut nodes = Vec::new();
    for (id, site, ip) in [("n1", "a", "127.0.0.11"), ("n2", "b", "127.0.0.12")] {
        let spec = MeshNodeSpec::new(id, site, ip);
        let node = start_etcd_node(Some(&ns), bin, &spec, &certs.0, &etcd.client_url(), &extra)
            .unwrap_or_else(|e| panic!("{id} starts in the namespace: {e}"));
        nodes.push(node);
    }
    wait_all_linked(Some(&ns), &nodes, &["n1", "n2"]);
    let (n1, n2) = (&nodes[0], &nodes[1]);

    // The room: the host publishes on n1, the participant watches on n2.
    let (host_token, pupil_token) = in_netns(&ns, || {
        (
            login(&n1.url, HOST).expect("the host logs in"),
            login(&n2.url, PARTICIPANT).expect("the participant logs in"),
        )
    });
    let teacher = ws_client(&ns, "teacher", n1, &host_token, true);
    teacher
        .wait_event("published", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the teacher publishes: {e}\n{}", n1.proc.diagnostics()));
    let pupil = ws_client(&ns, "pupil", n2, &pupil_token, false);
    pupil
        .wait_event("first_frame", Duration::from_secs(30))
        .unwrap_or_else(|e| {
            panic!(
                "the pupil on n2 decodes the teacher's media: {e}\n--- n1 ---\n{}\n--- n2 ---\n{}",
                n1.proc.diagnostics(),
                n2.proc.diagnostics()
            )
        });

    let docs_shot = tests_dir()
        .parent()
        .expect("the workspace above tests/")
        .join("docs/img/operator-page.png");
    let docs_shot_arg = docs_shot.display().to_string();
    // The docs' screenshot is refreshed on request only, so a test run leaves the tree clean.
    let mut docs_args = Vec::new();
    if std::env::var_os("KASKADE_UPDATE_DOCS").is_some() {
        docs_args = vec!["--docs-shot", docs_shot_arg.as_str()];
    }
    let mut args = vec![
        "--url",
        &n1.url,
        "--room",
        ROOM,
        "--user",
        OPERATOR.user,
        "--password",
        PASSWORD,
        "--nodes",
        "n1,n2",
        "--sites",
        "a,b",
        "--drain",
        "n2",
        "--min-participants",
        "2",
        "--timeout",
        "200",
    ];
    args.extend(docs_args);
    let result = run_scenario(
        &ns,
        &node_js,
        &chromium,
        "operator.mjs",
        &args,
        Duration::from_secs(240),
        || {
            format!(
                "--- n1 ---\n{}\n--- n2 ---\n{}",
                n1.proc.diagnostics(),
                n2.proc.diagnostics()
            )
        },
    );
    eprintln!("operator scenario result: {result}");

    // The drained node ends by itself, cleanly, once its participant moved.
    let exit = nodes[1]
        .proc
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("n2 exits after the drain: {e}"));
    assert!(exit.success(), "n2 exit status after the drain: {exit}");

    assert_operator_scenario(&result);
    for file in [
        result["shots"]["page"].as_str(),
        result["shots"]["drained"].as_str(),
    ] {
        let file = file.unwrap_or_else(|| panic!("a screenshot is missing: {}", result["shots"]));
        let png = std::fs::read(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
        assert!(
            png.len() > 10_000 && png.starts_with(b"\x89PNG"),
            "{file} is not a screenshot ({} bytes)",
            png.len()
        );
    }
    drop(pupil);
    drop(teacher);
    drop(nodes);
    drop(etcd);
    drop(certs);
    drop(ns);
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The entry of `items` whose `key` is `want`.
fn find<'a>(items: &'a [Value], key: &str, want: &str) -> Option<&'a Value> {
    items.iter().find(|i| i[key] == want)
}

/// What operator.mjs's result must show beyond `ok`.
fn assert_operator_scenario(result: &Value) {
    // a. Without credentials: asked to sign in, nothing shown.
    let first = &result["first"];
    assert_eq!(first["state"], "signin", "{first}");
    assert_eq!(first["dashboardShown"], false, "{first}");

    // b. A wrong password: the error, the field emptied, no data and no polling behind it.
    let wrong = &result["wrong_password"];
    assert!(
        text(wrong, "loginError").contains("Wrong user or password"),
        "the sign-in error: {wrong}"
    );
    assert_eq!(wrong["state"], "signin", "{wrong}");
    assert_eq!(wrong["loginShown"], true, "{wrong}");
    assert_eq!(wrong["dashboardShown"], false, "{wrong}");
    assert_eq!(wrong["passwordValue"], "", "{wrong}");
    for empty in ["nodes", "rooms", "mapNodes", "latency"] {
        assert_eq!(
            wrong[empty],
            serde_json::json!([]),
            "{empty} after a wrong password: {wrong}"
        );
    }
    assert!(wrong["hooks"]["lastMeshNodes"].is_null(), "{wrong}");
    assert_eq!(wrong["hooks"]["polls"], 0, "{wrong}");

    // c. Signed in: both nodes and sites, the link with an RTT, the control plane, latency.
    let mesh = &result["mesh"];
    let rows = list(&mesh["nodes"]);
    for (id, site) in [("n1", "a"), ("n2", "b")] {
        let row = find(rows, "id", id).unwrap_or_else(|| panic!("{id} in the nodes table: {mesh}"));
        assert_eq!(row["state"], "live", "{row}");
        assert_eq!(row["cells"]["site"], site, "{row}");
        assert_eq!(row["drainLabel"], format!("Drain node {id}"), "{row}");
        let latency = text(&row["cells"], "latency");
        assert!(
            latency
                .split(" / ")
                .all(|n| n.trim().replace(',', "").parse::<u64>().is_ok()),
            "forwarding latency p50 / p99 of {id} in the table: {latency:?}"
        );
        assert!(
            find(list(&mesh["mapSites"]), "name", site).is_some(),
            "site {site} on the map: {}",
            mesh["mapSites"]
        );
        let on_map = find(list(&mesh["mapNodes"]), "id", id)
            .unwrap_or_else(|| panic!("{id} on the map: {}", mesh["mapNodes"]));
        assert_eq!(on_map["self"], id == "n1", "{on_map}");
    }
    let n1_sessions = text(&find(rows, "id", "n1").unwrap()["cells"], "sessions");
    assert!(
        n1_sessions.starts_with(|c: char| c.is_ascii_digit() && c != '0'),
        "n1 holds the teacher's session: {n1_sessions:?}"
    );
    let links = list(&mesh["mapLinks"]);
    let link = links
        .iter()
        .find(|l| {
            let mut ends = [text(l, "from"), text(l, "to")];
            ends.sort();
            ends == ["n1", "n2"]
        })
        .unwrap_or_else(|| panic!("the n1–n2 link on the map: {links:?}"));
    assert_eq!(link["state"], "ok", "{link}");
    let rtt = link["rttMs"].as_f64().unwrap_or(0.0);
    assert!(rtt > 0.0 && rtt < 1000.0, "the link's RTT: {link}");
    assert!(
        text(link, "label").contains(" ms") && text(link, "label").contains('%'),
        "the link is labelled with RTT and loss: {link}"
    );
    assert!(
        text(mesh, "controlPlane").contains("etcd")
            && text(mesh, "controlPlane").contains("reachable"),
        "{}",
        mesh["controlPlane"]
    );
    let latency = list(&mesh["latency"]);
    for id in ["n1", "n2"] {
        let l = find(latency, "id", id).unwrap_or_else(|| panic!("latency of {id}: {latency:?}"));
        assert!(
            text(l, "text").contains("p99") && text(l, "text").contains("µs"),
            "{l}"
        );
        assert!(
            l["sparkline"].as_u64().unwrap_or(0) >= 2,
            "{id}'s sparkline: {l}"
        );
    }
    assert!(
        latency
            .iter()
            .any(|l| l["p99"].as_f64().unwrap_or(0.0) > 0.0),
        "a node forwarded media, so some p99 is above zero: {latency:?}"
    );

    // d. The room (its tenant, both nodes, both participants) and who is where.
    let rooms = list(&result["rooms"]["rooms"]);
    let room = find(rooms, "name", ROOM).unwrap_or_else(|| panic!("{ROOM} listed: {rooms:?}"));
    assert_eq!(room["cells"]["tenant"], TENANT, "{room}");
    assert!(
        text(&room["cells"], "participants")
            .parse::<u64>()
            .unwrap_or(0)
            >= 2,
        "{room}"
    );
    let room_nodes = text(&room["cells"], "nodes");
    assert!(
        room_nodes.contains("n1") && room_nodes.contains("n2"),
        "{room}"
    );
    let people = list(&result["room_detail"]["participants"]);
    let teacher = find(people, "name", "Teacher").unwrap_or_else(|| panic!("Teacher: {people:?}"));
    assert_eq!(
        (&teacher["role"], &teacher["node"]),
        (&"host".into(), &"n1".into()),
        "{teacher}"
    );
    let pupil = find(people, "name", "Pupil").unwrap_or_else(|| panic!("Pupil: {people:?}"));
    assert_eq!(pupil["node"], "n2", "{pupil}");
    assert!(
        text(pupil, "removeLabel").contains("Remove Pupil"),
        "an accessible Remove button: {pupil}"
    );

    // e. Drain: the confirm dialog, 202 "draining", the row marked, then n2 left the mesh.
    let drain = &result["drain"];
    assert_eq!(drain["dialog"]["type"], "confirm", "{drain}");
    assert!(text(&drain["dialog"], "message").contains("n2"), "{drain}");
    let draining = &drain["draining"];
    let asked = list(&draining["drains"]);
    assert!(
        asked
            .iter()
            .any(|d| d["node"] == "n2" && d["httpStatus"] == 202 && d["status"] == "draining"),
        "the drain request's answer: {draining}"
    );
    assert_eq!(draining["row"]["state"], "draining", "{draining}");
    assert!(
        list(&draining["row"]["badges"])
            .iter()
            .any(|b| b == "draining"),
        "the draining badge: {draining}"
    );
    let gone = &drain["gone"];
    assert_eq!(gone["state"], "live", "the page kept working: {gone}");
    assert_eq!(gone["selfRow"]["state"], "live", "{gone}");
    assert!(
        gone["row"].is_null() || gone["row"]["state"] == "gone",
        "n2 listed as gone (or not at all) once it left: {gone}"
    );

    // f. End room: the confirm dialog, 202 "ending", the room gone from the list.
    let ended = &result["end_room"];
    assert_eq!(ended["dialog"]["type"], "confirm", "{ended}");
    assert!(text(&ended["dialog"], "message").contains(ROOM), "{ended}");
    assert!(
        list(&ended["after"]["actions"])
            .iter()
            .any(|a| a["action"] == "end"
                && a["room"] == ROOM
                && a["httpStatus"] == 202
                && a["status"] == "ending"),
        "the end-room request's answer: {ended}"
    );

    // The password never in the URL, the console or storage; the token is in session storage.
    let leaks = &result["leaks"];
    for place in ["url", "console", "storage"] {
        assert_eq!(
            leaks[place], 0,
            "the password in the page's {place}: {leaks}"
        );
    }
    assert_eq!(leaks["storageHasToken"], true, "{leaks}");
}
