//! Owns: loss recovery end to end. The node and two aiortc clients run in a network namespace made
//! for the test; nftables there drops 5% of the datagrams the node sends. The WHEP subscriber must
//! keep decoding, and the node's metrics must show NACKs answered from its packet cache.
//!
//! Its HTTP endpoint is on the namespace's address, so the node enforces access control: the
//! clients present a host's and a participant's access token, the harness a scrape token.
//!
//! Needs root, iproute2 and nftables (installed by .ci/setup); fails with the reason otherwise.

use kaskade_tests::access::{Accounts, HOST, PARTICIPANT, login};
use kaskade_tests::clients::{final_result, num};
use kaskade_tests::{NetNs, NodeProcess, PyClient, heavy_test_lock, node_bin};
use std::process::Command;
use std::time::Duration;

const SCRAPE_TOKEN: &str = "loss-test-scrape";

/// Percentage of the node's outgoing datagrams dropped.
const LOSS_PERCENT: u32 = 5;

fn nft(ns: &NetNs, args: &str) {
    let status = ns
        .command("nft")
        .args(args.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("loss test: cannot run nft (apt-get install nftables): {e}"));
    assert!(status.success(), "nft {args} failed: {status}");
}

#[test]
fn subscriber_recovers_from_loss_through_nacks() {
    let _heavy = heavy_test_lock();
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "loss test: nft is missing: apt-get install nftables (see .ci/setup)"
    );
    let ns = NetNs::create().expect("network namespace");
    let http = format!("{}:0", ns.ns_ip);
    // HTTP on the namespace's address is not loopback: the node runs with access control.
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let mut args = accounts.node_args();
    args.extend(["--metrics-token".into(), SCRAPE_TOKEN.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node =
        NodeProcess::start_with_http(Some(&ns), node_bin!(), &http, &args).expect("node starts");
    node.scrape_token = Some(SCRAPE_TOKEN.into());
    let host = login(&node.url, HOST).expect("host logs in");
    let pupil = login(&node.url, PARTICIPANT).expect("participant logs in");
    let media_port = node.media_addr.port();

    let whip = node.at("/whip/lossy");
    let publisher = PyClient::spawn(
        "whip-pub",
        "whip_publish.py",
        &["--url", &whip, "--seconds", "16", "--token", &host],
        Some(&ns),
    )
    .expect("start publisher");
    publisher
        .wait_event("publishing", Duration::from_secs(30))
        .expect("publisher connects");

    nft(&ns, "add table inet kaskade_loss");
    nft(
        &ns,
        "add chain inet kaskade_loss input { type filter hook input priority 0 ; policy accept ; }",
    );
    nft(
        &ns,
        &format!(
            "add rule inet kaskade_loss input udp sport {media_port} numgen random mod 100 < {LOSS_PERCENT} drop"
        ),
    );

    let whep = node.at("/whep/lossy");
    let mut subscriber = PyClient::spawn(
        "whep-sub",
        "whep_subscribe.py",
        &["--url", &whep, "--seconds", "8", "--token", &pupil],
        Some(&ns),
    )
    .expect("start subscriber");
    let result = final_result(&mut subscriber, Duration::from_secs(60)).expect("subscriber result");

    let nacks = node
        .metric("kaskade_nacks_total", &[])
        .unwrap()
        .unwrap_or(0.0);
    let retransmits = node
        .metric("kaskade_retransmits_total", &[])
        .unwrap()
        .unwrap_or(0.0);
    let fps = num(&result, "video_fps_steady");
    eprintln!("loss test: {fps} fps, {nacks} NACKs, {retransmits} retransmissions");
    assert!(
        fps >= 20.0,
        "with {LOSS_PERCENT}% loss the subscriber decoded only {fps} fps: {result}"
    );
    assert!(nacks > 0.0, "no NACK reached the node: {result}");
    assert!(
        retransmits > 0.0,
        "{nacks} NACKs but nothing retransmitted from the cache"
    );
}
