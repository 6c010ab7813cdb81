//! Owns: the headless-Chromium end-to-end test of the cascade — two nodes of one mesh (n1 in site
//! a, n2 in site b) and Chromium all run inside a network namespace made for the test; page A of
//! tests/browser/two_pages.mjs joins the room on n1, page B the same room on n2 (`--url2`), and
//! each must decode the other's camera, hear its audio, get its chat line and see A's screen
//! share, all carried by the QUIC relay between the nodes, whose media counters are checked too.
//!
//! Both nodes listen (HTTP and relay) on loopback addresses inside the namespace, n1 on
//! 127.0.0.11 and n2 on 127.0.0.12 (every node's relay port is the same, so they need two
//! addresses): a page may only use the camera on a secure origin, and plain http is one only on
//! loopback, so the nodes cannot serve the pages on the veth address. Chromium still needs the
//! veth to gather ICE candidates. The host cannot reach those addresses, so the test reads the
//! nodes' metrics from a thread that joined the namespace ([`relay_metric`] with the namespace).
//!
//! Needs what tests/tests/e2e_browser.rs needs (Chromium, node + npm, iproute2, root); FAILS
//! when they are missing unless KASKADE_SKIP_BROWSER=1.

use kaskade_tests::browser::{assert_two_pages_scenario, browser_kit};
use kaskade_tests::mesh::{MeshNodeSpec, TempDir, make_certs, relay_metric, start_node};
use kaskade_tests::{
    NetNs, Spawned, artifacts_dir, heavy_test_lock, node_bin, poll_until, tests_dir,
};
use std::process::Command;
use std::time::Duration;

#[test]
fn two_browsers_on_different_nodes_see_each_other_chat_and_share_a_screen() {
    let Some((chromium, node_js)) = browser_kit() else {
        return;
    };
    let browser_dir = tests_dir().join("browser");
    let _heavy = heavy_test_lock();

    // Drop order (reverse of declaration): script, nodes, certificates, then the namespace.
    let ns = NetNs::create().expect("create the test network namespace");
    let certs = TempDir::new("browser-cascade-certs");
    make_certs(node_bin!(), &certs.0, &["n1", "n2"]).expect("kaskade certs");
    let spec1 = MeshNodeSpec::new("n1", "a", "127.0.0.11");
    let spec2 = MeshNodeSpec::new("n2", "b", "127.0.0.12");
    let n1 = start_node(
        Some(&ns),
        node_bin!(),
        &spec1,
        &certs.0,
        &[spec2.peer_arg(None)],
    )
    .expect("n1 starts in the namespace");
    let n2 = start_node(
        Some(&ns),
        node_bin!(),
        &spec2,
        &certs.0,
        &[spec1.peer_arg(None)],
    )
    .expect("n2 starts in the namespace");

    // Each node has a live link to the other before any page joins.
    let pairs = [(&n1, "n1", "n2"), (&n2, "n2", "n1")];
    poll_until(
        "the relay link up on both nodes",
        Duration::from_secs(20),
        || {
            for (node, me, peer) in pairs {
                let up = relay_metric(Some(&ns), node, "kaskade_relay_link_up", peer);
                if up != 1.0 {
                    return Err(format!(
                        "kaskade_relay_link_up{{peer=\"{peer}\"}} on {me} = {up}"
                    ));
                }
            }
            Ok(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n--- n1 ---\n{}\n--- n2 ---\n{}",
            n1.proc.diagnostics(),
            n2.proc.diagnostics()
        )
    });

    let room = "browser-cascade-room";
    let mut cmd = Command::new(node_js);
    cmd.arg(browser_dir.join("two_pages.mjs"))
        .args(["--url", &n1.url, "--url2", &n2.url])
        .args(["--room", room, "--timeout", "150"])
        // Its own subdirectory: the screenshots have the same names as e2e_browser.rs's.
        .arg("--artifacts")
        .arg(artifacts_dir().join("browser-cascade"))
        .arg("--chromium")
        .arg(&chromium)
        .current_dir(&browser_dir);
    let mut script = Spawned::spawn("two_pages.mjs", ns.wrap(&cmd)).expect("start two_pages.mjs");
    script.grace = Duration::from_secs(10);
    let status = script
        .wait_exit(Duration::from_secs(200))
        .expect("two_pages.mjs ends");
    let result = script.events("result").pop().unwrap_or_else(|| {
        panic!(
            "two_pages.mjs printed no result\n{}\n--- n1 ---\n{}\n--- n2 ---\n{}",
            script.diagnostics(),
            n1.proc.diagnostics(),
            n2.proc.diagnostics()
        )
    });
    assert!(
        result["ok"] == true && status.success(),
        "browser cascade scenario failed at stage {}: {}\nfull result: {result}\n{}\n\
         --- n1 (page A) ---\n{}\n--- n2 (page B) ---\n{}",
        result["stage"],
        result["reason"],
        script.diagnostics(),
        n1.proc.diagnostics(),
        n2.proc.diagnostics()
    );

    eprintln!("browser cascade scenario result: {result}");
    // Page A's view comes from n1: B and its tracks are known there through the relay.
    assert_two_pages_scenario(&result);

    // The media crossed the relay both ways, as each node counts it: A's tracks n1 -> n2 and
    // B's tracks n2 -> n1.
    for (node, me, peer) in pairs {
        let sent = relay_metric(
            Some(&ns),
            node,
            "kaskade_relay_media_bytes_sent_total",
            peer,
        );
        let received = relay_metric(
            Some(&ns),
            node,
            "kaskade_relay_media_bytes_received_total",
            peer,
        );
        eprintln!("relay media on {me}: {sent} bytes sent to {peer}, {received} bytes received");
        assert!(sent > 0.0, "{me} sent no relay media to {peer}");
        assert!(received > 0.0, "{me} received no relay media from {peer}");
    }
    drop(script);
    drop(n2);
    drop(n1);
    drop(certs);
    drop(ns);
}
