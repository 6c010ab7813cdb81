//! Owns: validating what can be validated of `deploy/` on this machine — `promtool check config`
//! on every Prometheus configuration, `promtool check rules` and `promtool test rules` on the
//! alerts (every alert fires in its unit test and stays silent on a healthy series), every YAML
//! and JSON file parses, every dashboard query is valid PromQL, every `kaskade … --flag` and
//! `KASKADE_*` name in the manifests exists in the binary's `--help`, stop timeouts exceed the
//! drain deadline, the Compose file, Kubernetes manifests and Prometheus targets agree with each
//! other, the systemd units pass `systemd-analyze`, and every metric a panel or an alert queries
//! is exposed by live nodes. Docker and Kubernetes themselves are not available here.

use kaskade_tests::browser::find_in_path;
use kaskade_tests::deploy::{self, Help, Invocation};
use kaskade_tests::mesh::{self, MeshNodeSpec, TempDir};
use kaskade_tests::{node_bin, poll_until, python, tests_dir};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The drain deadline a manifest gets when it does not set KASKADE_DRAIN_DEADLINE_SECS.
const DEFAULT_DRAIN_DEADLINE_SECS: u64 = 30;
/// What a stop timeout must leave beyond the drain deadline (deregistering, closing sockets).
const STOP_MARGIN_SECS: u64 = 5;
/// `systemd-analyze security` exposure (0-100, shown as 0.0-10.0) a unit may have at most.
const SYSTEMD_EXPOSURE_MAX: u32 = 20;

fn deploy_dir() -> PathBuf {
    tests_dir()
        .parent()
        .expect("tests/ has a parent")
        .join("deploy")
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(deploy_dir().parent().unwrap())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e))
}

/// promtool from Debian's `prometheus` package, or a panic saying how to get it.
fn promtool() -> PathBuf {
    find_in_path("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is not in PATH: run `sudo bash .ci/setup` (installs Debian's prometheus \
             package, which ships promtool)"
        )
    })
}

/// Runs `promtool args…` in `dir`; panics with its output unless it succeeds.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} in {} failed:\n{text}",
        dir.display()
    );
    text
}

/// Every YAML file under deploy/ as its documents (JSON values), parsed once by PyYAML.
fn yaml_files() -> &'static BTreeMap<PathBuf, Result<Vec<Value>, String>> {
    static FILES: OnceLock<BTreeMap<PathBuf, Result<Vec<Value>, String>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let paths: Vec<PathBuf> = files_under(&deploy_dir())
            .into_iter()
            .filter(|p| has_ext(p, &["yml", "yaml"]))
            .collect();
        const LOADER: &str = r#"
import json, sys
try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing")
out = {}
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            out[path] = {"docs": list(yaml.safe_load_all(f))}
    except yaml.YAMLError as e:
        out[path] = {"error": str(e)}
json.dump(out, sys.stdout, default=str)
"#;
        let out = Command::new(python())
            .arg("-c")
            .arg(LOADER)
            .args(&paths)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "loading YAML with python3 failed: {}\n(PyYAML comes from tests/requirements.txt: \
             run `sudo bash .ci/setup`)",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Value = serde_json::from_slice(&out.stdout).expect("loader output is JSON");
        paths
            .into_iter()
            .map(|p| {
                let entry = &parsed[p.to_str().unwrap()];
                let result = match entry["docs"].as_array() {
                    Some(docs) => Ok(docs.iter().filter(|d| !d.is_null()).cloned().collect()),
                    None => Err(entry["error"].as_str().unwrap_or("not loaded").to_owned()),
                };
                (p, result)
            })
            .collect()
    })
}

/// The documents of one YAML file under deploy/ (`rel_path` relative to deploy/).
fn yaml(rel_path: &str) -> &'static [Value] {
    let path = deploy_dir().join(rel_path);
    match yaml_files().get(&path) {
        Some(Ok(docs)) => docs,
        Some(Err(e)) => panic!("{rel_path} does not parse: {e}"),
        None => panic!("deploy/{rel_path} is missing"),
    }
}

fn yaml_one(rel_path: &str) -> &'static Value {
    let docs = yaml(rel_path);
    assert_eq!(docs.len(), 1, "{rel_path}: one document expected");
    &docs[0]
}

fn kubernetes_docs() -> Vec<(String, &'static Value)> {
    files_under(&deploy_dir().join("kubernetes"))
        .into_iter()
        .filter(|p| has_ext(p, &["yaml", "yml"]) && !p.ends_with("kustomization.yaml"))
        .flat_map(|p| {
            let name = p.strip_prefix(deploy_dir()).unwrap().display().to_string();
            yaml(&name).iter().map(move |d| (name.clone(), d))
        })
        .collect()
}

fn dashboard() -> Value {
    let path = deploy_dir().join("grafana/dashboards/kaskade.json");
    serde_json::from_str(&read(&path)).expect("kaskade.json parses")
}

