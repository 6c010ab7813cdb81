//! Owns: the bandwidth-adaptation end-to-end test. A Chromium page publishes a simulcast camera;
//! one Chromium viewer sits on an unshaped link, another behind a 300 kbit/s `tbf` on its own
//! veth. The node's send-side estimate (transport-cc → GCC) must keep the shaped viewer on the
//! lowest layer, decoding continuously, while the unshaped one gets an upper layer; lifting the
//! limit must move the shaped viewer up within 10 s. Sizes come from each page's getStats.
//!
//! Layout: the node runs on the host, bound to namespace A's host-side veth address; namespace A
//! holds the publisher and the unshaped viewer, namespace B the shaped viewer (routed to the
//! node's address over its own veth, whose host side carries the `tbf`). Needs root, Chromium,
//! node + npm; FAILS without them unless KASKADE_SKIP_BROWSER=1.

use kaskade_tests::access::{Accounts, HOST, PARTICIPANT, login};
use kaskade_tests::browser::{browser_kit, start_scenario};
use kaskade_tests::{NetNs, NodeProcess, Spawned, heavy_test_lock, node_bin, poll_until};
use std::process::Command;
use std::time::{Duration, Instant};

/// The shaped viewer's link: about two lowest layers' worth, far below the upper ones.
const SHAPED_RATE: &str = "300kbit";
/// How long the shaped phase runs before its last `ASSESS` is judged.
const SHAPED_PHASE: Duration = Duration::from_secs(30);
const ASSESS_MS: f64 = 10_000.0;
/// The bound for moving up once the limit is lifted.
const RECOVER_WITHIN: Duration = Duration::from_secs(10);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tc(args: &[&str]) {
    let out = Command::new("tc").args(args).output().expect("run tc");
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn samples(script: &Spawned, page: &str) -> Vec<(f64, f64, f64)> {
    script
        .events("sample")
        .iter()
        .filter(|s| s["page"] == page)
        .map(|s| {
            (
                s["t_ms"].as_f64().unwrap_or(0.0),
                s["height"].as_f64().unwrap_or(0.0),
                s["frames"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

/// Over the samples after `from_ms`: the share with height ≤ `max_height` (or ≥ `min_height`),
/// and the frames decoded per second.
struct Window {
    low_share: f64,
    high_share: f64,
    fps: f64,
    heights: Vec<f64>,
}

fn window(all: &[(f64, f64, f64)], from_ms: f64) -> Window {
    let w: Vec<_> = all.iter().filter(|s| s.0 >= from_ms).collect();
    let n = w.len().max(1) as f64;
    let fps = match (w.first(), w.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.2 - a.2) / ((b.0 - a.0) / 1000.0),
        _ => 0.0,
    };
    Window {
        low_share: w.iter().filter(|s| s.1 > 0.0 && s.1 <= 180.0).count() as f64 / n,
        high_share: w.iter().filter(|s| s.1 >= 360.0).count() as f64 / n,
        fps,
        heights: w.iter().map(|s| s.1).collect(),
    }
}

/// Access tokens of the pages.
struct Tokens {
    publisher: String,
    viewer: String,
}

fn page_script(
    ns: &NetNs,
    url: &str,
    pages: &str,
    tag: &str,
    tokens: &Tokens,
    chromium: &std::path::Path,
    node_js: &std::path::Path,
) -> Spawned {
    let args = ["--url", url, "--room", "bw-room", "--pages", pages];
    let args = [
        &args[..],
        &["--tag", tag, "--seconds", "90"],
        &[
            "--publisher-token",
            &tokens.publisher,
            "--viewer-token",
            &tokens.viewer,
        ],
    ]
    .concat();
    start_scenario(ns, node_js, chromium, "bandwidth.mjs", &args)
}

#[test]
fn a_viewer_behind_300_kbits_gets_the_low_layer_and_moves_up_when_the_limit_lifts() {
    let Some((chromium, node_js)) = browser_kit() else {
        return;
    };
    let _heavy = heavy_test_lock();

    let ns_a = NetNs::create().expect("namespace A");
    let ns_b = NetNs::create().expect("namespace B");
    // B reaches the node's address (A's host side) through its own veth.
    ip(&[
        "-n",
        &ns_b.name,
        "route",
        "add",
        &format!("{}/32", ns_a.host_ip),
        "via",
        &ns_b.host_ip,
    ]);
    let addr = format!("{}:0", ns_a.host_ip);
    // Not loopback: the node enforces access control; the pages carry access tokens.
    let accounts = Accounts::create(node_bin!()).expect("accounts");
    let args = accounts.node_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node =
        NodeProcess::start_with_addrs(None, node_bin!(), &addr, &addr, &args).expect("node starts");
    let tokens = Tokens {
        publisher: login(&node.url, HOST).expect("host logs in"),
        viewer: login(&node.url, PARTICIPANT).expect("participant logs in"),
    };
    // Only B's downlink (host → B) is shaped.
    tc(&[
        "qdisc",
        "add",
        "dev",
        &ns_b.host_if,
        "root",
        "tbf",
        "rate",
        SHAPED_RATE,
        "burst",
        "6000",
        "latency",
        "200ms",
    ]);

    let a = page_script(
        &ns_a,
        &node.url,
        "publisher,viewer",
        "a",
        &tokens,
        &chromium,
        &node_js,
    );
    poll_until(
        "the publisher and the unshaped viewer join",
        Duration::from_secs(60),
        || {
            if a.events("joined").len() == 2 {
                Ok(())
            } else {
                Err(format!("{:?}", a.events("result")))
            }
        },
    )
    .unwrap();
    let b = page_script(
        &ns_b, &node.url, "viewer", "b", &tokens, &chromium, &node_js,
    );
    poll_until(
        "the shaped viewer decodes the camera",
        Duration::from_secs(60),
        || match samples(&b, "b-viewer").iter().find(|s| s.2 > 0.0) {
            Some(_) => Ok(()),
            None => Err(format!("{:?}", b.events("result"))),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", b.diagnostics(), node.proc.diagnostics()));
    let shaped_from = Instant::now();
    std::thread::sleep(SHAPED_PHASE); // the phase itself is what is measured
    let b_t0 = samples(&b, "b-viewer").last().map_or(0.0, |s| s.0);
    let a_t0 = samples(&a, "a-viewer").last().map_or(0.0, |s| s.0);
    let shaped = window(&samples(&b, "b-viewer"), b_t0 - ASSESS_MS);
    let free = window(&samples(&a, "a-viewer"), a_t0 - ASSESS_MS);
    eprintln!(
        "shaped phase ({:?}): shaped viewer low {:.0} % fps {:.1} heights {:?}; unshaped viewer ≥360p {:.0} % fps {:.1} heights {:?}",
        shaped_from.elapsed(),
        shaped.low_share * 100.0,
        shaped.fps,
        shaped.heights,
        free.high_share * 100.0,
        free.fps,
        free.heights
    );

    let qdisc = Command::new("tc")
        .args(["-s", "qdisc", "show", "dev", &ns_b.host_if])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    eprintln!("shaped link: {qdisc}");
    tc(&["qdisc", "del", "dev", &ns_b.host_if, "root"]);
    let lifted = Instant::now();
    let lifted_at_ms = samples(&b, "b-viewer").last().map_or(0.0, |s| s.0);
    let moved_up = poll_until(
        "the shaped viewer moves up",
        Duration::from_secs(30),
        || match samples(&b, "b-viewer")
            .iter()
            .find(|s| s.0 > lifted_at_ms && s.1 > 180.0)
        {
            Some(s) => Ok(s.1),
            None => Err(format!("{:?}", samples(&b, "b-viewer").last())),
        },
    );
    let took = lifted.elapsed();
    eprintln!("after lifting the limit: {moved_up:?} after {took:?}");

    assert!(
        shaped.fps >= 10.0,
        "the shaped viewer must keep decoding (fps {:.1})",
        shaped.fps
    );
    assert!(
        shaped.low_share >= 0.8,
        "the shaped viewer should stay on the lowest layer: heights {:?}",
        shaped.heights
    );
    assert!(
        free.high_share >= 0.8 && free.fps >= 15.0,
        "the unshaped viewer should get an upper layer: heights {:?}, fps {:.1}",
        free.heights,
        free.fps
    );
    let height = moved_up.expect("the shaped viewer moves up once the limit is lifted");
    assert!(
        took <= RECOVER_WITHIN,
        "moved up to {height}p only after {took:?} (limit {RECOVER_WITHIN:?})"
    );
    drop(b);
    drop(a);
    drop(node);
}
