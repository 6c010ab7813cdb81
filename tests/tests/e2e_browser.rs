//! Owns: the headless-Chromium end-to-end test — the node and Chromium run inside a network
//! namespace made for the test; tests/browser/two_pages.mjs (Playwright) drives two pages of the
//! web client through camera, audio, chat and screen share, and this test asserts on its JSON.
//!
//! Needs /usr/bin/chromium (or $KASKADE_CHROMIUM), node + npm, iproute2 and root; the test FAILS
//! when they are missing unless KASKADE_SKIP_BROWSER=1. `npm ci --prefix tests/browser` is run
//! here when tests/browser/node_modules is missing (.ci/run should do it up front).

use kaskade_tests::browser::{
    assert_two_pages_scenario, ensure_playwright, preflight, skip_requested,
};
use kaskade_tests::{
    NetNs, NodeProcess, Spawned, artifacts_dir, heavy_test_lock, node_bin, tests_dir,
};
use std::process::Command;
use std::time::Duration;

#[test]
fn two_browsers_see_each_other_chat_and_share_a_screen() {
    if skip_requested() {
        eprintln!("browser test skipped: KASKADE_SKIP_BROWSER=1");
        return;
    }
    let (chromium, node_js) = preflight();
    let browser_dir = tests_dir().join("browser");
    ensure_playwright(&browser_dir);
    let _heavy = heavy_test_lock();

    // Drop order (reverse of declaration): script, node, then the namespace.
    let ns = NetNs::create().expect("create the test network namespace");
    let node =
        NodeProcess::start_in(Some(&ns), node_bin!(), &[]).expect("node starts in the namespace");
    let room = "browser-room";
    let mut cmd = Command::new(node_js);
    cmd.arg(browser_dir.join("two_pages.mjs"))
        .args(["--url", &node.url, "--room", room, "--timeout", "150"])
        .arg("--artifacts")
        .arg(artifacts_dir())
        .arg("--chromium")
        .arg(&chromium)
        .current_dir(&browser_dir);
    let mut script = Spawned::spawn("two_pages.mjs", ns.wrap(&cmd)).expect("start two_pages.mjs");
    script.grace = Duration::from_secs(10);
    let status = script
        .wait_exit(Duration::from_secs(200))
        .expect("two_pages.mjs ends");
    let result = script
        .events("result")
        .pop()
        .unwrap_or_else(|| panic!("two_pages.mjs printed no result\n{}", script.diagnostics()));
    assert!(
        result["ok"] == true && status.success(),
        "browser scenario failed at stage {}: {}\nfull result: {result}\n{}",
        result["stage"],
        result["reason"],
        script.diagnostics()
    );

    eprintln!("browser scenario result: {result}");
    assert_two_pages_scenario(&result);
    drop(script);
    drop(node);
    drop(ns);
}
