//! The benchmark harness must not rot: `kaskade-bench` runs three tiny scenarios against Kaskade
//! and Janus for a second each and must produce what a full run produces — every session
//! connected and receiving on both servers, the JSON and the latency CDF per scenario, a table,
//! and the machine-readable ratio lines last. This tests the harness, not performance: no
//! performance figure is compared with a threshold. One media check: in the classroom the
//! students' camera subscriptions are capped at the low simulcast layer on both servers, so each
//! student receives far fewer video packets than the top layer alone would bring.

use std::path::Path;
use std::process::Command;

use kaskade_bench::janus::JanusConfig;
use kaskade_tests::NetNs;

#[test]
fn kaskade_bench_runs_scenarios_against_kaskade_and_janus_and_reports_ratios() {
    let out = tempdir();
    // Without namespaces (not root) the harness can still run Kaskade alone on 127.0.0.1.
    let (against, extra): (&str, &[&str]) = match NetNs::check_tooling() {
        Ok(()) => {
            JanusConfig::default()
                .find_binary()
                .expect("Janus is installed by .ci/setup (Debian package `janus`)");
            ("kaskade,janus", &[])
        }
        Err(e) => {
            eprintln!("no network namespace ({e}): Kaskade only, on 127.0.0.1");
            ("kaskade", &["--no-netns"])
        }
    };
    let output = Command::new(env!("CARGO_BIN_EXE_kaskade-bench"))
        .args(["fanout-3", "meeting-2", "classroom-2", "--against", against])
        .args(["--duration", "1", "--warmup", "0.5", "--ramp-rate", "20"])
        .args(["--no-append", "--quiet", "--out"])
        .arg(out.path())
        .args(extra)
        .output()
        .expect("run kaskade-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kaskade-bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let servers: Vec<&str> = against.split(',').collect();
    let scenarios = ["fanout-3", "meeting-2", "classroom-2"];
    for (line, scenario) in lines[lines.len() - 3..].iter().zip(scenarios) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "ratio line: {line}");
        assert_eq!((fields[0], fields[1]), ("ratio", scenario), "{line}");
        for (field, key) in fields[2..].iter().zip(["packets_per_cpu_s", "p99_latency"]) {
            let (k, v) = field.split_once('=').expect("key=value");
            assert_eq!(k, key, "{line}");
            let v: f64 = v.parse().expect("a number");
            // With Janus in the run both sides are measured; alone, the ratio is undefined.
            assert_eq!(v.is_finite() && v > 0.0, servers.len() == 2, "{line}");
        }
    }
    for scenario in scenarios {
        let subscriptions = match scenario {
            "fanout-3" => 3,
            "meeting-2" => 2,
            // 2 students × (teacher camera + screen + 5 speakers).
            _ => 14,
        };
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join(format!("{scenario}.json")))
                .expect("the scenario's JSON"),
        )
        .expect("valid JSON");
        let runs = json["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), servers.len(), "one run per server: {json}");
        for run in runs {
            let sfu = run["sfu"].as_str().unwrap();
            assert!(servers.contains(&sfu), "{sfu}");
            assert_eq!(
                run["connected"], subscriptions,
                "{scenario} on {sfu}: {run}"
            );
            assert_eq!(run["failed"], 0, "{scenario} on {sfu}: {run}");
            assert!(
                run["video"]["received"].as_u64().unwrap() > 0
                    && run["audio"]["received"].as_u64().unwrap() > 0,
                "{scenario} on {sfu}: audio and video arrive: {run}"
            );
            assert!(run["server_cpu_s"].as_f64().unwrap() > 0.0, "{run}");
            assert!(run["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{run}");
            // Only Kaskade reports its in-node forwarding latency.
            assert_eq!(run["kaskade"].is_object(), sfu == "kaskade", "{run}");
            if scenario == "classroom-2" {
                // Camera low layer (150 kbit/s, ≤ ~35 packets/s) + screen (800 kbit/s at 15 fps,
                // ~85 packets/s); the top layer alone would be ~160 packets/s.
                let per_student = run["video"]["received"].as_f64().unwrap()
                    / run["window_s"].as_f64().unwrap()
                    / 2.0;
                assert!(
                    (60.0..170.0).contains(&per_student),
                    "{sfu}: {per_student:.0} video packets/s per student: {run}"
                );
            }
        }
        let svg = std::fs::read_to_string(out.path().join(format!("{scenario}-latency-cdf.svg")))
            .expect("the scenario's CDF");
        assert_eq!(
            svg.matches("<polyline").count(),
            servers.len(),
            "one line per run"
        );
        assert!(
            stdout.contains(&format!("| {scenario} | runs |")),
            "table: {stdout}"
        );
    }
}

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("kaskade-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}
