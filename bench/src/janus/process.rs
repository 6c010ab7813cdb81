//! `janus::process`: [`JanusProcess`], one Janus server for a benchmark — its config written into
//! a fresh temp dir (see `janus::config`), started as `janus -C … -F … -o` inside a given network
//! namespace, ready once `GET /janus/info` answers, with its pid and CPU time for the benchmark,
//! and killed (with its process group) when dropped, also on error and panic.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kaskade_tests::{NetNs, Spawned};

use super::config::{HTTP_MODULE, JanusConfig, Placement, VIDEOROOM_MODULE};
use super::error::JanusProcessError;
use super::session::JanusClient;
use crate::node_process::ScratchDir;

/// How long Janus may take until its HTTP API answers.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between readiness probes while the server is still starting.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long Janus gets to shut down after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running Janus. Dropping it stops Janus (SIGTERM to its process group, SIGKILL after a
/// grace period) and then removes its temp dir.
///
/// Janus also dies with the thread that started it (PR_SET_PDEATHSIG, see
/// [`kaskade_tests::Spawned`]): start it from a thread that outlives it — the main thread, or
/// the thread that runs the benchmark's runtime — never from a short-lived helper thread.
pub struct JanusProcess {
    // Field order matters: the process is stopped before its config dir is removed.
    child: Spawned,
    dir: ScratchDir,
    http: SocketAddr,
    api_url: String,
}

impl JanusProcess {
    /// Writes the config for `ns` (ICE and HTTP on the namespace's veth address), starts Janus
    /// inside `ns` and waits until `GET /janus/info` answers with the VideoRoom plugin and the
    /// HTTP transport loaded.
    pub async fn start(ns: &NetNs, config: &JanusConfig) -> Result<Self, JanusProcessError> {
        let binary = config.find_binary()?;
        let modules = config.find_modules_dir()?;
        let ip: IpAddr = ns.ns_ip.parse().map_err(|_| {
            JanusProcessError::BadConfig(format!("namespace address {:?}", ns.ns_ip))
        })?;
        let dir = ScratchDir::new("janus").map_err(|e| JanusProcessError::Io {
            path: std::env::temp_dir(),
            source: std::io::Error::other(e.to_string()),
        })?;
        write_run_dir(dir.path(), &modules, config, ns)?;
        let mut cmd = Command::new(&binary);
        cmd.arg("-C")
            .arg(dir.path().join(super::config::CORE_FILE))
            .arg("-F")
            .arg(dir.path())
            .arg("-o")
            // A crash's core file lands in the run's temp dir, not wherever the caller stands.
            .current_dir(dir.path());
        let mut child = Spawned::spawn("janus", ns.wrap(&cmd))
            .map_err(|e| JanusProcessError::Spawn(format!("{e:#}")))?;
        child.grace = STOP_GRACE;
        let http = SocketAddr::new(ip, config.http_port);
        let api_url = format!("http://{http}/janus");
        let mut janus = Self {
            child,
            dir,
            http,
            api_url,
        };
        janus.wait_ready().await?;
        Ok(janus)
    }

    async fn wait_ready(&mut self) -> Result<(), JanusProcessError> {
        let client = self.client();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_exit() {
                return Err(JanusProcessError::Exited {
                    status: status.to_string(),
                    diagnostics: self.child.diagnostics(),
                });
            }
            let last_error = match client.info_within(PROBE_TIMEOUT).await {
                Ok(info)
                    if info.plugins.contains_key(super::videoroom::PLUGIN)
                        && info.transports.contains_key("janus.transport.http") =>
                {
                    return Ok(());
                }
                Ok(info) => format!(
                    "loaded plugins {:?}, transports {:?}",
                    info.plugins.keys().collect::<Vec<_>>(),
                    info.transports.keys().collect::<Vec<_>>()
                ),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(JanusProcessError::NotReady {
                    timeout: READY_TIMEOUT,
                    last_error,
                    diagnostics: self.child.diagnostics(),
                });
            }
            // Poll the server that is still starting (it signals readiness only by answering).
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Pid of the janus process itself (`ip netns exec` execs it, so no wrapper sits between):
    /// read its CPU time from `/proc/<pid>/stat`, or use [`JanusProcess::cpu_time`].
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The HTTP API's address (the namespace's veth address).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The API's base URL, `http://IP:PORT/janus`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// A client for this server's API.
    pub fn client(&self) -> JanusClient {
        JanusClient::new(&self.api_url).expect("the API URL is built from an IP and a port")
    }

    /// How Janus ended, if it has (reaps it: a crashed Janus is not left as a zombie whose
    /// `/proc` entry still looks alive).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_exit()
    }

    /// User + system CPU time Janus (all its threads) has used so far.
    pub fn cpu_time(&self) -> std::io::Result<Duration> {
        process_cpu_time(self.pid())
    }

    /// The temp dir holding this run's config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Janus's last log lines, for failure messages.
    pub fn diagnostics(&self) -> String {
        self.child.diagnostics()
    }
}

/// Fills `dir`: the config files and `plugins/`, `transports/` with a link to only the
/// VideoRoom plugin and the HTTP transport (`events/`, `loggers/` stay empty).
fn write_run_dir(
    dir: &Path,
    modules: &Path,
    config: &JanusConfig,
    ns: &NetNs,
) -> Result<(), JanusProcessError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JanusProcessError::Io { path, source }
    };
    for sub in ["plugins", "transports", "events", "loggers"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
    }
    for module in [VIDEOROOM_MODULE, HTTP_MODULE] {
        let link = dir.join(module);
        std::os::unix::fs::symlink(modules.join(module), &link).map_err(io(&link))?;
    }
    let at = Placement {
        interface: &ns.ns_if,
        ip: &ns.ns_ip,
    };
    for (name, text) in config.render(dir, at)? {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

/// User + system CPU time of process `pid` (all threads), from `/proc/<pid>/stat`.
pub fn process_cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks_to_duration(ticks, clock_ticks_per_second()))
        .ok_or_else(|| std::io::Error::other(format!("unparsable /proc/{pid}/stat: {stat}")))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The command
/// name (field 2) is parenthesised and may contain spaces, so fields are counted after its `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat = "4242 (janus (x) y) S 1 4242 4242 0 -1 4194560 2264 0 0 0 \
                    150 37 0 0 20 0 12 0 6203 1234 567 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(187));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(ticks_to_duration(187, 100), Duration::from_millis(1870));
    }

    #[test]
    fn measures_this_process() {
        let t = process_cpu_time(std::process::id()).unwrap();
        assert!(t < Duration::from_secs(24 * 3600), "{t:?}");
    }
}
