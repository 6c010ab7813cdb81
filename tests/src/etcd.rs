//! Owns: [`EtcdProcess`], a real etcd member (`/usr/bin/etcd`, Debian `etcd-server`) for tests —
//! its own temporary data directory, client and peer ports picked free on the loopback address
//! the test gives, readiness awaited through `/health` with a deadline, stop / kill / pause /
//! restart on the same data and ports (for outage tests), and a kill on drop through [`Spawned`]
//! — and [`EtcdCluster`], several such members forming one cluster (one loopback address each),
//! which can tell which member leads.
//!
//! A process started here dies with the thread that started it (`PR_SET_PDEATHSIG`), so start
//! and restart it from the test's own thread, not from a short-lived helper thread.

use crate::mesh::TempDir;
use crate::proc::Spawned;
use crate::wait::poll_until;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

/// Where Debian installs the server.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// How long etcd may take to answer `/health` after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Start attempts when a picked port was taken by someone else in the meantime.
const START_ATTEMPTS: usize = 3;

/// A running (or deliberately stopped) etcd.
pub struct EtcdProcess {
    ip: String,
    /// The member name (`--name`); `default` for a one-member cluster.
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster`: every member's `name=peer URL`.
    initial_cluster: String,
    process: Option<Spawned>,
    /// The network namespace it runs in, if not the host's.
    netns: Option<String>,
    /// Declared after `process`, so the directory goes only once etcd is dead.
    data: TempDir,
}

impl EtcdProcess {
    /// Starts etcd on `ip` (a 127.0.0.x address) with free ports and a fresh data directory, and
    /// returns once it answers. Panics with etcd's output when it does not come up.
    pub fn start(ip: &str) -> EtcdProcess {
        Self::start_in(None, ip)
    }

    /// [`start`](Self::start) inside `netns` (for tests whose nodes and browsers run there).
    pub fn start_in(netns: Option<&crate::netns::NetNs>, ip: &str) -> EtcdProcess {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut etcd = EtcdProcess::unstarted(netns, ip, "default");
            etcd.initial_cluster = etcd.cluster_entry();
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(e) => last_error = e.to_string(),
            }
        }
        panic!("etcd on {ip} did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// A member with free ports and a fresh data directory, not started yet.
    fn unstarted(netns: Option<&crate::netns::NetNs>, ip: &str, name: &str) -> EtcdProcess {
        let (client_port, peer_port) = free_ports(ip);
        EtcdProcess {
            ip: ip.to_string(),
            name: name.to_string(),
            client_port,
            peer_port,
            initial_cluster: String::new(),
            process: None,
            netns: netns.map(|n| n.name.clone()),
            data: TempDir::new(&format!("etcd-{ip}")),
        }
    }

    /// This member's `name=peer URL` entry of `--initial-cluster`.
    fn cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url())
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }

    /// `http://IP:PORT`, the URL clients connect to.
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    pub fn ip(&self) -> &str {
        &self.ip
    }

    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.try_exit().is_none())
    }

    /// SIGTERM, then SIGKILL after a grace period; returns once the process is gone. Keeps the
    /// data directory and ports for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// SIGKILL without a grace period (a crash); returns once the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.grace = Duration::ZERO;
            process.kill9();
            process.stop();
        }
    }

    /// SIGSTOP: etcd keeps its sockets open but answers nothing (a hung server or a silent
    /// network), until [`resume`](Self::resume).
    pub fn pause(&self) {
        if let Some(process) = &self.process {
            process.signal(libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(process) = &self.process {
            process.signal(libc::SIGCONT);
        }
    }

    /// Starts etcd again on the same data directory and ports (stopping it first if it runs) and
    /// returns once it answers. Panics when it does not come up.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.launch() {
            panic!("etcd on {} did not restart: {e}", self.ip);
        }
    }

    /// Writes `value` at `key` through etcd's JSON gateway, bypassing any client library (to
    /// store data a backend would never write, e.g. malformed records).
    pub fn put_raw(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(key.as_bytes()),
            base64(value)
        );
        let url = format!("{}/v3/kv/put", self.client_url());
        let response = crate::http::post(&url, "application/json", body.as_bytes())?;
        anyhow::ensure!(
            response.status == 200,
            "put {key} answered {}: {}",
            response.status,
            response.text()
        );
        Ok(())
    }

    /// Whether this member is the cluster's leader right now (asked through its JSON gateway).
    pub fn is_leader(&self) -> anyhow::Result<bool> {
        let url = format!("{}/v3/maintenance/status", self.client_url());
        let status = crate::http::post(&url, "application/json", b"{}")?.json()?;
        let member = status["header"]["member_id"].as_str().unwrap_or_default();
        let leader = status["leader"].as_str().unwrap_or_default();
        anyhow::ensure!(!member.is_empty(), "no member id in the status: {status}");
        Ok(member == leader)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_healthy()
    }

    /// Starts the process without waiting for it to answer (members of a new cluster only
    /// become healthy once enough of them run).
    fn spawn(&mut self) -> anyhow::Result<()> {
        let client = self.client_url();
        let peer = self.peer_url();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(ETCD_BIN);
                c
            }
            None => Command::new(ETCD_BIN),
        };
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data.0.join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .args(["--initial-cluster-state", "new"])
            // Unique per cluster, so members of two test clusters can never join each other.
            .arg("--initial-cluster-token")
            .arg(format!("kaskade-test-{}", self.initial_cluster))
            // Short raft timings: a cluster elects its leader sooner, and the shortest lease
            // etcd grants drops from 2 s to 1 s, which keeps lease-expiry tests quick.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        let process = Spawned::spawn(&format!("etcd-{}", self.ip), cmd)?;
        self.process = Some(process);
        Ok(())
    }

    /// Waits until the member answers `/health` (which needs a leader); on failure stops it and
    /// returns its output.
    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = self.client_url();
        let health = format!("{client}/health");
        let ready = poll_until(
            &format!("etcd at {client} to be healthy"),
            READY_TIMEOUT,
            || {
                if let Some(process) = self.process.as_mut()
                    && let Some(status) = process.try_exit()
                {
                    // Not worth waiting for: it exited (e.g. a port was taken meanwhile).
                    return Ok(Err(format!("etcd exited with {status}")));
                }
                let answer = match &self.netns {
                    Some(ns) => crate::netns::in_named_netns(ns, || crate::http::get(&health)),
                    None => crate::http::get(&health),
                };
                match answer {
                    Ok(r) if r.status == 200 && r.text().contains("true") => Ok(Ok(())),
                    Ok(r) => Err(format!("{} {}", r.status, r.text())),
                    Err(e) => Err(e.to_string()),
                }
            },
        );
        let failure = match ready {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(exited)) => exited,
            Err(e) => e.to_string(),
        };
        let diagnostics = self
            .process
            .as_ref()
            .map(Spawned::diagnostics)
            .unwrap_or_default();
        self.stop();
        anyhow::bail!("{failure}\n{diagnostics}")
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        // A paused etcd would sit out SIGTERM's grace period.
        self.resume();
        // Spawned's own drop kills it too; stopping here makes the order explicit.
        self.stop();
    }
}

