//! Owns: the admin API across a two-site mesh with access control (etcd, real accounts): the
//! mesh view (sites, nodes, both relay links with RTT), the mesh-wide room list filtered by
//! tenant, a room's participants with their nodes, and the operator's actions taken on one node
//! and carried out by another — removing a participant, ending a room, draining a node — plus
//! the refusals (no token 401, tenant admin 403 on the mesh, another tenant's room 404).

use kaskade_tests::access::{self, ADMIN, HOST, OPERATOR, PARTICIPANT, STRANGER};
use kaskade_tests::etcd::EtcdProcess;
use kaskade_tests::http;
use kaskade_tests::mesh::{MeshNodeSpec, TempDir, make_certs, start_etcd_node, wait_all_linked};
use kaskade_tests::node::WITH_ACCESS_CONTROL;
use kaskade_tests::ws::WsConn;
use kaskade_tests::{NodeProcess, heavy_test_lock, node_bin, poll_until};
use serde_json::{Value, json};
use std::time::Duration;

const STEP: Duration = Duration::from_secs(20);

fn call(method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let r = http::request_with_bearer(method, url, token, &[], &[]).expect("request");
    (r.status, r.json().unwrap_or(Value::Null))
}

fn join(node: &NodeProcess, room: &str, name: &str, token: &str) -> (WsConn, String) {
    let mut ws = WsConn::connect(&node.ws_url()).unwrap();
    ws.send_json(&json!({"type": "join", "room": room, "name": name, "token": token}))
        .unwrap();
    let joined = ws
        .recv_until("joined", STEP, |v| {
            v["type"] == "joined" || v["type"] == "error"
        })
        .unwrap();
    assert_eq!(joined["type"], "joined", "{joined}");
    (ws, joined["participant"].as_str().unwrap().to_owned())
}