/// `kaskade <args…> --help` of the test build of the binary.
fn help(args: &[&str]) -> Help {
    let out = Command::new(node_bin!())
        .args(args)
        .arg("--help")
        .output()
        .expect("run kaskade --help");
    assert!(out.status.success(), "kaskade {args:?} --help failed");
    deploy::parse_help(&String::from_utf8_lossy(&out.stdout))
}

/// What each checked subcommand accepts; `accounts` with all of its own subcommands.
fn subcommand_help() -> BTreeMap<String, Help> {
    let mut out = BTreeMap::new();
    for sub in deploy::SUBCOMMANDS {
        let mut h = help(&[sub]);
        for child in h.subcommands.clone() {
            let c = help(&[sub, &child]);
            h.flags.extend(c.flags);
            h.envs.extend(c.envs);
        }
        out.insert(sub.to_owned(), h);
    }
    out
}

/// KASKADE_DRAIN_DEADLINE_SECS among `values` (name, value), or the node's default.
fn drain_deadline_in(values: &[(String, String)]) -> u64 {
    values
        .iter()
        .find(|(k, _)| k == "KASKADE_DRAIN_DEADLINE_SECS")
        .map(|(_, v)| v.parse().expect("a number of seconds"))
        .unwrap_or(DEFAULT_DRAIN_DEADLINE_SECS)
}

fn assert_stop_covers_drain(what: &str, stop_secs: u64, deadline: u64) {
    assert!(
        stop_secs >= deadline + STOP_MARGIN_SECS,
        "{what}: the stop timeout ({stop_secs} s) must exceed the drain deadline ({deadline} s) \
         by {STOP_MARGIN_SECS} s, or the node is killed mid-drain"
    );
}

// ---------------------------------------------------------------- files parse

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    for required in [
        "Dockerfile",
        "README.md",
        "local-mesh.sh",
        "compose/docker-compose.yml",
        "systemd/kaskade-node.service",
        "systemd/kaskade.env.example",
        "prometheus/prometheus.yml",
        "prometheus/prometheus-local-mesh.yml",
        "prometheus/prometheus-kubernetes.yml",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "grafana/dashboards/kaskade.json",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/kaskade.yml",
        "kubernetes/kustomization.yaml",
        "kubernetes/servicemonitor.yaml",
    ] {
        assert!(
            deploy_dir().join(required).is_file(),
            "deploy/{required} is missing"
        );
    }
    let mut bad = Vec::new();
    for (path, result) in yaml_files() {
        match result {
            Ok(docs) if docs.is_empty() => bad.push(format!("{}: no document", rel(path))),
            Ok(_) => {}
            Err(e) => bad.push(format!("{}: {e}", rel(path))),
        }
    }
    let json_files: Vec<PathBuf> = files_under(&deploy_dir())
        .into_iter()
        .filter(|p| has_ext(p, &["json"]))
        .collect();
    assert!(!json_files.is_empty(), "no JSON file under deploy/");
    for path in &json_files {
        if let Err(e) = serde_json::from_str::<Value>(&read(path)) {
            bad.push(format!("{}: {e}", rel(path)));
        }
    }
    assert!(
        bad.is_empty(),
        "files that do not parse:\n{}",
        bad.join("\n")
    );
    eprintln!(
        "parsed {} YAML and {} JSON files under deploy/",
        yaml_files().len(),
        json_files.len()
    );
}

// ---------------------------------------------------------------- Prometheus

/// Whether this promtool knows Kubernetes service discovery (Debian's build leaves it out).
fn promtool_has_kubernetes_sd(dir: &Path) -> bool {
    let probe = dir.join("probe-kubernetes-sd.yml");
    std::fs::write(
        &probe,
        "scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs:\n      - role: pod\n",
    )
    .unwrap();
    let out = Command::new(promtool())
        .args(["check", "config"])
        .arg(&probe)
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_file(&probe);
    !String::from_utf8_lossy(&out.stderr).contains("kubernetes_sd_configs not found")
}

/// Replaces every `*_file` path of a Prometheus config by a file in `dir` (credentials and CA
/// files live on the Prometheus host, not here); returns how many it replaced.
fn localise_files(value: &mut Value, dir: &Path, n: &mut usize) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key.ends_with("_file") && child.is_string() {
                    *n += 1;
                    let local = dir.join(format!("referenced-{n}"));
                    std::fs::write(&local, "placeholder-credential\n").unwrap();
                    *child = json!(local.display().to_string());
                } else {
                    localise_files(child, dir, n);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| localise_files(i, dir, n)),
        _ => {}
    }
}

