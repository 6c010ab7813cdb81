//! Owns: the cascade end to end — several node processes on their own 127.0.0.x addresses, linked
//! by the QUIC relay with certificates from `kaskade certs`, aiortc publishers and subscribers on
//! different nodes, the site tree (one copy per inter-site link, a second node of a site fed by
//! the first), recovery through an impaired link, and reconnection after the link is cut.

use kaskade_tests::clients::{final_result, num};
use kaskade_tests::mesh::{
    ImpairProxy, MeshNodeSpec, TempDir, make_certs, relay_metric, start_mesh, wait_all_linked,
};
use kaskade_tests::{
    NodeProcess, PyClient, Spawned, heavy_test_lock, impair_bin, node_bin, poll_until,
};
use std::time::Duration;

const MIN_FPS: f64 = 25.0;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn assert_decodes(sub: &mut Spawned, what: &str) -> serde_json::Value {
    let r = final_result(sub, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        num(&r, "video_fps_steady") >= MIN_FPS,
        "{what}: video below {MIN_FPS} fps: {r}"
    );
    assert!(num(&r, "audio_frames") > 0.0, "{what}: no audio: {r}");
    r
}

#[test]
fn a_room_spans_sites_and_each_inter_site_link_carries_one_copy() {
    let _heavy = heavy_test_lock();
    let certs = TempDir::new("certs");
    make_certs(node_bin!(), &certs.0, &["n1", "n2", "n3", "n4"]).expect("certs");
    let specs = [
        MeshNodeSpec::new("n1", "a", "127.0.0.21"),
        MeshNodeSpec::new("n2", "a", "127.0.0.22"),
        MeshNodeSpec::new("n3", "b", "127.0.0.23"),
        MeshNodeSpec::new("n4", "b", "127.0.0.24"),
    ];
    let nodes = start_mesh(node_bin!(), &specs, &certs.0, &[]).expect("mesh starts");
    wait_all_linked(None, &nodes, &["n1", "n2", "n3", "n4"]);
    let (n1, n2, n3, n4) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);

    let publisher =
        PyClient::whip_publish("pub-n1", &n1.at("/whip/class"), 40.0).expect("publisher");
    publisher
        .wait_event("publishing", Duration::from_secs(30))
        .expect("publisher connects");

    // WHEP on nodes that do not host the publisher pulls the tracks through the mesh.
    let mut on_n2 = PyClient::whep_subscribe("sub-n2", &n2.at("/whep/class"), 5.0).expect("sub n2");
    assert_decodes(&mut on_n2, "subscriber on n2 (same site)");
    let mut on_n3 = PyClient::whep_subscribe("sub-n3", &n3.at("/whep/class"), 5.0).expect("sub n3");
    assert_decodes(&mut on_n3, "subscriber on n3 (other site)");

    // Three subscribers on n3 at once, then one on n4 while they watch.
    let to_n3_before = relay_metric(None, n1, "kaskade_relay_media_bytes_sent_total", "n3");
    let to_n4_before = relay_metric(None, n1, "kaskade_relay_media_bytes_sent_total", "n4");
    let n3_out_before = n3
        .metric("kaskade_bytes_out_total", &[])
        .ok()
        .flatten()
        .unwrap_or(0.0);
    let mut watchers: Vec<Spawned> = (0..3)
        .map(|i| {
            PyClient::whep_subscribe(&format!("sub-n3-{i}"), &n3.at("/whep/class"), 8.0)
                .expect("sub on n3")
        })
        .collect();
    for w in &watchers {
        w.wait_event("first_frame", Duration::from_secs(30))
            .expect("n3 watcher decodes");
    }
    let mut on_n4 = PyClient::whep_subscribe("sub-n4", &n4.at("/whep/class"), 5.0).expect("sub n4");
    assert_decodes(&mut on_n4, "subscriber on n4 (fed through n3)");
    for (i, w) in watchers.iter_mut().enumerate() {
        assert_decodes(w, &format!("subscriber {i} on n3"));
    }
    let to_n3 = relay_metric(None, n1, "kaskade_relay_media_bytes_sent_total", "n3") - to_n3_before;
    let to_n4 = relay_metric(None, n1, "kaskade_relay_media_bytes_sent_total", "n4") - to_n4_before;
    let n3_to_n4 = relay_metric(None, n3, "kaskade_relay_media_bytes_sent_total", "n4");
    let n3_out = n3
        .metric("kaskade_bytes_out_total", &[])
        .ok()
        .flatten()
        .unwrap_or(0.0)
        - n3_out_before;
    eprintln!(
        "cascade: n1->n3 {to_n3} B, n1->n4 {to_n4} B, n3->n4 {n3_to_n4} B, n3 to its subscribers {n3_out} B"
    );
    assert!(to_n3 > 0.0, "n1 sent nothing to n3");
    // One copy crosses n1 -> n3 while n3 sends three (plus SRTP and RTCP) to its subscribers.
    assert!(
        to_n3 * 2.0 < n3_out,
        "n1->n3 carried more than one copy: {to_n3} B relayed vs {n3_out} B sent by n3"
    );
    assert_eq!(to_n4, 0.0, "n4 must get the stream through n3, not from n1");
    assert!(n3_to_n4 > 0.0, "n3 relayed nothing to n4");
    assert!(
        n1.metric("kaskade_relay_refused_total", &[])
            .ok()
            .flatten()
            .unwrap_or(0.0)
            == 0.0,
        "a mesh member was refused"
    );
}

