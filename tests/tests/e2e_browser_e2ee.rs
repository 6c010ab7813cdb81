//! Owns: the headless-Chromium end-to-end encryption test — the node and Chromium run inside a
//! network namespace made for the test; tests/browser/e2ee.mjs (Playwright) drives two pages that
//! join one room with the same passphrase (encoded transforms, the node forwards ciphertext): each
//! decodes the other's camera, simulcast layer switching still works, a screen share added later is
//! decoded; a page with another passphrase decrypts nothing; and this test asserts on its JSON.
//!
//! Needs /usr/bin/chromium (or $KASKADE_CHROMIUM), node + npm, iproute2 and root; the test FAILS
//! when they are missing unless KASKADE_SKIP_BROWSER=1. `npm ci --prefix tests/browser` is run
//! here when tests/browser/node_modules is missing (.ci/run should do it up front).

use kaskade_tests::browser::{browser_kit, run_scenario};
use kaskade_tests::clients::num;
use kaskade_tests::{NetNs, NodeProcess, heavy_test_lock, node_bin};
use serde_json::Value;
use std::time::Duration;

/// Frames the scenario waits to see decoded (it asks for 30 more than when first seen).
const MIN_FRAME_GROWTH: f64 = 30.0;
/// Decoded frame rate over that span.
const MIN_FPS: f64 = 5.0;

#[test]
fn e2ee_pages_decode_each_other_and_a_wrong_passphrase_decrypts_nothing() {
    let Some((chromium, node_js)) = browser_kit() else {
        return;
    };
    let _heavy = heavy_test_lock();

    // Drop order (reverse of declaration): script, node, then the namespace.
    let ns = NetNs::create().expect("create the test network namespace");
    let node =
        NodeProcess::start_in(Some(&ns), node_bin!(), &[]).expect("node starts in the namespace");
    let room = "e2ee-room";
    let result = run_scenario(
        &ns,
        &node_js,
        &chromium,
        "e2ee.mjs",
        &[
            "--url",
            &node.url,
            "--room",
            room,
            "--passphrase",
            "secret-passphrase",
            "--timeout",
            "200",
        ],
        Duration::from_secs(260),
        || node.proc.diagnostics(),
    );
    eprintln!("e2ee scenario result: {result}");
    assert_e2ee_scenario(&result);
    drop(node);
    drop(ns);
}

/// A decoded video as e2ee.mjs reports it: enough frames, a frame rate, a size.
fn assert_decoding(what: &str, v: &Value, min_growth: f64) {
    assert!(num(v, "growth") >= min_growth, "{what}: {v}");
    assert!(num(v, "fps") > MIN_FPS, "{what}: fps too low: {v}");
    assert!(
        num(v, "width") > 0.0 && num(v, "height") > 0.0,
        "{what}: {v}"
    );
}

/// What e2ee.mjs's result must show beyond `ok`.
fn assert_e2ee_scenario(result: &Value) {
    let ids = &result["ids"];
    assert!(
        ids["a"].is_string() && ids["b"].is_string() && ids["a"] != ids["b"],
        "participant ids: {ids}"
    );

    // Both pages encrypt what they send, decrypt what they receive and decode each other.
    assert_decoding(
        "B's camera at A",
        &result["a_sees_b_camera"],
        MIN_FRAME_GROWTH,
    );
    assert_decoding(
        "A's camera at B",
        &result["b_sees_a_camera"],
        MIN_FRAME_GROWTH,
    );
    for who in ["a", "b"] {
        assert!(
            num(&result["audio"][who], "packetsReceived") > 0.0,
            "audio at {who}: {result}"
        );
        let e = &result["e2ee_final"][who];
        assert_eq!(e["enabled"], true, "E2EE at {who}: {e}");
        assert!(
            e["indicator"].as_str().is_some_and(|s| s.contains("E2EE")),
            "the E2EE indicator at {who}: {e}"
        );
        let decrypted = num(e, "decryptedFrames");
        assert!(
            num(e, "encryptedFrames") > 0.0,
            "frames encrypted at {who}: {e}"
        );
        assert!(decrypted > 0.0, "frames decrypted at {who}: {e}");
        // The same passphrase everywhere: (next to) no frame may fail.
        assert!(
            num(e, "decryptFailures") <= (decrypted * 0.01).max(2.0),
            "decrypt failures at {who}: {e}"
        );
        assert_eq!(
            num(e, "encryptFailures"),
            0.0,
            "encrypt failures at {who}: {e}"
        );
    }

    // Simulcast layer switching still works: the node only reads RTP headers, extensions and the
    // clear frame header.
    let layers = &result["layers"];
    let initial = num(&layers["initial"], "width");
    assert!(
        num(&layers["low"], "width") > 0.0 && num(&layers["low"], "width") < initial,
        "the low layer must be smaller than the first one: {layers}"
    );
    assert_decoding("A's low layer at B", &layers["low_frames"], 15.0);
    assert!(
        num(&layers["high"], "width") >= initial,
        "back to the high layer: {layers}"
    );

    // A screen share started later is encrypted and decrypted too.
    assert_decoding("A's screen at B", &result["screen"], 15.0);

    // Another passphrase: media arrives, every frame fails to decrypt, nothing is decoded.
    let wrong = &result["wrong_passphrase"];
    assert_eq!(wrong["e2ee"]["enabled"], true, "{wrong}");
    assert!(
        num(&wrong["video"], "packetsReceived") > 0.0,
        "media must reach the page with the wrong passphrase: {wrong}"
    );
    assert!(
        num(&wrong["e2ee"], "decryptFailures") > 0.0,
        "the wrong passphrase must fail to decrypt: {wrong}"
    );
    assert_eq!(
        num(&wrong["e2ee"], "decryptedFrames"),
        0.0,
        "nothing may decrypt with the wrong passphrase: {wrong}"
    );
    assert_eq!(
        num(&wrong["video"], "framesDecoded"),
        0.0,
        "nothing may be decoded with the wrong passphrase: {wrong}"
    );

    // Without E2EE the page receives the ciphertext as it is (what it decodes is only reported).
    let plain = &result["plain_viewer"];
    assert_eq!(plain["e2ee"]["enabled"], false, "{plain}");
    assert!(num(&plain["video"], "packetsReceived") > 0.0, "{plain}");
}