#[test]
fn promtool_accepts_every_prometheus_configuration() {
    let tmp = TempDir::new("promcfg");
    let has_k8s_sd = promtool_has_kubernetes_sd(&tmp.0);
    let configs: Vec<PathBuf> = files_under(&deploy_dir().join("prometheus"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("prometheus") && n.ends_with(".yml"))
        })
        .collect();
    assert!(
        configs.len() >= 3,
        "expected the Compose, local-mesh and Kubernetes configs"
    );
    for config in configs {
        let name = config.file_name().unwrap().to_str().unwrap();
        let mut value = yaml_one(&format!("prometheus/{name}")).clone();
        // Rule files resolve relative to the config: give them the same neighbours.
        for rule_file in value["rule_files"].as_array().into_iter().flatten() {
            let rule_file = rule_file.as_str().expect("rule file path");
            std::fs::copy(
                deploy_dir().join("prometheus").join(rule_file),
                tmp.0.join(rule_file),
            )
            .unwrap_or_else(|e| panic!("{name}: rule file {rule_file}: {e}"));
        }
        let mut replaced = 0;
        localise_files(&mut value, &tmp.0, &mut replaced);
        if !has_k8s_sd {
            for job in value["scrape_configs"].as_array_mut().into_iter().flatten() {
                if let Some(obj) = job.as_object_mut()
                    && obj.remove("kubernetes_sd_configs").is_some()
                {
                    eprintln!(
                        "{name}: this promtool has no Kubernetes service discovery (Debian's \
                         build); checking the rest with the discovery left out"
                    );
                    obj.insert("static_configs".into(), json!([{"targets": []}]));
                }
            }
        }
        // JSON is YAML: promtool reads the rewritten copy as it is.
        let copy = tmp.0.join(name);
        std::fs::write(&copy, serde_json::to_string_pretty(&value).unwrap()).unwrap();
        let out = run_promtool(&tmp.0, &["check", "config", name]);
        assert!(out.contains("SUCCESS"), "{name}: {out}");
        eprintln!("promtool check config {name}: ok ({replaced} referenced files stood in)");
    }
}