#[test]
fn an_impaired_link_recovers_by_nack_and_a_cut_link_reconnects() {
    let _heavy = heavy_test_lock();
    let certs = TempDir::new("certs");
    make_certs(node_bin!(), &certs.0, &["n1", "n3"]).expect("certs");
    let n1_spec = MeshNodeSpec::new("n1", "a", "127.0.0.31");
    let n3_spec = MeshNodeSpec::new("n3", "b", "127.0.0.33");
    let proxy_addr = "127.0.0.35:7100";
    let n3_relay = n3_spec.relay_addr();
    let flags = ["--delay-ms", "50", "--loss", "0.02", "--seed", "7"];
    // n1 (the lower id) dials n3, through the proxy.
    let mut proxy =
        ImpairProxy::start(impair_bin!(), proxy_addr, &n3_relay, &flags).expect("proxy");
    let nodes = start_mesh(
        node_bin!(),
        &[n1_spec, n3_spec],
        &certs.0,
        &[("n1", "n3", proxy_addr.to_owned())],
    )
    .expect("mesh starts");
    wait_all_linked(None, &nodes, &["n1", "n3"]);
    let (n1, n3) = (&nodes[0], &nodes[1]);
    let rtt = relay_metric(None, n1, "kaskade_relay_rtt_seconds", "n3");
    assert!(
        rtt >= 0.09,
        "the link's RTT shows the proxy's 2 x 50 ms: {rtt}"
    );

    let publisher =
        PyClient::whip_publish("pub-n1", &n1.at("/whip/lossy"), 60.0).expect("publisher");
    publisher
        .wait_event("publishing", Duration::from_secs(30))
        .expect("publisher connects");
    let mut sub = PyClient::whep_subscribe("sub-n3", &n3.at("/whep/lossy"), 6.0).expect("sub");
    assert_decodes(&mut sub, "subscriber behind a 50 ms / 2% loss link");
    let nacked = relay_metric(None, n3, "kaskade_relay_nacks_sent_total", "n1");
    let resent = relay_metric(None, n1, "kaskade_relay_retransmits_total", "n3");
    eprintln!("impaired link: rtt {rtt:.3} s, {nacked} seqs NACKed by n3, {resent} resent by n1");
    assert!(nacked > 0.0, "no relay NACKs despite 2% loss");
    assert!(resent > 0.0, "n1 answered no relay NACK");

    // Cut the link: the proxy goes away long enough for QUIC to give up, then comes back.
    let watcher = PyClient::spawn(
        "watch-n3",
        "whep_subscribe.py",
        &[
            "--url",
            &n3.at("/whep/lossy"),
            "--seconds",
            "40",
            "--progress",
        ],
        None,
    )
    .expect("watcher");
    watcher
        .wait_event("first_frame", Duration::from_secs(30))
        .expect("watcher decodes");
    proxy.proc.stop();
    poll_until("n1 notices the cut link", Duration::from_secs(20), || {
        let up = relay_metric(None, n1, "kaskade_relay_link_up", "n3");
        (up == 0.0).then_some(()).ok_or(format!("link_up {up}"))
    })
    .unwrap();
    let frames_when_cut = watcher
        .events("frames")
        .last()
        .map(|e| num(e, "video"))
        .unwrap_or(0.0);
    let _proxy =
        ImpairProxy::start(impair_bin!(), proxy_addr, &n3_relay, &flags).expect("proxy restarts");
    poll_until("n1 relinks to n3", Duration::from_secs(20), || {
        let up = relay_metric(None, n1, "kaskade_relay_link_up", "n3");
        (up == 1.0).then_some(()).ok_or(format!("link_up {up}"))
    })
    .unwrap();
    let target = frames_when_cut + 60.0;
    watcher
        .wait_line(
            "frames flowing again after the reconnect",
            Duration::from_secs(20),
            |l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .map(|v| v["event"] == "frames" && num(&v, "video") >= target)
                    .unwrap_or(false)
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "no frames after the reconnect: {e}\n{}",
                watcher.diagnostics()
            )
        });
    assert!(
        relay_metric(None, n1, "kaskade_relay_connects_total", "n3") >= 2.0,
        "the link was not re-established"
    );
}