/// Several etcd members forming one cluster, each on its own loopback address.
pub struct EtcdCluster {
    members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Starts one member per address in `ips` (fresh data, free ports) and returns once every
    /// member answers, i.e. the cluster has elected a leader. Panics with the members' output
    /// when it does not come up. Call it on the test's own thread (see [`EtcdProcess`]).
    pub fn start(ips: &[&str]) -> EtcdCluster {
        assert!(!ips.is_empty(), "a cluster needs at least one member");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut members: Vec<EtcdProcess> = ips
                .iter()
                .enumerate()
                .map(|(i, ip)| EtcdProcess::unstarted(None, ip, &format!("m{i}")))
                .collect();
            let initial = members
                .iter()
                .map(EtcdProcess::cluster_entry)
                .collect::<Vec<_>>()
                .join(",");
            for member in &mut members {
                member.initial_cluster.clone_from(&initial);
            }
            let started = members.iter_mut().try_for_each(|m| m.spawn());
            let healthy = started.and_then(|()| {
                members.iter_mut().try_for_each(|m| {
                    m.wait_healthy()
                        .map_err(|e| anyhow::anyhow!("{}: {e}", m.ip))
                })
            });
            match healthy {
                Ok(()) => return EtcdCluster { members },
                // Dropping `members` stops whatever did start.
                Err(e) => last_error = e.to_string(),
            }
        }
        panic!(
            "etcd cluster on {ips:?} did not start after {START_ATTEMPTS} attempts: {last_error}"
        );
    }

    /// Every member's client URL, in the order of the addresses given to [`start`](Self::start).
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::client_url).collect()
    }

    /// The member serving `client_url`. Panics when no member does.
    pub fn member(&mut self, client_url: &str) -> &mut EtcdProcess {
        self.members
            .iter_mut()
            .find(|m| m.client_url() == client_url)
            .unwrap_or_else(|| panic!("no member of the cluster serves {client_url}"))
    }

    /// The client URL of the running member that leads, waiting (with a deadline) while an
    /// election is under way.
    pub fn leader_url(&self) -> String {
        poll_until("the etcd cluster to have a leader", READY_TIMEOUT, || {
            let mut seen = Vec::new();
            for member in self.members.iter().filter(|m| m.process.is_some()) {
                match member.is_leader() {
                    Ok(true) => return Ok(member.client_url()),
                    Ok(false) => seen.push(format!("{}: follower", member.ip)),
                    Err(e) => seen.push(format!("{}: {e}", member.ip)),
                }
            }
            Err(seen.join("; "))
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Two ports nobody listens on at `ip` right now.
fn free_ports(ip: &str) -> (u16, u16) {
    let bind =
        || TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("cannot bind a port on {ip}: {e}"));
    // Both listeners live until both ports are known, so the two differ.
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| {
        l.local_addr()
            .expect("bound listener has an address")
            .port()
    };
    (port(&a), port(&b))
}

/// Standard base64 with padding (what etcd's JSON gateway expects for bytes).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"/kaskade/nodes/n1"), "L2thc2thZGUvbm9kZXMvbjE=");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn starts_answers_stops_and_restarts_on_the_same_port() {
        let mut etcd = EtcdProcess::start("127.0.0.79");
        let url = etcd.client_url();
        assert!(
            crate::http::get(&format!("{url}/health"))
                .unwrap()
                .text()
                .contains("true")
        );
        etcd.put_raw("/probe", b"x").unwrap();
        etcd.stop();
        assert!(!etcd.is_running());
        assert!(crate::http::get(&format!("{url}/health")).is_err());
        etcd.restart();
        assert_eq!(etcd.client_url(), url);
        assert!(
            crate::http::get(&format!("{url}/health"))
                .unwrap()
                .text()
                .contains("true")
        );
    }
}