#[test]
fn alert_rules_pass_promtool_and_each_fires_only_when_unhealthy() {
    let dir = deploy_dir().join("prometheus");
    let out = run_promtool(&dir, &["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_promtool(&dir, &["test", "rules", "alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    let rules = yaml_one("prometheus/alerts.yml");
    let tests = yaml_one("prometheus/alerts_test.yml");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in tests["tests"].as_array().expect("tests") {
        for t in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = t["alertname"].as_str().unwrap().to_owned();
            match t["exp_alerts"].as_array() {
                Some(exp) if !exp.is_empty() => fires.insert(name),
                _ => silent.insert(name),
            };
        }
    }
    let mut problems = Vec::new();
    let mut alerts = 0;
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            if !fires.contains(alert) {
                problems.push(format!("{alert}: no unit test where it fires"));
            }
            if !silent.contains(alert) {
                problems.push(format!("{alert}: no unit test where it stays silent"));
            }
            if !matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ) {
                problems.push(format!("{alert}: severity label critical or warning"));
            }
            for annotation in ["summary", "description"] {
                if rule["annotations"][annotation]
                    .as_str()
                    .is_none_or(str::is_empty)
                {
                    problems.push(format!("{alert}: no {annotation} annotation"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(alerts >= 8, "only {alerts} alerts");
    eprintln!("{alerts} alerts: promtool checked and unit-tested each firing and silent");
}

#[test]
fn prometheus_targets_match_the_compose_services_and_the_local_mesh() {
    // Compose: each target is a node service on its KASKADE_HTTP port, labelled with its id
    // and site; the credential is the secret Compose mounts for Prometheus.
    let compose = yaml_one("compose/docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    let config = yaml_one("prometheus/prometheus.yml");
    let job = &config["scrape_configs"][0];
    assert_eq!(job["job_name"], "kaskade");
    let mut targets = 0;
    for group in job["static_configs"].as_array().expect("static_configs") {
        for target in group["targets"].as_array().expect("targets") {
            let target = target.as_str().unwrap();
            let (host, port) = target.rsplit_once(':').unwrap();
            let env = &services
                .get(host)
                .unwrap_or_else(|| panic!("prometheus.yml: {target}: no Compose service {host}"))["environment"];
            assert!(
                env["KASKADE_HTTP"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":{port}")),
                "{target}: the service listens on {}",
                env["KASKADE_HTTP"]
            );
            assert_eq!(group["labels"]["node"], env["KASKADE_NODE_ID"], "{target}");
            assert_eq!(group["labels"]["site"], env["KASKADE_SITE"], "{target}");
            targets += 1;
        }
    }
    assert_eq!(targets, 4, "prometheus.yml scrapes the four Compose nodes");
    let credentials = job["authorization"]["credentials_file"].as_str().unwrap();
    let secret = credentials
        .strip_prefix("/run/secrets/")
        .expect("a Compose secret path");
    let prometheus_secrets = &services["prometheus"]["secrets"];
    assert!(
        prometheus_secrets
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == secret),
        "the prometheus service mounts secret {secret}"
    );
    assert!(
        compose["secrets"][secret].is_object(),
        "secret {secret} is declared"
    );

    // Local mesh: the script's addresses, sites and HTTP port.
    let script = read(&deploy_dir().join("local-mesh.sh"));
    let assoc = |name: &str| -> BTreeMap<String, String> {
        let line = script
            .lines()
            .find(|l| l.starts_with(&format!("declare -A {name}=(")))
            .unwrap_or_else(|| panic!("local-mesh.sh declares {name}"));
        line.split('[')
            .skip(1)
            .filter_map(|item| {
                let (k, v) = item.split_once("]=")?;
                Some((k.to_owned(), v.trim_end_matches([')', ' ']).to_owned()))
            })
            .collect()
    };
    let ips = assoc("IP");
    let sites = assoc("SITE");
    let port = script
        .lines()
        .find_map(|l| l.strip_prefix("HTTP_PORT="))
        .expect("HTTP_PORT in local-mesh.sh");
    let local = yaml_one("prometheus/prometheus-local-mesh.yml");
    let mut seen = BTreeSet::new();
    for group in local["scrape_configs"][0]["static_configs"]
        .as_array()
        .unwrap()
    {
        let node = group["labels"]["node"].as_str().unwrap();
        for target in group["targets"].as_array().unwrap() {
            assert_eq!(
                target.as_str().unwrap(),
                format!("{}:{port}", ips[node]),
                "{node}"
            );
        }
        assert_eq!(
            group["labels"]["site"].as_str().unwrap(),
            sites[node],
            "{node}"
        );
        seen.insert(node.to_owned());
    }
    assert_eq!(
        seen,
        ips.keys().cloned().collect(),
        "every local-mesh node is scraped"
    );
}

// ---------------------------------------------------------------- Grafana

#[test]
fn dashboard_queries_are_valid_promql_and_provisioning_fits() {
    let board = dashboard();
    let queries = deploy::dashboard_queries(&board);
    assert!(queries.len() >= 40, "only {} queries", queries.len());
    // promtool checks PromQL inside rule files: one recording rule per panel query, with
    // Grafana's variables given values.
    let rules: Vec<Value> = queries
        .iter()
        .filter(|(title, _)| !title.starts_with('$'))
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$site", ".*")
                .replace("$node", ".*");
            json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let tmp = TempDir::new("dashq");
    let file = tmp.0.join("dashboard-queries.yml");
    let doc = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let out = run_promtool(&tmp.0, &["check", "rules", "dashboard-queries.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    let mut ids = BTreeSet::new();
    let mut rows = Vec::new();
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut panels = Vec::new();
    walk(&board["panels"], &mut panels);
    for p in &panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        if p["type"] == "row" {
            rows.push(p["title"].as_str().unwrap().to_lowercase());
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{}",
            p["title"]
        );
    }
    for row in ["overview", "per site", "per node", "links", "latency"] {
        assert!(
            rows.iter().any(|r| r.contains(row)),
            "no row about {row}: {rows:?}"
        );
    }
    let vars: Vec<&str> = board["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in ["datasource", "site", "node"] {
        assert!(vars.contains(&v), "template variable {v} missing: {vars:?}");
    }

    // Provisioning: the dashboards path is where Compose mounts deploy/grafana/dashboards, and
    // the data source is Prometheus at the URL Compose gives Grafana.
    let provider = &yaml_one("grafana/provisioning/dashboards/kaskade.yml")["providers"][0];
    let path = provider["options"]["path"].as_str().unwrap();
    let datasource = &yaml_one("grafana/provisioning/datasources/prometheus.yml")["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    let grafana = &yaml_one("compose/docker-compose.yml")["services"]["grafana"];
    let mounts: Vec<&str> = grafana["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("../grafana/dashboards:") && m.split(':').nth(1) == Some(path)),
        "Compose mounts the dashboards at {path}: {mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("../grafana/provisioning:/etc/grafana/provisioning")),
        "Compose mounts the provisioning files: {mounts:?}"
    );
    let url_var = datasource["url"].as_str().unwrap();
    let var = url_var.trim_start_matches("${").trim_end_matches('}');
    assert!(
        grafana["environment"][var]
            .as_str()
            .is_some_and(|u| u.starts_with("http://prometheus:")),
        "Compose sets {var} for Grafana"
    );
}

// ---------------------------------------------------------------- flags and environment

/// The files whose `kaskade` invocations and KASKADE_* names are checked: everything under
/// deploy/ except local-mesh.sh (its own KASKADE_BIN setting; its node flags are exercised by
/// running it) and the dashboard.
fn checked_text_files() -> Vec<PathBuf> {
    files_under(&deploy_dir())
        .into_iter()
        .filter(|p| !p.ends_with("local-mesh.sh") && !has_ext(p, &["json"]))
        .collect()
}

#[test]
fn manifests_use_only_flags_and_env_names_the_binary_has() {
    let helps = subcommand_help();
    let mut known_env: BTreeSet<String> = helps
        .values()
        .flat_map(|h| h.envs.iter().cloned())
        .collect();
    // Read by the log filter, not by clap.
    let node_sources = files_under(&deploy_dir().join("../nodes/src"));
    assert!(
        node_sources
            .iter()
            .any(|p| has_ext(p, &["rs"]) && read(p).contains("\"KASKADE_LOG\"")),
        "no source under nodes/src reads KASKADE_LOG"
    );
    known_env.insert("KASKADE_LOG".into());

    let mut invocations: Vec<(String, Invocation)> = Vec::new();
    let mut env_uses: Vec<(String, String)> = Vec::new();
    for path in checked_text_files() {
        let text = read(&path);
        let name = rel(&path);
        for inv in deploy::invocations_in_text(&text) {
            invocations.push((name.clone(), inv));
        }
        for env in deploy::env_names(&text) {
            env_uses.push((name.clone(), env));
        }
        if let Some(Ok(docs)) = yaml_files().get(&path) {
            for doc in docs {
                for args in deploy::string_arrays_under(doc, &["args", "command"]) {
                    if let Some(inv) = deploy::invocation_from_args(&args) {
                        invocations.push((name.clone(), inv));
                    }
                }
            }
        }
        if path.file_name().is_some_and(|n| n == "Dockerfile") {
            // ENTRYPOINT ["kaskade"] + CMD ["node", …]
            let array = |key: &str| -> Vec<String> {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|a| serde_json::from_str(a.trim()).expect("exec-form array"))
                    .unwrap_or_default()
            };
            let entrypoint = array("ENTRYPOINT ");
            assert_eq!(entrypoint, ["kaskade"], "the image's entrypoint is kaskade");
            let inv = deploy::invocation_from_args(&array("CMD ")).expect("CMD runs a subcommand");
            invocations.push((name.clone(), inv));
        }
    }
    let mut unknown = Vec::new();
    for (file, inv) in &invocations {
        let h = &helps[&inv.subcommand];
        for flag in &inv.flags {
            if !h.flags.contains(flag) {
                unknown.push(format!(
                    "{file}: `{}`: no {flag} in `kaskade {} --help`",
                    inv.text, inv.subcommand
                ));
            }
        }
    }
    for (file, env) in &env_uses {
        if !known_env.contains(env) {
            unknown.push(format!("{file}: {env} is not in any `kaskade … --help`"));
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    let subs: BTreeSet<&str> = invocations
        .iter()
        .map(|(_, i)| i.subcommand.as_str())
        .collect();
    for sub in ["node", "drain", "certs"] {
        assert!(
            subs.contains(sub),
            "no `kaskade {sub}` found in the manifests: {subs:?}"
        );
    }
    let distinct_env: BTreeSet<&String> = env_uses.iter().map(|(_, e)| e).collect();
    assert!(
        distinct_env.len() >= 15,
        "only {} KASKADE_* names found",
        distinct_env.len()
    );
    eprintln!(
        "{} invocations ({} flags) and {} KASKADE_* uses ({} names) checked against --help",
        invocations.len(),
        invocations
            .iter()
            .map(|(_, i)| i.flags.len())
            .sum::<usize>(),
        env_uses.len(),
        distinct_env.len()
    );
}

#[test]
fn stop_timeouts_exceed_the_drain_deadline() {
    // systemd: TimeoutStopSec against the example environment file.
    let unit = read(&deploy_dir().join("systemd/kaskade-node.service"));
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec in kaskade-node.service");
    assert!(
        unit.lines().any(|l| l == "KillSignal=SIGTERM"),
        "the unit stops with SIGTERM"
    );
    let env: Vec<(String, String)> = read(&deploy_dir().join("systemd/kaskade.env.example"))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    assert_stop_covers_drain(
        "systemd/kaskade-node.service",
        deploy::duration_secs(stop).expect("a duration"),
        drain_deadline_in(&env),
    );

    // Compose: every node service's stop_grace_period.
    let compose = yaml_one("compose/docker-compose.yml");
    let mut nodes = 0;
    for (name, service) in compose["services"].as_object().unwrap() {
        let Some(env) = service["environment"].as_object() else {
            continue;
        };
        if !env.contains_key("KASKADE_NODE_ID") {
            continue;
        }
        nodes += 1;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let grace = service["stop_grace_period"].as_str().unwrap_or("10s");
        assert_stop_covers_drain(
            &format!("compose service {name}"),
            deploy::duration_secs(grace).expect("a duration"),
            drain_deadline_in(&env),
        );
        assert_eq!(service["stop_signal"], "SIGTERM", "{name}");
    }
    assert_eq!(nodes, 4, "two sites × two nodes in Compose");

    // Kubernetes: terminationGracePeriodSeconds of every pod template running `kaskade node`.
    let mut workloads = 0;
    for (file, doc) in kubernetes_docs() {
        let spec = &doc["spec"]["template"]["spec"];
        for c in spec["containers"].as_array().into_iter().flatten() {
            if c["args"][0] != "node" {
                continue;
            }
            workloads += 1;
            let env: Vec<(String, String)> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_owned(),
                        e["value"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            assert_stop_covers_drain(file.as_str(), grace, drain_deadline_in(&env));
        }
    }
    assert!(
        workloads >= 2,
        "Kaskade workloads for two sites in deploy/kubernetes/"
    );
}

// ---------------------------------------------------------------- Compose and Kubernetes

#[test]
fn compose_file_is_consistent() {
    let compose_dir = deploy_dir().join("compose");
    let compose = yaml_one("compose/docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    let declared = |key: &str| -> BTreeSet<String> {
        compose[key]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let (volumes, secrets, networks) = (
        declared("volumes"),
        declared("secrets"),
        declared("networks"),
    );
    let etcd_members = services.keys().filter(|k| k.starts_with("etcd")).count();
    assert_eq!(etcd_members, 3, "a three-member etcd");
    for s in ["prometheus", "grafana"] {
        assert!(services.contains_key(s), "Compose runs {s}");
    }
    let mut problems = Vec::new();
    for (name, service) in services {
        if service["image"].as_str().is_none() && service["build"].is_null() {
            problems.push(format!("{name}: neither image nor build"));
        }
        if let Some(dockerfile) = service["build"]["dockerfile"].as_str() {
            let context = compose_dir.join(service["build"]["context"].as_str().unwrap_or("."));
            if !context.join(dockerfile).is_file() {
                problems.push(format!(
                    "{name}: build file {dockerfile} not in {}",
                    context.display()
                ));
            }
        }
        let depends: Vec<String> = compose_names(&service["depends_on"]);
        for d in depends {
            if !services.contains_key(&d) {
                problems.push(format!("{name}: depends on unknown service {d}"));
            }
        }
        for v in service["volumes"].as_array().into_iter().flatten() {
            let source = v
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default();
            if source.starts_with('.') || source.starts_with('/') {
                if !compose_dir.join(source).exists() {
                    problems.push(format!("{name}: bind mount source {source} does not exist"));
                }
            } else if !volumes.contains(source) {
                problems.push(format!("{name}: volume {source} is not declared"));
            }
        }
        for s in service["secrets"].as_array().into_iter().flatten() {
            if !secrets.contains(s.as_str().unwrap_or_default()) {
                problems.push(format!("{name}: secret {s} is not declared"));
            }
        }
        let nets: Vec<String> = compose_names(&service["networks"]);
        for n in nets {
            if !networks.contains(&n) {
                problems.push(format!("{name}: network {n} is not declared"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

fn kind_of<'a>(docs: &'a [(String, &'static Value)], kind: &str) -> Vec<(&'a str, &'static Value)> {
    docs.iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(f, d)| (f.as_str(), *d))
        .collect()
}

/// StatefulSets, DaemonSets and Deployments.
fn workloads<'a>(docs: &'a [(String, &'static Value)]) -> Vec<(&'a str, &'static Value)> {
    ["StatefulSet", "DaemonSet", "Deployment"]
        .iter()
        .flat_map(|k| kind_of(docs, k))
        .collect()
}

fn ports(container: &Value) -> impl Iterator<Item = &Value> {
    container["ports"].as_array().into_iter().flatten()
}

#[test]
fn kubernetes_objects_are_named_namespaced_and_listed_in_the_kustomization() {
    let docs = kubernetes_docs();
    let mut problems = Vec::new();
    for (file, d) in &docs {
        match (
            d["apiVersion"].as_str(),
            d["kind"].as_str(),
            d["metadata"]["name"].as_str(),
        ) {
            (Some(_), Some(kind), Some(name)) => {
                if kind != "Namespace" && d["metadata"]["namespace"] != "kaskade" {
                    problems.push(format!("{file}: {kind} {name} is not in namespace kaskade"));
                }
            }
            _ => problems.push(format!(
                "{file}: a document without apiVersion, kind or name"
            )),
        }
    }
    let kinds: BTreeSet<(String, String)> = docs
        .iter()
        .map(|(_, d)| (d["kind"].to_string(), d["metadata"]["name"].to_string()))
        .collect();
    for (kind, name) in [
        ("Namespace", "kaskade"),
        ("StatefulSet", "etcd"),
        ("Service", "etcd"),
        ("PodDisruptionBudget", "etcd"),
        ("ServiceMonitor", "kaskade"),
    ] {
        if !kinds.contains(&(json!(kind).to_string(), json!(name).to_string())) {
            problems.push(format!("no {kind} {name} in deploy/kubernetes/"));
        }
    }
    let etcd = kind_of(&docs, "StatefulSet")
        .into_iter()
        .find(|(_, d)| d["metadata"]["name"] == "etcd");
    assert_eq!(
        etcd.map(|(_, d)| &d["spec"]["replicas"]),
        Some(&json!(3)),
        "three etcd members"
    );
    let listed: BTreeSet<String> = yaml_one("kubernetes/kustomization.yaml")["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let present: BTreeSet<String> = files_under(&deploy_dir().join("kubernetes"))
        .iter()
        .filter(|p| has_ext(p, &["yaml"]) && !p.ends_with("kustomization.yaml"))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    if listed != present {
        problems.push(format!(
            "kustomization.yaml lists {listed:?}, the directory has {present:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn kubernetes_selectors_services_and_ports_fit_together() {
    let docs = kubernetes_docs();
    let services = kind_of(&docs, "Service");
    let templates: Vec<&Value> = workloads(&docs)
        .iter()
        .map(|(_, w)| &w["spec"]["template"])
        .collect();
    let mut problems = Vec::new();
    for (file, w) in workloads(&docs) {
        let name = &w["metadata"]["name"];
        let template = &w["spec"]["template"];
        if !selects(
            &w["spec"]["selector"]["matchLabels"],
            &template["metadata"]["labels"],
        ) {
            problems.push(format!(
                "{file}: {name}'s selector does not match its pod labels"
            ));
        }
        if w["kind"] == "StatefulSet" {
            let governing = &w["spec"]["serviceName"];
            if !services.iter().any(|(_, s)| {
                s["metadata"]["name"] == *governing && s["spec"]["clusterIP"] == "None"
            }) {
                problems.push(format!(
                    "{file}: {name}: serviceName {governing} is not a headless Service"
                ));
            }
        }
        for c in template["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for probe in ["readinessProbe", "livenessProbe"] {
                let port = &c[probe]["httpGet"]["port"];
                if port.is_string() && !ports(c).any(|p| p["name"] == *port) {
                    problems.push(format!("{file}: {name}: {probe} uses unknown port {port}"));
                }
            }
        }
    }
    let pods_selected_by = |selector: &Value| -> Vec<&Value> {
        templates
            .iter()
            .copied()
            .filter(|t| selects(selector, &t["metadata"]["labels"]))
            .collect()
    };
    for (file, s) in &services {
        let name = &s["metadata"]["name"];
        let pods = pods_selected_by(&s["spec"]["selector"]);
        if pods.is_empty() {
            problems.push(format!("{file}: Service {name} selects no pod template"));
        }
        for port in s["spec"]["ports"].as_array().into_iter().flatten() {
            let target = &port["targetPort"];
            let found = pods.iter().any(|t| {
                t["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| ports(c).any(|p| p["name"] == *target))
            });
            if target.is_string() && !found {
                problems.push(format!("{file}: Service {name}: no pod has port {target}"));
            }
        }
    }
    for (file, pdb) in kind_of(&docs, "PodDisruptionBudget") {
        if pods_selected_by(&pdb["spec"]["selector"]["matchLabels"]).is_empty() {
            problems.push(format!(
                "{file}: PodDisruptionBudget {} selects no pod template",
                pdb["metadata"]["name"]
            ));
        }
    }
    for (file, sm) in kind_of(&docs, "ServiceMonitor") {
        let selector = &sm["spec"]["selector"]["matchLabels"];
        let Some((_, service)) = services
            .iter()
            .find(|(_, s)| selects(selector, &s["metadata"]["labels"]))
        else {
            problems.push(format!("{file}: the ServiceMonitor selects no Service"));
            continue;
        };
        for e in sm["spec"]["endpoints"].as_array().into_iter().flatten() {
            if !service["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == e["port"])
            {
                problems.push(format!(
                    "{file}: ServiceMonitor port {} is not on the Service",
                    e["port"]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn kaskade_pods_use_the_host_network_udp_ports_and_a_pre_stop_drain() {
    let docs = kubernetes_docs();
    let mut problems = Vec::new();
    let mut kaskade_pods = 0;
    for (file, w) in workloads(&docs) {
        let spec = &w["spec"]["template"]["spec"];
        for c in spec["containers"].as_array().into_iter().flatten() {
            if c["args"][0] != "node" {
                continue;
            }
            kaskade_pods += 1;
            let name = &w["metadata"]["name"];
            if spec["hostNetwork"] != true {
                problems.push(format!("{file}: {name}: UDP media needs hostNetwork"));
            }
            if spec["dnsPolicy"] != "ClusterFirstWithHostNet" {
                problems.push(format!(
                    "{file}: {name}: with hostNetwork, dnsPolicy must be ClusterFirstWithHostNet"
                ));
            }
            for udp in ["media", "relay"] {
                if !ports(c).any(|p| p["name"] == udp && p["protocol"] == "UDP") {
                    problems.push(format!("{file}: {name}: no UDP port {udp}"));
                }
            }
            let pre_stop: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !deploy::invocations_in_text(&pre_stop.join(" "))
                .iter()
                .any(|i| i.subcommand == "drain")
            {
                problems.push(format!("{file}: {name}: no `kaskade drain` in preStop"));
            }
        }
    }
    assert!(kaskade_pods >= 2, "Kaskade workloads for two sites");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Names of the Secrets a manifest refers to (env `secretKeyRef`, volumes, `secret:` selectors).
fn secret_names(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(m) => {
            for (key, field) in [
                ("secretKeyRef", "name"),
                ("secret", "name"),
                ("secret", "secretName"),
            ] {
                if let Some(name) = m
                    .get(key)
                    .and_then(|s| s.get(field))
                    .and_then(Value::as_str)
                {
                    out.insert(name.to_owned());
                }
            }
            m.values().for_each(|c| secret_names(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| secret_names(c, out)),
        _ => {}
    }
}

#[test]
fn every_kubernetes_secret_is_documented() {
    let readme = read(&deploy_dir().join("README.md"));
    let mut secrets = BTreeSet::new();
    for (_, d) in kubernetes_docs() {
        secret_names(d, &mut secrets);
    }
    assert!(
        secrets.len() >= 3,
        "tokens, relay certificates and TLS: {secrets:?}"
    );
    let undocumented: Vec<&String> = secrets
        .iter()
        .filter(|s| !readme.contains(&format!("create secret generic {s}")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "Secrets used but deploy/README.md does not say how to create them: {undocumented:?}"
    );
}

// ---------------------------------------------------------------- systemd

#[test]
fn systemd_units_pass_systemd_analyze() {
    let analyze = find_in_path("systemd-analyze").unwrap_or_else(|| {
        panic!(
            "systemd-analyze is not in PATH: run `sudo bash .ci/setup` (Debian's systemd package)"
        )
    });
    let tmp = TempDir::new("units");
    let units: Vec<PathBuf> = files_under(&deploy_dir().join("systemd"))
        .into_iter()
        .filter(|p| has_ext(p, &["service"]))
        .collect();
    assert!(!units.is_empty());
    for unit in units {
        let name = unit.file_name().unwrap().to_str().unwrap();
        // `verify` wants the programs to exist: the test build of kaskade stands in.
        let text = read(&unit).replace("/usr/local/bin/kaskade", node_bin!().to_str().unwrap());
        let copy = tmp.0.join(name);
        std::fs::write(&copy, text).unwrap();
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .expect("run systemd-analyze verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A program a unit starts that this machine lacks (etcd gateway) is not the unit's fault.
        let real_problems: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("is not executable"))
            .collect();
        assert!(
            real_problems.is_empty(),
            "systemd-analyze verify {name}:\n{}",
            real_problems.join("\n")
        );
        let out = Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={SYSTEMD_EXPOSURE_MAX}"))
            .arg(&copy)
            .output()
            .expect("run systemd-analyze security");
        let report = String::from_utf8_lossy(&out.stdout);
        let overall = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        assert!(
            out.status.success(),
            "{name}: exposure above {}.{} — {overall}\n{report}",
            SYSTEMD_EXPOSURE_MAX / 10,
            SYSTEMD_EXPOSURE_MAX % 10
        );
        eprintln!("{name}: {overall}");
    }
}

// ---------------------------------------------------------------- metrics on live nodes

/// Every metric name a dashboard panel, a dashboard variable or an alert rule queries, with
/// where it is queried.
fn queried_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (panel, expr) in deploy::dashboard_queries(&dashboard()) {
        for name in deploy::metric_names(&expr) {
            out.entry(name)
                .or_default()
                .insert(format!("panel \"{panel}\""));
        }
    }
    for (rule, expr) in deploy::rule_exprs(yaml_one("prometheus/alerts.yml")) {
        for name in deploy::metric_names(&expr) {
            out.entry(name).or_default().insert(format!("alert {rule}"));
        }
    }
    for own in deploy::PROMETHEUS_OWN_SERIES {
        out.remove(own);
    }
    out
}

#[test]
fn every_queried_metric_is_exposed_by_live_nodes() {
    let queried = queried_metrics();
    assert!(
        queried.len() >= 30,
        "only {} metrics queried",
        queried.len()
    );

    // Two nodes of two sites linked by the relay, so the per-link families have samples.
    let bin = node_bin!();
    let certs = TempDir::new("deploy-certs");
    mesh::make_certs(bin, &certs.0, &["dm1", "dm2"]).expect("kaskade certs");
    let specs = [
        MeshNodeSpec::new("dm1", "a", "127.0.0.117"),
        MeshNodeSpec::new("dm2", "b", "127.0.0.118"),
    ];
    let nodes = mesh::start_mesh(bin, &specs, &certs.0, &[]).expect("two linked nodes");
    mesh::wait_all_linked(None, &nodes, &["dm1", "dm2"]);
    // A datagram from nowhere: the dropped-datagrams family gets its first sample.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(b"not a media packet", nodes[0].media_addr)
        .unwrap();

    let scrape = |node: &kaskade_tests::NodeProcess| -> String {
        let r = kaskade_tests::http::get(&node.at("/metrics")).expect("GET /metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        r.text()
    };
    let missing = |families: &BTreeSet<String>| -> Vec<String> {
        queried
            .iter()
            .filter(|(name, _)| deploy::family_of(name, families).is_none())
            .map(|(name, used)| {
                format!(
                    "{name} (in {})",
                    used.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect()
    };
    let result = poll_until(
        "every queried metric family in /metrics",
        Duration::from_secs(10),
        || {
            let mut families = BTreeSet::new();
            for node in &nodes {
                families.extend(deploy::families(&scrape(node)));
            }
            let gone = missing(&families);
            if gone.is_empty() {
                Ok(families.len())
            } else {
                Err(gone.join("\n"))
            }
        },
    );
    match result {
        Ok(n) => eprintln!(
            "{} queried metrics found among {n} families of two live nodes",
            queried.len()
        ),
        Err(e) => panic!(
            "metrics that panels or alerts query but the nodes do not expose (# TYPE lines):\n{e}"
        ),
    }
}

/// The names in a Compose list-or-map field (`depends_on`, `networks`): the list's strings or
/// the map's keys.
fn compose_names(v: &Value) -> Vec<String> {
    match v {
        Value::Object(o) => o.keys().cloned().collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}