/// A relay client made by hand: connects with `identity` and, when `hello` is set, exchanges
/// Hellos as node `hello`. Returns the connection and its stream, or the error.
async fn hand_made_client(
    identity: &kaskade_node::relay::tls::MeshIdentity,
    server: std::net::SocketAddr,
    server_name: &str,
    hello: Option<&str>,
) -> Result<
    (
        quinn::Connection,
        Option<(quinn::SendStream, quinn::RecvStream)>,
    ),
    String,
> {
    use kaskade_proto::relay::{self, RelayMessage};
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(identity.client_config().map_err(|e| e.to_string())?);
    let conn = endpoint
        .connect(server, server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let Some(node) = hello else {
        return Ok((conn, None));
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let frame = relay::encode_control(&RelayMessage::Hello {
        node: node.into(),
        site: "x".into(),
        versions: relay::SUPPORTED_VERSIONS.to_vec(),
        software: "test".into(),
    })
    .map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())?;
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| e.to_string())?;
    let len = relay::control_frame_len(prefix).map_err(|e| e.to_string())?;
    let mut body = vec![0; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    match relay::decode_control(&body) {
        Ok(RelayMessage::Hello { .. }) => Ok((conn, Some((send, recv)))),
        other => Err(format!("expected Hello, got {other:?}")),
    }
}

#[test]
fn the_relay_refuses_strangers_and_drops_only_a_connection_that_sends_garbage() {
    use kaskade_node::relay::tls::MeshIdentity;
    let certs = TempDir::new("certs");
    let foreign = TempDir::new("foreign-certs");
    make_certs(node_bin!(), &certs.0, &["n1", "n2"]).expect("certs");
    make_certs(node_bin!(), &foreign.0, &["n2"]).expect("foreign certs");
    let spec = MeshNodeSpec::new("n1", "a", "127.0.0.41");
    let mut node = kaskade_tests::mesh::start_node(None, node_bin!(), &spec, &certs.0, &[])
        .expect("node starts");
    let server: std::net::SocketAddr = spec.relay_addr().parse().unwrap();
    let load = |dir: &std::path::Path, id: &str| {
        MeshIdentity::load(
            &dir.join("ca.pem"),
            &dir.join(format!("{id}.pem")),
            &dir.join(format!("{id}.key")),
            id,
        )
        .expect("identity")
    };
    let member = load(&certs.0, "n2");
    let stranger = load(&foreign.0, "n2");
    let refused = |node: &NodeProcess| {
        node.metric("kaskade_relay_refused_total", &[])
            .ok()
            .flatten()
            .unwrap_or(0.0)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();

    // A certificate from another CA: no link.
    let result = rt.block_on(hand_made_client(&stranger, server, "n1", Some("n2")));
    assert!(result.is_err(), "a stranger got a relay link");
    poll_until("the refusal is counted", Duration::from_secs(10), || {
        (refused(&node) >= 1.0)
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .unwrap();

    // A member claiming another node's id in its Hello: refused too.
    let result = rt.block_on(hand_made_client(&member, server, "n1", Some("n7")));
    assert!(result.is_err(), "a member impersonated n7");

    // A member that sends a frame claiming 4 GiB: that connection is closed, the node lives.
    let closed = rt.block_on(async {
        let (conn, streams) = hand_made_client(&member, server, "n1", Some("n2"))
            .await
            .expect("a member links");
        let (mut send, _recv) = streams.unwrap();
        send.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the node closes the connection")
    });
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if u64::from(c.error_code) == 1),
        "closed for the wrong reason: {closed:?}"
    );
    // Garbage as a datagram: same.
    let closed = rt.block_on(async {
        let (conn, _streams) = hand_made_client(&member, server, "n1", Some("n2"))
            .await
            .expect("a member links again");
        conn.send_datagram(vec![0xde, 0xad, 0xbe, 0xef].into())
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the node closes the connection")
    });
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if u64::from(c.error_code) == 1),
        "closed for the wrong reason: {closed:?}"
    );
    node.assert_alive();
    assert_eq!(node.get("/healthz").expect("healthz").status, 200);
    // And a well-behaved member still links.
    rt.block_on(hand_made_client(&member, server, "n1", Some("n2")))
        .expect("a member links after the garbage");
    assert!(
        refused(&node) >= 4.0,
        "refusals counted: {}",
        refused(&node)
    );
}
