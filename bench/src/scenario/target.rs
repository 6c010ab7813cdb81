//! `scenario::target`: the server under test in one run — [`SfuUnderTest`], Kaskade (one node
//! per site, started from this very binary's `node` subcommand) or Janus (VideoRoom), both on
//! the same address so that neither gets a cheaper network path: the benchmark's network
//! namespace's veth address, or 127.0.0.1 when no namespace can be made (Kaskade only).
//!
//! It hands out one [`SfuSignalling`] per site, and reads what the figures need: CPU time and
//! resident memory of the server processes from `/proc`, and Kaskade's `/metrics`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kaskade_tests::NetNs;

use crate::janus::{JanusConfig, JanusProcess, JanusVideoRoom, RoomOptions};
use crate::loadgen::proc_stats::{self, ProcSample};
use crate::loadgen::prom_text::PromText;
use crate::loadgen::{KaskadeWhipWhep, SfuSignalling};
use crate::node_process::{NodeProcess, ScratchDir, make_certs};

/// First relay port of a cascaded Kaskade run (one per node, counting up).
const RELAY_PORT: u16 = 7411;
/// Janus sessions the load generator spreads its handles over.
const JANUS_SESSIONS: usize = 4;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SfuKind {
    Kaskade,
    Janus,
}

impl SfuKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kaskade => "kaskade",
            Self::Janus => "janus",
        }
    }

    /// `kaskade` or `janus`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kaskade" => Some(Self::Kaskade),
            "janus" => Some(Self::Janus),
            _ => None,
        }
    }
}

/// Where the servers and the load generator run.
pub struct Placement<'a> {
    /// The address servers and clients bind.
    pub ip: IpAddr,
    /// The namespace it lives in (needed by Janus).
    pub ns: Option<&'a NetNs>,
}

/// A server under test, stopped when dropped.
pub struct SfuUnderTest {
    pub kind: SfuKind,
    /// One signalling driver per site.
    pub sites: Vec<Arc<dyn SfuSignalling>>,
    nodes: Vec<NodeProcess>,
    janus: Option<JanusProcess>,
    kaskade_drivers: Vec<KaskadeWhipWhep>,
    _scratch: ScratchDir,
}

