//! Owns: the headless-Chromium end-to-end test — the node and Chromium run inside a network
//! namespace made for the test; tests/browser/two_pages.mjs (Playwright) drives two pages of the
//! web client through camera, audio, chat and screen share, and this test asserts on its JSON.
//!
//! Needs /usr/bin/chromium (or $KASKADE_CHROMIUM), node + npm, iproute2 and root; the test FAILS
//! when they are missing unless KASKADE_SKIP_BROWSER=1. `npm ci --prefix tests/browser` is run
//! here when tests/browser/node_modules is missing (.ci/run should do it up front).

use kaskade_tests::browser::{assert_two_pages_scenario, browser_kit, run_scenario};
use kaskade_tests::{NetNs, NodeProcess, heavy_test_lock, node_bin};
use std::time::Duration;

#[test]
fn two_browsers_see_each_other_chat_and_share_a_screen() {
    let Some((chromium, node_js)) = browser_kit() else {
        return;
    };
    let _heavy = heavy_test_lock();

    // Drop order (reverse of declaration): script, node, then the namespace.
    let ns = NetNs::create().expect("create the test network namespace");
    let node =
        NodeProcess::start_in(Some(&ns), node_bin!(), &[]).expect("node starts in the namespace");
    let room = "browser-room";
    let result = run_scenario(
        &ns,
        &node_js,
        &chromium,
        "two_pages.mjs",
        &["--url", &node.url, "--room", room, "--timeout", "150"],
        Duration::from_secs(200),
        || node.proc.diagnostics(),
    );
    eprintln!("browser scenario result: {result}");
    assert_two_pages_scenario(&result);
    drop(node);
    drop(ns);
}
