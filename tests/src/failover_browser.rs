//! Owns: the headless-Chromium failover scenarios of the web client, shared by
//! `tests/tests/e2e_browser_failover.rs` (one run each, asserted) and the failover benchmark
//! (`bench/src/bin/failover.rs`, many runs, recorded). `tests/browser/failover.mjs` keeps two
//! pages in one room and samples their decoded frames while a scenario disrupts the mesh:
//! the node of page B killed with SIGKILL ([`page_node_killed`]), the whole site of page B
//! killed ([`page_site_killed`]), or the node of both pages drained with `kaskade drain`
//! ([`pages_drained`]). Each returns failover.mjs's `result` line (see the script's header for
//! its fields) for the caller to assert on or record.
//!
//! Everything (etcd on 127.0.0.13, nodes on 127.0.0.11/12/14, Chromium) runs in a network
//! namespace made for the run, for the reasons given in tests/tests/e2e_browser_cascade.rs.

use crate::browser::{ensure_playwright, preflight, skip_requested};
use crate::etcd::EtcdProcess;
use crate::mesh::{MeshNodeSpec, TempDir, make_certs, start_etcd_node, wait_all_linked};
use crate::netns::NetNs;
use crate::node::NodeProcess;
use crate::proc::Spawned;
use crate::wait::poll_until;
use anyhow::{Context, anyhow, bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// etcd's address inside the scenario's namespace.
const ETCD_IP: &str = "127.0.0.13";

/// What the browser scenarios need from the machine: Chromium, Node.js, Playwright's driver.
pub struct BrowserKit {
    pub chromium: PathBuf,
    pub node_js: PathBuf,
    pub browser_dir: PathBuf,
    /// Where failover.mjs puts screenshots (one subdirectory per run tag).
    pub artifacts: PathBuf,
}

impl BrowserKit {
    /// Checks the machine (panicking with what is missing, see [`preflight`]) and installs
    /// Playwright's driver on demand; `None` when KASKADE_SKIP_BROWSER=1.
    pub fn prepare() -> Option<Self> {
        if skip_requested() {
            return None;
        }
        let (chromium, node_js) = preflight();
        let browser_dir = crate::tests_dir().join("browser");
        ensure_playwright(&browser_dir);
        Some(Self {
            chromium,
            node_js,
            browser_dir,
            artifacts: crate::artifacts_dir(),
        })
    }
}

/// One scenario's mesh: a namespace, etcd in it and the nodes (same order as the specs).
struct NsMesh {
    // Field order is drop order: nodes, then etcd, then the namespace they live in.
    nodes: Vec<NodeProcess>,
    etcd: EtcdProcess,
    _certs: TempDir,
    ns: NetNs,
}

/// Starts etcd and nodes `(id, site, ip)` in a new namespace and waits until each node links
/// every other.
fn start_mesh(bin: &Path, specs: &[(&str, &str, &str)]) -> anyhow::Result<NsMesh> {
    let ns = NetNs::create().context("network namespace")?;
    let etcd = EtcdProcess::start_in(Some(&ns), ETCD_IP);
    let certs = TempDir::new("browser-failover-certs");
    let ids: Vec<&str> = specs.iter().map(|s| s.0).collect();
    make_certs(bin, &certs.0, &ids)?;
    let mut nodes = Vec::new();
    for (id, site, ip) in specs {
        let spec = MeshNodeSpec::new(id, site, ip);
        let extra = ["--drain-deadline-secs", "20"];
        nodes.push(
            start_etcd_node(Some(&ns), bin, &spec, &certs.0, &etcd.client_url(), &extra)
                .with_context(|| format!("starting {id} in the namespace"))?,
        );
    }
    wait_all_linked(Some(&ns), &nodes, &ids);
    Ok(NsMesh {
        nodes,
        etcd,
        _certs: certs,
        ns,
    })
}

/// Starts failover.mjs with page A on `url`, page B on `url2`, and waits until both decode
/// each other.
fn start_pages(
    kit: &BrowserKit,
    ns: &NetNs,
    (url, url2): (&str, &str),
    room: &str,
    tag: &str,
) -> anyhow::Result<Spawned> {
    let mut cmd = Command::new(&kit.node_js);
    cmd.arg(kit.browser_dir.join("failover.mjs"))
        .args(["--url", url, "--url2", url2, "--room", room])
        .args(["--kill-wait", "60", "--timeout", "200", "--poll-ms", "20"])
        .arg("--artifacts")
        .arg(kit.artifacts.join(tag))
        .arg("--chromium")
        .arg(&kit.chromium)
        .current_dir(&kit.browser_dir);
    let mut script = Spawned::spawn("failover.mjs", ns.wrap(&cmd))?;
    script.grace = Duration::from_secs(10);
    script
        .wait_event("ready", Duration::from_secs(90))
        .map_err(|e| anyhow!("pages not ready: {e}\n{}", script.diagnostics()))?;
    Ok(script)
}

/// Waits until both pages decode again (or `limit`) — and, with `left`, until neither page is
/// on that node (a WebSocket URL part) nor still moving — then ends the script and returns its
/// result, with `repair_samples` added per page (samples taken while the page was rejoining to
/// repair its subscribe connection).
fn watch_recovery(
    script: &mut Spawned,
    limit: Duration,
    left: Option<&str>,
) -> anyhow::Result<Value> {
    let resumed = poll_until("both pages decoding again", limit, || {
        let last = script.events("frames").pop().unwrap_or_default();
        if let Some(gone) = left {
            for page in ["a", "b"] {
                let node = last[format!("{page}_node")].as_str().unwrap_or_default();
                if node.contains(gone) || !last[format!("{page}_moving")].is_null() {
                    return Err(format!("page {page} not settled off {gone}: {last}"));
                }
            }
        }
        let marks = script.events("mark");
        let Some(mark) = marks.first() else {
            return Err("no mark yet".into());
        };
        let mark_t = mark["t"].as_f64().unwrap_or(0.0);
        // Frames counted well after the mark, on both pages, past their count at the mark.
        let at_mark = script
            .events("frames")
            .into_iter()
            .rfind(|f| f["t"].as_f64().unwrap_or(0.0) <= mark_t)
            .unwrap_or_default();
        let grew =
            |k: &str| last[k].as_f64().unwrap_or(0.0) > at_mark[k].as_f64().unwrap_or(0.0) + 10.0;
        if grew("a") && grew("b") {
            Ok(())
        } else {
            Err(format!("latest sample {last}"))
        }
    });
    script.signal(libc::SIGUSR2);
    let _ = script.wait_exit(Duration::from_secs(30));
    let Some(mut result) = script.events("result").pop() else {
        bail!("failover.mjs printed no result\n{}", script.diagnostics());
    };
    // A page that had to rejoin to repair its subscribe connection came through by its last
    // resort (e.g. the node refused its answer): count the samples that saw it.
    for page in ["a", "b"] {
        let repairing = script
            .events("frames")
            .iter()
            .filter(|f| f[format!("{page}_moving")] == "repair")
            .count();
        result[page]["repair_samples"] = repairing.into();
    }
    if let Err(e) = resumed {
        bail!("{e}\nresult: {result}\n{}", script.diagnostics());
    }
    Ok(result)
}

/// Page A on n1, page B on n2 (one site); n2 is killed with SIGKILL. Page B must reconnect to n1
/// by itself and resume.
pub fn page_node_killed(kit: &BrowserKit, bin: &Path, tag: &str) -> anyhow::Result<Value> {
    let mut mesh = start_mesh(bin, &[("n1", "a", "127.0.0.11"), ("n2", "a", "127.0.0.12")])?;
    let urls = (mesh.nodes[0].url.clone(), mesh.nodes[1].url.clone());
    let mut script = start_pages(kit, &mesh.ns, (&urls.0, &urls.1), "kill-room", tag)?;
    script.signal(libc::SIGUSR1);
    mesh.nodes[1].proc.kill9();
    watch_recovery(&mut script, Duration::from_secs(30), None)
}

/// Page A on n1 (site a), page B on n2 (site b, whose other node is n3); both nodes of site b
/// are killed with SIGKILL. Page B must reconnect to site a by itself and resume.
pub fn page_site_killed(kit: &BrowserKit, bin: &Path, tag: &str) -> anyhow::Result<Value> {
    let mut mesh = start_mesh(
        bin,
        &[
            ("n1", "a", "127.0.0.11"),
            ("n2", "b", "127.0.0.12"),
            ("n3", "b", "127.0.0.14"),
        ],
    )?;
    let urls = (mesh.nodes[0].url.clone(), mesh.nodes[1].url.clone());
    let mut script = start_pages(kit, &mesh.ns, (&urls.0, &urls.1), "site-room", tag)?;
    script.signal(libc::SIGUSR1);
    mesh.nodes[1].proc.kill9();
    mesh.nodes[2].proc.kill9();
    watch_recovery(&mut script, Duration::from_secs(30), None)
}

/// Both pages on n3 of three nodes in one site; n3 is drained with `kaskade drain --node n3`.
/// Returns the script's result once both pages settled on other nodes, and the drained node's
/// exit status.
pub fn pages_drained(
    kit: &BrowserKit,
    bin: &Path,
    tag: &str,
) -> anyhow::Result<(Value, ExitStatus)> {
    let mut mesh = start_mesh(
        bin,
        &[
            ("n1", "a", "127.0.0.11"),
            ("n2", "a", "127.0.0.12"),
            ("n3", "a", "127.0.0.14"),
        ],
    )?;
    let url = mesh.nodes[2].url.clone();
    let mut script = start_pages(kit, &mesh.ns, (&url, &url), "drain-room", tag)?;
    script.signal(libc::SIGUSR1);
    let drain = mesh.ns.wrap(
        Command::new(bin)
            .args(["drain", "--node", "n3", "--etcd"])
            .arg(mesh.etcd.client_url()),
    );
    let mut drain = Spawned::spawn("kaskade drain", drain)?;
    let drained = drain.wait_exit(Duration::from_secs(20))?;
    ensure!(
        drained.success(),
        "kaskade drain failed: {}",
        drain.diagnostics()
    );
    let result = watch_recovery(&mut script, Duration::from_secs(30), Some("127.0.0.14"))?;
    let exit = mesh.nodes[2]
        .proc
        .wait_exit(Duration::from_secs(30))
        .context("the drained node exits")?;
    Ok((result, exit))
}
