//! Owns: what the headless-Chromium tests share — checking the machine has Chromium, Node.js and
//! namespace tooling (or saying what is missing), installing Playwright's driver on demand,
//! running a closure inside a test network namespace (to reach nodes that listen there), starting
//! a scenario script of tests/browser in a namespace and reading its result, and the assertions
//! on the two-page scenario's result.

use crate::clients::num;
use crate::netns::NetNs;
use crate::proc::Spawned;
use crate::{artifacts_dir, tests_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Starts `node tests/browser/{script} {args…} --artifacts DIR --chromium PATH` inside `ns`.
pub fn start_scenario(
    ns: &NetNs,
    node_js: &Path,
    chromium: &Path,
    script: &str,
    args: &[&str],
) -> Spawned {
    let browser_dir = tests_dir().join("browser");
    let mut cmd = Command::new(node_js);
    cmd.arg(browser_dir.join(script))
        .args(args)
        .arg("--artifacts")
        .arg(artifacts_dir())
        .arg("--chromium")
        .arg(chromium)
        .current_dir(&browser_dir);
    let mut spawned =
        Spawned::spawn(script, ns.wrap(&cmd)).unwrap_or_else(|e| panic!("start {script}: {e}"));
    spawned.grace = Duration::from_secs(10);
    spawned
}

/// Runs a scenario script to its end and returns its `result` line; panics with the script's
/// diagnostics and what `more` says then (e.g. the node's log) unless the result says ok and the
/// script exited cleanly.
pub fn run_scenario(
    ns: &NetNs,
    node_js: &Path,
    chromium: &Path,
    script: &str,
    args: &[&str],
    timeout: Duration,
    more: impl Fn() -> String,
) -> Value {
    let mut spawned = start_scenario(ns, node_js, chromium, script, args);
    let status = spawned
        .wait_exit(timeout)
        .unwrap_or_else(|e| panic!("{script} did not end: {e}\n{}", spawned.diagnostics()));
    let result = spawned
        .events("result")
        .pop()
        .unwrap_or_else(|| panic!("{script} printed no result\n{}", spawned.diagnostics()));
    assert!(
        result["ok"] == true && status.success(),
        "{script} failed at stage {}: {}\nfull result: {result}\n{}\n{}",
        result["stage"],
        result["reason"],
        spawned.diagnostics(),
        more()
    );
    result
}

/// The first `program` on PATH.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// KASKADE_SKIP_BROWSER=1 asks to skip the browser tests.
pub fn skip_requested() -> bool {
    std::env::var("KASKADE_SKIP_BROWSER").is_ok_and(|v| v == "1")
}

/// The Chromium and Node.js a browser test runs with (Playwright installed), or `None` with a
/// line saying so when KASKADE_SKIP_BROWSER=1; a panic saying what is missing otherwise.
pub fn browser_kit() -> Option<(PathBuf, PathBuf)> {
    if skip_requested() {
        eprintln!("browser test skipped: KASKADE_SKIP_BROWSER=1");
        return None;
    }
    let kit = preflight();
    ensure_playwright(&crate::tests_dir().join("browser"));
    Some(kit)
}

/// Everything a browser test needs from the machine, or a panic saying what is missing.
pub fn preflight() -> (PathBuf, PathBuf) {
    let hint = "install it (see tests/README.md: apt-get install -y chromium iproute2; \
                npm ci --prefix tests/browser) or set KASKADE_SKIP_BROWSER=1 to skip this test";
    let chromium = std::env::var_os("KASKADE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "browser test: no Chromium at {}: {hint}",
        chromium.display()
    );
    let node_js = find_in_path("node")
        .unwrap_or_else(|| panic!("browser test: Node.js (`node`) is not in PATH: {hint}"));
    if let Err(e) = NetNs::check_tooling() {
        panic!("browser test: cannot create network namespaces: {e}: {hint}");
    }
    (chromium, node_js)
}

/// Installs playwright-core from tests/browser/package-lock.json when node_modules is missing.
pub fn ensure_playwright(browser_dir: &Path) {
    if browser_dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let npm = find_in_path("npm").unwrap_or_else(|| {
        panic!("browser test: tests/browser/node_modules is missing and npm is not in PATH")
    });
    let verb = if browser_dir.join("package-lock.json").is_file() {
        "ci"
    } else {
        "install"
    };
    let out = Command::new(npm)
        .args([verb, "--no-audit", "--no-fund", "--prefix"])
        .arg(browser_dir)
        .output()
        .expect("run npm");
    assert!(
        out.status.success(),
        "npm {verb} --prefix tests/browser failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has joined `ns`'s network namespace (only that thread does).
pub fn in_netns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    crate::netns::in_named_netns(&ns.name, f)
}

/// The tracks of a `GET /api/rooms/{room}` answer that two_pages.mjs fetched from a page.
fn api_tracks(api: &Value) -> Vec<Value> {
    assert_eq!(
        api["status"], 200,
        "GET /api/rooms/{{room}} from the page: {api}"
    );
    api["body"]["tracks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Asserts what two_pages.mjs's result must show: each page decodes the other's camera, audio
/// arrives both ways, A's chat line reaches B with A's name, B decodes A's screen share, and the
/// node of page A lists both participants with camera, microphone and (later) A's screen.
pub fn assert_two_pages_scenario(result: &Value) {
    let ids = &result["ids"];
    for (seen, who) in [("a_sees_b_camera", "b"), ("b_sees_a_camera", "a")] {
        let cam = &result[seen];
        assert!(num(cam, "growth") >= 30.0, "{seen}: {cam}");
        assert!(
            num(cam, "width") > 0.0 && num(cam, "height") > 0.0,
            "{seen}: {cam}"
        );
        assert!(
            ids[who].is_string(),
            "no participant id for {who}: {result}"
        );
    }
    for who in ["a", "b"] {
        assert!(
            num(&result["audio"][who], "packetsReceived") > 0.0,
            "audio at {who}: {result}"
        );
    }
    let chat = &result["chat"];
    assert_eq!(chat["text"], chat["sent"], "{chat}");
    assert!(
        chat["name"]
            .as_str()
            .unwrap_or_default()
            .contains(result["names"]["a"].as_str().unwrap()),
        "the chat line should carry the sender's name: {chat}"
    );
    let screen = &result["screen"];
    assert!(num(screen, "growth") >= 15.0, "screen share at B: {screen}");

    // Page A's node's view, fetched by the page (same origin) while both were in the room.
    let joined_tracks = api_tracks(&result["api_after_join"]);
    let participants = result["api_after_join"]["body"]["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(participants.len(), 2, "participants: {participants:?}");
    for who in ["a", "b"] {
        let mine: Vec<&Value> = joined_tracks
            .iter()
            .filter(|t| t["participant"] == ids[who])
            .collect();
        assert!(
            mine.iter()
                .any(|t| t["kind"] == "video" && t["source"] == "camera")
                && mine
                    .iter()
                    .any(|t| t["kind"] == "audio" && t["source"] == "microphone"),
            "{who}'s camera and microphone in /api/rooms: {joined_tracks:?}"
        );
    }
    let screen_tracks: Vec<Value> = api_tracks(&result["api_after_screen"])
        .into_iter()
        .filter(|t| t["source"] == "screen")
        .collect();
    assert_eq!(screen_tracks.len(), 1, "{screen_tracks:?}");
    assert_eq!(screen_tracks[0]["participant"], ids["a"]);
}