impl SfuUnderTest {
    /// Starts Kaskade: one node per site (`sites` > 1: linked by static `--peer`s over the QUIC
    /// relay with a fresh dev CA), the node binary being `exe` (this binary, see `main.rs`).
    pub async fn start_kaskade(
        exe: &Path,
        _at: &Placement<'_>,
        sites: usize,
    ) -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("bench-kaskade")?;
        // Kaskade's nodes listen on loopback (inside the namespace, if any) with the open
        // development defaults: `--insecure-dev` is refused on any other address. The load
        // generator's sockets on the namespace address reach them through the same kernel path.
        let node_ip = IpAddr::from([127, 0, 0, 1]);
        let ids: Vec<String> = (1..=sites).map(|i| format!("n{i}")).collect();
        let certs = scratch.path().join("certs");
        if sites > 1 {
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            make_certs(exe, &certs, &id_refs)?;
        }
        let site_name = |i: usize| char::from(b'a' + i as u8).to_string();
        let mut nodes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut args: Vec<String> = [
                "--node-id",
                id,
                "--site",
                &site_name(i),
                "--http",
                &format!("{}:0", node_ip),
                "--rtc",
                &format!("{}:0", node_ip),
                "--insecure-dev",
                "--max-joins-per-minute",
                "0",
                "--max-messages-per-second",
                "0",
            ]
            .map(str::to_owned)
            .to_vec();
            if sites > 1 {
                args.extend([
                    "--relay".to_owned(),
                    format!("{}:{}", node_ip, RELAY_PORT + i as u16),
                    "--certs".to_owned(),
                    certs.display().to_string(),
                ]);
                for (j, peer) in ids.iter().enumerate().filter(|(j, _)| *j != i) {
                    args.push("--peer".into());
                    args.push(format!(
                        "{peer}@{}@{}:{}",
                        site_name(j),
                        node_ip,
                        RELAY_PORT + j as u16
                    ));
                }
            }
            let log = scratch.path().join(format!("{id}.log"));
            nodes.push(NodeProcess::start(exe, id, &args, log)?);
        }
        let kaskade_drivers: Vec<KaskadeWhipWhep> = nodes
            .iter()
            .map(|n| KaskadeWhipWhep::new(&format!("http://{}", n.http)))
            .collect::<Result<_, _>>()?;
        if sites > 1 {
            wait_linked(&kaskade_drivers, &ids).await?;
        }
        let sites = kaskade_drivers
            .iter()
            .map(|d| Arc::new(d.clone()) as Arc<dyn SfuSignalling>)
            .collect();
        Ok(Self {
            kind: SfuKind::Kaskade,
            sites,
            nodes,
            janus: None,
            kaskade_drivers,
            _scratch: scratch,
        })
    }

    /// Starts Janus in `at.ns` with `event_loops` shared event-loop threads.
    pub async fn start_janus(at: &Placement<'_>, event_loops: u32) -> anyhow::Result<Self> {
        let ns = at
            .ns
            .context("Janus needs a network namespace (run the benchmark as root with iproute2)")?;
        let scratch = ScratchDir::new("bench-janus")?;
        let config = JanusConfig {
            event_loops,
            // Info-level logging writes a handful of lines per PeerConnection: keep it quiet.
            debug_level: 3,
            ..Default::default()
        };
        let janus = JanusProcess::start(ns, &config).await?;
        let driver = JanusVideoRoom::connect(
            &janus.client(),
            JANUS_SESSIONS,
            RoomOptions {
                // A bitrate cap would make Janus ask the publisher to slow down via REMB.
                bitrate: 0,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self {
            kind: SfuKind::Janus,
            sites: vec![Arc::new(driver)],
            nodes: Vec::new(),
            janus: Some(janus),
            kaskade_drivers: Vec::new(),
            _scratch: scratch,
        })
    }

    /// The server processes' ids.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.nodes.iter().map(NodeProcess::pid).collect();
        pids.extend(self.janus.as_ref().map(JanusProcess::pid));
        pids
    }

    /// CPU time and memory summed over the server processes (an error if one has exited).
    pub fn sample(&mut self) -> anyhow::Result<ProcSample> {
        self.check_alive()?;
        let mut total = ProcSample {
            cpu: Duration::ZERO,
            rss_bytes: 0,
            peak_rss_bytes: 0,
        };
        for pid in self.pids() {
            let s = proc_stats::sample(pid).with_context(|| format!("reading /proc/{pid}"))?;
            total.cpu += s.cpu;
            total.rss_bytes += s.rss_bytes;
            total.peak_rss_bytes += s.peak_rss_bytes;
        }
        Ok(total)
    }

    /// The UDP ports the server receives media on (for socket drop counters); Janus's are a
    /// range.
    pub fn media_ports(&self) -> Vec<u16> {
        match &self.janus {
            Some(_) => JanusConfig::default().rtp_ports.collect(),
            None => self.nodes.iter().map(|n| n.media.port()).collect(),
        }
    }

    /// Each Kaskade node's `/metrics` (none for Janus).
    pub async fn metrics(&self) -> anyhow::Result<Vec<PromText>> {
        let mut out = Vec::new();
        for d in &self.kaskade_drivers {
            let text = d.http().get_text(&d.url("/metrics")).await?;
            out.push(PromText::parse(&text));
        }
        Ok(out)
    }

    /// Fails if a server process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            n.check_alive()?;
        }
        if let Some(j) = &mut self.janus
            && let Some(status) = j.try_exit()
        {
            anyhow::bail!("janus exited ({status})\n{}", j.diagnostics());
        }
        Ok(())
    }

    /// The servers' last log lines, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out += &format!("--- last lines of {}'s log ---\n{}\n", n.id, n.log_tail(15));
        }
        if let Some(j) = &self.janus {
            out += &format!("--- last lines of janus's log ---\n{}\n", j.diagnostics());
        }
        out
    }

    /// Copies the servers' logs into `dir`.
    pub fn keep_logs(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for n in &self.nodes {
            std::fs::copy(&n.log, dir.join(format!("{}.log", n.id)))?;
        }
        Ok(())
    }
}

/// How long the relay links of a cascaded run may take to come up.
const LINK_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until every node reports its relay link to every other node up
/// (`kaskade_relay_link_up{peer}` = 1): before that, a subscription on a site without the
/// publisher finds no room.
async fn wait_linked(nodes: &[KaskadeWhipWhep], ids: &[String]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + LINK_TIMEOUT;
    loop {
        let mut down = None;
        'nodes: for (node, me) in nodes.iter().zip(ids) {
            let metrics = PromText::parse(&node.http().get_text(&node.url("/metrics")).await?);
            for peer in ids.iter().filter(|p| *p != me) {
                if metrics.sum("kaskade_relay_link_up", &[("peer", peer)]) != Some(1.0) {
                    down = Some(format!("{me} → {peer}"));
                    break 'nodes;
                }
            }
        }
        let Some(down) = down else {
            return Ok(());
        };
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "relay link {down} not up within {LINK_TIMEOUT:?}"
        );
        // The link state is only exposed through /metrics.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This binary's path, used as the node binary (it runs `kaskade node` when called with
/// `node`).
pub fn own_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding this binary's path")
}
