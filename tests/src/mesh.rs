//! Owns: starting a mesh of real node processes for a test — a certificate directory made by the
//! node binary's own `kaskade certs`, nodes on their own 127.0.0.x addresses with fixed relay
//! ports and static `--peer` lists — and the impairment proxy process (`kaskade-e2e-impair`)
//! placed between two relay endpoints.

use crate::netns::NetNs;
use crate::node::NodeProcess;
use crate::proc::Spawned;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Relay port every test node uses on its own loopback address.
pub const RELAY_PORT: u16 = 7100;

/// One node of a test mesh.
#[derive(Debug, Clone)]
pub struct MeshNodeSpec {
    pub id: String,
    pub site: String,
    /// Its own loopback address, e.g. 127.0.0.21.
    pub ip: String,
}

impl MeshNodeSpec {
    pub fn new(id: &str, site: &str, ip: &str) -> Self {
        Self {
            id: id.into(),
            site: site.into(),
            ip: ip.into(),
        }
    }

    pub fn relay_addr(&self) -> String {
        format!("{}:{RELAY_PORT}", self.ip)
    }

    /// `ID@SITE@ADDR` as `--peer` takes it, with `addr` overriding the relay address (to put a
    /// proxy in between).
    pub fn peer_arg(&self, addr: Option<&str>) -> String {
        format!(
            "{}@{}@{}",
            self.id,
            self.site,
            addr.map(str::to_owned).unwrap_or_else(|| self.relay_addr())
        )
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kaskade-{tag}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::create_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `bin certs --out dir ids…`.
pub fn make_certs(bin: &Path, dir: &Path, ids: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .args(ids)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kaskade certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Starts one mesh node: HTTP and relay on its own address, media on loopback, peers as given
/// (`peer_args` are `ID@SITE@ADDR` strings).
pub fn start_node(
    netns: Option<&NetNs>,
    bin: &Path,
    spec: &MeshNodeSpec,
    certs: &Path,
    peer_args: &[String],
) -> anyhow::Result<NodeProcess> {
    start_node_with(netns, bin, spec, certs, peer_args, &[])
}

/// Starts one node of a mesh that meets through etcd at `etcd_url` (no static peers), with
/// `extra` flags.
pub fn start_etcd_node(
    netns: Option<&NetNs>,
    bin: &Path,
    spec: &MeshNodeSpec,
    certs: &Path,
    etcd_url: &str,
    extra: &[&str],
) -> anyhow::Result<NodeProcess> {
    let mut args: Vec<String> = vec!["--etcd".into(), etcd_url.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    start_node_with(netns, bin, spec, certs, &[], &args)
}

/// [`start_node`] with extra flags.
pub fn start_node_with(
    netns: Option<&NetNs>,
    bin: &Path,
    spec: &MeshNodeSpec,
    certs: &Path,
    peer_args: &[String],
    extra_args: &[String],
) -> anyhow::Result<NodeProcess> {
    let relay = spec.relay_addr();
    let certs = certs.display().to_string();
    let mut extra: Vec<&str> = vec![
        "--node-id",
        &spec.id,
        "--site",
        &spec.site,
        "--relay",
        &relay,
        "--certs",
        &certs,
    ];
    for p in peer_args {
        extra.push("--peer");
        extra.push(p);
    }
    extra.extend(extra_args.iter().map(String::as_str));
    let http = format!("{}:0", spec.ip);
    NodeProcess::start_with_http(netns, bin, &http, &extra)
}

/// Starts every node of `specs`, each with all the others as peers; `via` overrides the address
/// node `from` uses for node `to` (a proxy).
pub fn start_mesh(
    bin: &Path,
    specs: &[MeshNodeSpec],
    certs: &Path,
    via: &[(&str, &str, String)],
) -> anyhow::Result<Vec<NodeProcess>> {
    specs
        .iter()
        .map(|me| {
            let peers: Vec<String> = specs
                .iter()
                .filter(|p| p.id != me.id)
                .map(|p| {
                    let over = via
                        .iter()
                        .find(|(from, to, _)| *from == me.id && *to == p.id)
                        .map(|(_, _, addr)| addr.as_str());
                    p.peer_arg(over)
                })
                .collect();
            start_node(None, bin, me, certs, &peers)
        })
        .collect()
}

/// The UDP impairment proxy (`tests/src/impair.rs`) as a child process.
pub struct ImpairProxy {
    pub proc: Spawned,
    pub listen: String,
}

impl ImpairProxy {
    /// `kaskade-e2e-impair --listen L --target T` plus impairment flags; waits for its ready line.
    pub fn start(bin: &Path, listen: &str, target: &str, flags: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", listen, "--target", target])
            .args(flags);
        let proc = Spawned::spawn("impair-proxy", cmd)?;
        let line = proc.wait_line("the proxy's ready line", Duration::from_secs(10), |l| {
            l.starts_with("impair-proxy ready:")
        })?;
        let listen = line
            .split_whitespace()
            .nth(3)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("unexpected ready line {line:?}"))?;
        Ok(Self { proc, listen })
    }
}

/// A `peer`-labelled relay metric of `node` (read from inside `netns` when given); 0 when absent
/// or unreadable.
pub fn relay_metric(netns: Option<&NetNs>, node: &NodeProcess, name: &str, peer: &str) -> f64 {
    let read = || node.metric(name, &[("peer", peer)]);
    match netns {
        Some(ns) => crate::netns::in_named_netns(&ns.name, read),
        None => read(),
    }
    .ok()
    .flatten()
    .unwrap_or(0.0)
}

/// Waits (20 s at most) until every node of `nodes` (ids `ids`, same order) has a live relay
/// link to every other.
pub fn wait_all_linked(netns: Option<&NetNs>, nodes: &[NodeProcess], ids: &[&str]) {
    crate::wait::poll_until("all relay links up", Duration::from_secs(20), || {
        for (node, me) in nodes.iter().zip(ids) {
            for peer in ids.iter().filter(|p| *p != me) {
                let up = relay_metric(netns, node, "kaskade_relay_link_up", peer);
                if up != 1.0 {
                    return Err(format!("{me} -> {peer} not up ({up})"));
                }
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
}
