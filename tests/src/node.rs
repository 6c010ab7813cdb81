//! Owns: [`NodeProcess`] — starting the real node binary for a test (on loopback, optionally
//! inside a [`NetNs`]), parsing its one-line "ready" banner, HTTP shorthands against it, and
//! stopping it (SIGTERM, then SIGKILL) on drop.

use crate::http::{self, Response};
use crate::netns::NetNs;
use crate::proc::Spawned;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a node may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What the ready banner says:
/// `Kaskade node <node-id> ready: open http://<http addr>/ (media udp <ip:port>)` (`https://`
/// when the node serves TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub node_id: String,
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    pub url: String,
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
}

/// Parses the ready banner; `None` for any other line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.trim().strip_prefix("Kaskade node ")?;
    let (node_id, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("ready: open ")?;
    let (url, rest) = rest.split_once(' ')?;
    let url = url.trim_end_matches('/').to_owned();
    let http_addr = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?
        .parse()
        .ok()?;
    let media = rest.strip_prefix("(media udp ")?.strip_suffix(')')?;
    Some(Ready {
        node_id: node_id.to_owned(),
        url,
        http_addr,
        media_addr: media.parse().ok()?,
    })
}

/// A running node; stopped on drop.
pub struct NodeProcess {
    pub proc: Spawned,
    pub ready: Ready,
    /// `http://host:port` (no trailing slash).
    pub url: String,
    pub media_addr: SocketAddr,
    /// Bearer token for `/metrics` (a node started with `--metrics-token`).
    pub scrape_token: Option<String>,
    /// Bearer access token for `get` (the API of a node with access control).
    pub api_token: Option<String>,
    /// How `get` reaches a node that serves HTTPS (set it for such a node).
    pub tls: Option<http::TlsClient>,
}

/// A harness-only marker in `extra` (never passed to the node): start it with access control
/// (accounts from its etcd) rather than `--insecure-dev`.
pub const WITH_ACCESS_CONTROL: &str = "+access-control";

impl NodeProcess {
    /// `bin node --http 127.0.0.1:0 --rtc 127.0.0.1:0 <extra…>` on the host.
    pub fn start(bin: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_in(None, bin, extra)
    }

    /// Same, inside `netns` when given (the addresses are then the namespace's loopback).
    pub fn start_in(netns: Option<&NetNs>, bin: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_http(netns, bin, "127.0.0.1:0", extra)
    }

    /// Same, with HTTP on `http` (e.g. a namespace's veth address, reachable from the host);
    /// media stays on loopback.
    pub fn start_with_http(
        netns: Option<&NetNs>,
        bin: &Path,
        http: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_addrs(netns, bin, http, "127.0.0.1:0", extra)
    }

    /// Same, with media (`--rtc`, also the ICE candidate) on `rtc`.
    pub fn start_with_addrs(
        netns: Option<&NetNs>,
        bin: &Path,
        http: &str,
        rtc: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(netns, bin, http, rtc, extra, &[])
    }

    /// [`NodeProcess::start`] with extra environment variables for the node (e.g. the
    /// OpenTelemetry exporter's `OTEL_BSP_SCHEDULE_DELAY`).
    pub fn start_with_env(
        bin: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(None, bin, "127.0.0.1:0", "127.0.0.1:0", extra, env)
    }

    fn launch(
        netns: Option<&NetNs>,
        bin: &Path,
        http: &str,
        rtc: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(bin.exists(), "node binary {} does not exist", bin.display());
        let mut cmd = Command::new(bin);
        cmd.args(["node", "--http", http, "--rtc", rtc])
            .args(extra.iter().filter(|a| **a != WITH_ACCESS_CONTROL));
        // Without a store for accounts a test node runs with the open development defaults
        // (loopback only); with `--data-dir` (or, for an etcd node, [`WITH_ACCESS_CONTROL`]) it
        // enforces access control.
        // Their joins and messages are not rate limited either: failover and bad-input tests
        // join and send faster than a person would.
        if !extra.contains(&"--data-dir") && !extra.contains(&WITH_ACCESS_CONTROL) {
            cmd.args([
                "--insecure-dev",
                "--max-joins-per-minute",
                "0",
                "--max-messages-per-second",
                "0",
                "--max-logins-per-minute",
                "0",
            ]);
        }
        if std::env::var_os("KASKADE_LOG").is_none() {
            cmd.env("KASKADE_LOG", "info");
        }
        // Plain logs in failure reports.
        cmd.env("NO_COLOR", "1");
        cmd.envs(env.iter().copied());
        let cmd = match netns {
            Some(ns) => ns.wrap(&cmd),
            None => cmd,
        };
        let proc = Spawned::spawn("node", cmd)?;
        let line = proc.wait_line("the ready line", READY_TIMEOUT, |l| {
            parse_ready(l).is_some()
        })?;
        let ready = parse_ready(&line).expect("matched above");
        Ok(Self {
            url: ready.url.clone(),
            media_addr: ready.media_addr,
            ready,
            proc,
            scrape_token: None,
            api_token: None,
            tls: None,
        })
    }

    /// `ws://host:port/ws` (`wss://` for a node that serves HTTPS).
    pub fn ws_url(&self) -> String {
        let scheme = if self.serves_tls() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.ready.http_addr)
    }

    /// Whether the ready line said `https://`.
    pub fn serves_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// `{url}{path}`; `path` starts with '/'.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Response> {
        let bearer = self.api_token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("Authorization", b))
            .into_iter()
            .collect();
        http::request_on(self.tls.as_ref(), "GET", &self.at(path), &headers, &[])
    }

    /// `GET path` expecting 200 and a JSON body.
    pub fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let r = self.get(path)?;
        anyhow::ensure!(
            r.status == 200,
            "GET {path}: status {}: {}",
            r.status,
            r.text()
        );
        r.json()
    }

    /// One metric (sum over samples carrying `labels`); `None` when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<Option<f64>> {
        crate::metrics::metric_with(&self.url, self.scrape_token.as_deref(), name, labels)
    }

    /// Tracks `GET /api/rooms/{room}` lists; a 404 (room gone) is an empty list.
    pub fn room_tracks(&self, room: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let r = self.get(&format!("/api/rooms/{room}"))?;
        match r.status {
            404 => Ok(Vec::new()),
            200 => Ok(r.json()?["tracks"].as_array().cloned().unwrap_or_default()),
            s => anyhow::bail!("GET /api/rooms/{room}: status {s}: {}", r.text()),
        }
    }

    /// Fails the test if the node died (with its stderr).
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.proc.try_exit() {
            panic!("the node exited ({status})\n{}", self.proc.diagnostics());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_banner() {
        let r = parse_ready(
            "Kaskade node n-1a2b ready: open http://127.0.0.1:41234/ (media udp 127.0.0.1:50000)",
        )
        .unwrap();
        assert_eq!(r.node_id, "n-1a2b");
        assert_eq!(r.url, "http://127.0.0.1:41234");
        assert_eq!(r.http_addr, "127.0.0.1:41234".parse().unwrap());
        assert_eq!(r.media_addr, "127.0.0.1:50000".parse().unwrap());
        assert_eq!(parse_ready("listening on 127.0.0.1:41234"), None);
        let tls = parse_ready(
            "Kaskade node n2 ready: open https://127.0.0.1:8443/ (media udp 127.0.0.1:7000)",
        )
        .unwrap();
        assert_eq!(tls.url, "https://127.0.0.1:8443");
        assert_eq!(tls.http_addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            parse_ready("Kaskade node x ready: open http://127.0.0.1:1/ (media udp nonsense)"),
            None
        );
    }
}