#[test]
fn operators_see_and_act_on_the_whole_mesh_from_any_node() {
    let _heavy = heavy_test_lock();
    let etcd = EtcdProcess::start("127.0.0.101");
    access::create_in_etcd(node_bin!(), &etcd.client_url()).expect("accounts in etcd");
    let certs = TempDir::new("certs-admin-api");
    make_certs(node_bin!(), &certs.0, &["n1", "n2"]).expect("certs");
    let specs = [
        MeshNodeSpec::new("n1", "a", "127.0.0.102"),
        MeshNodeSpec::new("n2", "b", "127.0.0.103"),
    ];
    let extra = [WITH_ACCESS_CONTROL, "--capacity-sessions", "50"];
    let mut nodes: Vec<NodeProcess> = specs
        .iter()
        .map(|s| start_etcd_node(None, node_bin!(), s, &certs.0, &etcd.client_url(), &extra))
        .collect::<anyhow::Result<_>>()
        .expect("nodes start");
    wait_all_linked(None, &nodes, &["n1", "n2"]);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let operator = access::login(&n1.url, OPERATOR).unwrap();
    let admin = access::login(&n1.url, ADMIN).unwrap();
    let teacher = access::login(&n1.url, HOST).unwrap();
    let pupil = access::login(&n1.url, PARTICIPANT).unwrap();
    let stranger = access::login(&n1.url, STRANGER).unwrap();
    let n1_url = n1.url.clone();
    let api = move |path: &str| format!("{n1_url}/api/admin/{path}");

    // Refusals first: nothing without a token, the mesh is for operators only.
    assert_eq!(call("GET", &api("mesh"), None).0, 401);
    let (status, body) = call("GET", &api("mesh"), Some(&admin));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].is_string(), "a JSON error: {body}");
    assert_eq!(call("GET", &api("rooms"), Some(&pupil)).0, 403);

    // The mesh: two sites, two nodes with their capacity, and both relay links with an RTT.
    let mesh = poll_until("both links reported in the registry", STEP, || {
        let (status, mesh) = call("GET", &api("mesh"), Some(&operator));
        if status != 200 {
            return Err(format!("status {status}: {mesh}"));
        }
        let links = mesh["links"].as_array().cloned().unwrap_or_default();
        let up = |from: &str, to: &str| {
            links.iter().any(|l| {
                l["from"] == from
                    && l["to"] == to
                    && l["up"] == true
                    && l["rtt_ms"].as_f64() > Some(0.0)
            })
        };
        if up("n1", "n2") && up("n2", "n1") {
            Ok(mesh)
        } else {
            Err(format!("links so far: {links:?}"))
        }
    })
    .unwrap();
    assert_eq!(mesh["node"], "n1");
    assert_eq!(mesh["control_plane"]["kind"], "etcd");
    assert_eq!(mesh["control_plane"]["reachable"], true);
    let sites: Vec<&str> = mesh["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(sites, ["a", "b"]);
    let n2_view = mesh["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n2")
        .cloned()
        .unwrap();
    assert_eq!(n2_view["site"], "b");
    assert_eq!(n2_view["self"], false);
    assert_eq!(n2_view["load"]["capacity_sessions"], 50);
    let link = mesh["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["from"] == "n1")
        .cloned()
        .unwrap();
    assert_eq!(
        (link["from_site"].as_str(), link["to_site"].as_str()),
        (Some("a"), Some("b"))
    );

    // A room of the school on both nodes, and another tenant's room on n2.
    let (_teacher_ws, _) = join(n1, "assembly", "Teacher", &teacher);
    let (mut pupil_ws, pupil_id) = join(n2, "assembly", "Pupil", &pupil);
    let (mut stranger_ws, _) = join(n2, "elsewhere", "Stranger", &stranger);

    let listed = poll_until("both rooms listed mesh-wide", STEP, || {
        let (_, list) = call("GET", &api("rooms"), Some(&operator));
        let rooms = list["rooms"].as_array().cloned().unwrap_or_default();
        let assembly = rooms.iter().find(|r| r["name"] == "assembly");
        match (assembly, rooms.iter().any(|r| r["name"] == "elsewhere")) {
            (Some(a), true) if a["participants"] == 2 => Ok(rooms),
            _ => Err(format!("rooms so far: {rooms:?}")),
        }
    })
    .unwrap();
    let assembly = listed.iter().find(|r| r["name"] == "assembly").unwrap();
    assert_eq!(assembly["nodes"], json!(["n1", "n2"]));
    assert_eq!(assembly["tenant"], "school");
    let (_, theirs) = call("GET", &api("rooms"), Some(&admin));
    let names: Vec<&str> = theirs["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["assembly"],
        "a tenant admin sees only the tenant's rooms"
    );
    assert_eq!(call("GET", &api("rooms/elsewhere"), Some(&admin)).0, 404);
    assert_eq!(call("DELETE", &api("rooms/elsewhere"), Some(&admin)).0, 404);

    let (status, detail) = call("GET", &api("rooms/assembly"), Some(&admin));
    assert_eq!(status, 200, "{detail}");
    let pupil_row = detail["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pupil_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(pupil_row["node"], "n2");
    assert_eq!(pupil_row["name"], "Pupil");

    // Removing the pupil (on n2) through n1: n2 carries it out.
    let (status, answer) = call(
        "DELETE",
        &api(&format!("rooms/assembly/participants/{pupil_id}")),
        Some(&admin),
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["nodes"], json!(["n2"]));
    let removed = pupil_ws
        .recv_until("removed", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(removed["code"], "removed", "{removed}");
    assert!(
        removed["message"].as_str().unwrap().contains("operator"),
        "{removed}"
    );
    assert_eq!(
        call(
            "DELETE",
            &api("rooms/assembly/participants/p0000000000000000"),
            Some(&admin)
        )
        .0,
        404
    );

    // Ending the other tenant's room (on n2) through n1, as the operator.
    let (status, answer) = call("DELETE", &api("rooms/elsewhere"), Some(&operator));
    assert_eq!(status, 202, "{answer}");
    let ended = stranger_ws
        .recv_until("meeting ended", STEP, |v| v["type"] == "error")
        .unwrap();
    assert_eq!(ended["code"], "meeting_ended", "{ended}");

    // Draining n2 through n1: n2 leaves the mesh and exits; n1 counts the peer as lost.
    assert_eq!(call("POST", &api("nodes/n2/drain"), Some(&admin)).0, 403);
    assert_eq!(call("POST", &api("nodes/n9/drain"), Some(&operator)).0, 404);
    let (status, answer) = call("POST", &api("nodes/n2/drain"), Some(&operator));
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "draining");
    nodes[1]
        .proc
        .wait_exit(Duration::from_secs(40))
        .expect("n2 exits after its drain");
    let n1 = &nodes[0];
    poll_until("n1 sees n2 gone", STEP, || {
        let lost = n1
            .metric("kaskade_failover_events_total", &[("kind", "peer_lost")])
            .map_err(|e| e.to_string())?;
        let live_b = n1
            .metric("kaskade_mesh_live_nodes", &[("site", "b")])
            .map_err(|e| e.to_string())?;
        if lost >= Some(1.0) && live_b == Some(0.0) {
            Ok(())
        } else {
            Err(format!("peer_lost {lost:?}, live nodes in b {live_b:?}"))
        }
    })
    .unwrap();
    let (_, mesh) = call("GET", &api("mesh"), Some(&operator));
    let site_b = mesh["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "b")
        .cloned()
        .unwrap();
    assert_eq!(
        site_b["nodes"], 0,
        "a site gone stays on the map, empty: {mesh}"
    );
}
