//! Owns: the "relay node killed" failover scenario, shared by `tests/tests/e2e_failover.rs` (one
//! run, asserted) and the failover benchmark (`bench/src/bin/failover.rs`, many runs, recorded) —
//! a two-site, four-node mesh meeting through a real etcd, an aiortc WHIP publisher on site a,
//! aiortc WHEP subscribers on site b fed through the site's relay node, that relay node killed
//! with SIGKILL, and the time from the kill to each subscriber's first decoded frame again. Also
//! the small pieces the other etcd-mesh scenarios use: starting the two sites and watching a
//! subscriber's frame counter.

use crate::clients::{PyClient, final_result, num};
use crate::etcd::EtcdProcess;
use crate::mesh::{MeshNodeSpec, TempDir, make_certs, relay_metric, start_etcd_node};
use crate::node::NodeProcess;
use crate::proc::Spawned;
use crate::wait::poll_until;
use anyhow::{Context, anyhow, ensure};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long a client may take to print its result once asked to stop.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// Addresses of a two-site mesh: etcd, then n1, n2 (site a) and n3, n4 (site b).
#[derive(Debug, Clone)]
pub struct TwoSiteAddrs {
    pub etcd: String,
    pub nodes: [String; 4],
}

impl TwoSiteAddrs {
    /// etcd on `base`.0, the nodes on `base`.1–4, e.g. `"127.0.0.5"` gives 127.0.0.50–54.
    pub fn from_prefix(prefix: &str) -> Self {
        Self {
            etcd: format!("{prefix}0"),
            nodes: [1, 2, 3, 4].map(|i| format!("{prefix}{i}")),
        }
    }
}

/// The node ids of a two-site mesh, in the order of [`TwoSiteAddrs::nodes`].
pub const TWO_SITE_IDS: [&str; 4] = ["n1", "n2", "n3", "n4"];

/// A certificate directory for the four nodes, made by the node binary.
pub fn two_site_certs(bin: &Path, tag: &str) -> anyhow::Result<TempDir> {
    let certs = TempDir::new(tag);
    make_certs(bin, &certs.0, &TWO_SITE_IDS)?;
    Ok(certs)
}

/// Starts n1, n2 (site a) and n3, n4 (site b) registered in `etcd` (no static peers) and waits
/// until every node links every other, found through the registry.
pub fn start_two_sites(
    bin: &Path,
    etcd: &EtcdProcess,
    certs: &TempDir,
    ips: &[String; 4],
) -> anyhow::Result<Vec<NodeProcess>> {
    let sites = ["a", "a", "b", "b"];
    let mut nodes = Vec::new();
    for ((id, site), ip) in TWO_SITE_IDS.iter().zip(sites).zip(ips) {
        let spec = MeshNodeSpec::new(id, site, ip);
        nodes.push(
            start_etcd_node(None, bin, &spec, &certs.0, &etcd.client_url(), &[])
                .with_context(|| format!("starting {id}"))?,
        );
    }
    crate::mesh::wait_all_linked(None, &nodes, &TWO_SITE_IDS);
    Ok(nodes)
}

/// A WHEP subscriber at `url` for `seconds`, reporting its frame counts every 0.1 s.
pub fn whep_watch(name: &str, url: &str, seconds: f64) -> anyhow::Result<Spawned> {
    PyClient::spawn(
        name,
        "whep_subscribe.py",
        &[
            "--url",
            url,
            "--seconds",
            &seconds.to_string(),
            "--progress",
            "--progress-interval",
            "0.1",
        ],
        None,
    )
}

/// The latest `frames` progress line's video count of a subscriber.
pub fn video_frames(sub: &Spawned) -> f64 {
    sub.events("frames")
        .last()
        .map(|e| num(e, "video"))
        .unwrap_or(0.0)
}

/// Waits until `sub`'s video count grows past what it is now.
pub fn wait_frames_grow(sub: &Spawned, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let base = video_frames(sub);
    poll_until(what, timeout, || {
        let now = video_frames(sub);
        if now > base + 5.0 {
            Ok(())
        } else {
            Err(format!("video frames {now} (was {base})"))
        }
    })
    .map_err(|e| anyhow!("{e}\n{}", sub.diagnostics()))
}

/// Seconds on CLOCK_MONOTONIC, the clock Python's `time.monotonic()` reads on Linux: the
/// clients report when a stall ended on it.
pub fn monotonic_now_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// From `at` (monotonic seconds) to the end of the first stall that ended after it, in ms —
/// "disruption → first frame again" — from a subscriber result's `video_stalls`. `None` when no
/// stall ended after `at` (the disruption did not interrupt its video for 200 ms or more).
pub fn first_frame_after(result: &Value, at: f64) -> Option<f64> {
    result["video_stalls"]
        .as_array()?
        .iter()
        .filter_map(|s| s.get(1).and_then(Value::as_f64))
        .find(|ended| *ended > at)
        .map(|ended| (ended - at) * 1000.0)
}

/// What one run of [`relay_node_killed`] measured.
#[derive(Debug, Clone)]
pub struct RelayKillOutcome {
    /// Per subscriber behind the dead relay: kill → first decoded frame again (ms). A
    /// subscriber whose video never stalled 200 ms counts its longest stall instead.
    pub kill_to_frame_ms: Vec<f64>,
    /// Per subscriber: its longest stall between two decoded frames (ms).
    pub longest_stall_ms: Vec<f64>,
    /// n4 took the tracks from the origin n1 after the kill (it was fed by n3 before).
    pub rerouted_to_origin: bool,
}

/// The scenario: a publisher on n1 (site a); a subscriber on n3 makes n3 site b's relay for the
/// room; `subscribers` subscribers on n4 are fed through n3; n3 is killed with SIGKILL and the
/// run ends once every subscriber on n4 decodes again (with no action by them).
pub fn relay_node_killed(
    bin: &Path,
    addrs: &TwoSiteAddrs,
    subscribers: usize,
) -> anyhow::Result<RelayKillOutcome> {
    let etcd = EtcdProcess::start(&addrs.etcd);
    let certs = two_site_certs(bin, "failover-relay-certs")?;
    let mut nodes = start_two_sites(bin, &etcd, &certs, &addrs.nodes)?;

    let publisher = PyClient::whip_publish("pub-n1", &nodes[0].at("/whip/class"), 90.0)?;
    publisher
        .wait_event("publishing", Duration::from_secs(30))
        .context("publisher connects")?;
    // The first site-b subscriber makes n3 the site's relay; n4's subscribers are then fed
    // through n3.
    let on_n3 = whep_watch("sub-n3", &nodes[2].at("/whep/class"), 60.0)?;
    on_n3
        .wait_event("first_frame", Duration::from_secs(30))
        .context("n3 subscriber decodes")?;
    let mut behind = Vec::new();
    for i in 0..subscribers {
        behind.push(whep_watch(
            &format!("sub-n4-{i}"),
            &nodes[3].at("/whep/class"),
            12.0,
        )?);
    }
    for s in &behind {
        s.wait_event("first_frame", Duration::from_secs(30))
            .context("n4 subscriber decodes")?;
        wait_frames_grow(s, "n4 subscriber receiving", Duration::from_secs(10))?;
    }
    let received = "kaskade_relay_media_packets_received_total";
    ensure!(
        relay_metric(None, &nodes[3], received, "n3") > 0.0,
        "n4 must be fed through n3 before the kill"
    );
    let from_n1_before = relay_metric(None, &nodes[3], received, "n1");

    let killed_at = monotonic_now_s();
    nodes[2].proc.kill9();
    for s in &behind {
        wait_frames_grow(s, "n4 subscriber receiving again", Duration::from_secs(10))?;
    }
    let mut outcome = RelayKillOutcome {
        kill_to_frame_ms: Vec::new(),
        longest_stall_ms: Vec::new(),
        rerouted_to_origin: relay_metric(None, &nodes[3], received, "n1") > from_n1_before,
    };
    for (i, s) in behind.iter_mut().enumerate() {
        let r = final_result(s, CLIENT_TIMEOUT).with_context(|| format!("sub-n4-{i}"))?;
        let longest = num(&r, "max_video_gap_ms");
        outcome
            .kill_to_frame_ms
            .push(first_frame_after(&r, killed_at).unwrap_or(longest));
        outcome.longest_stall_ms.push(longest);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_stall_ending_after_the_disruption_is_the_one_timed() {
        let r = json!({"video_stalls": [[300, 10.0], [900, 20.5], [250, 30.0]]});
        assert_eq!(first_frame_after(&r, 20.0), Some(500.0));
        assert_eq!(first_frame_after(&r, 31.0), None);
        assert_eq!(first_frame_after(&json!({}), 1.0), None);
    }

    #[test]
    fn two_site_addresses_follow_the_prefix() {
        let a = TwoSiteAddrs::from_prefix("127.0.0.5");
        assert_eq!(a.etcd, "127.0.0.50");
        assert_eq!(a.nodes[3], "127.0.0.54");
    }
}
