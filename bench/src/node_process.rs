//! `node_process`: real `kaskade` node processes for benchmarks — a temporary directory for
//! certificates and logs ([`ScratchDir`]), `kaskade certs`, and [`NodeProcess`], a started node
//! whose ready line has been read and which is killed when dropped (also on error and panic).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh directory under the system temp dir, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("kaskade-{tag}-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `bin certs --out dir ids…` (a dev cluster CA and one certificate per node id).
pub fn make_certs(bin: &Path, dir: &Path, ids: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .args(ids)
        .output()
        .with_context(|| format!("running {} certs", bin.display()))?;
    if !out.status.success() {
        bail!(
            "kaskade certs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A running node; killed (SIGKILL) and reaped on drop.
pub struct NodeProcess {
    child: Child,
    /// The node id, for messages.
    pub id: String,
    /// HTTP address from the ready line.
    pub http: SocketAddr,
    /// Media UDP address from the ready line.
    pub media: SocketAddr,
    /// Where the node's stderr goes.
    pub log: PathBuf,
}

impl NodeProcess {
    /// Starts `bin node <args…>` with stderr in `log` and waits for
    /// `Kaskade node <id> ready: open http://ADDR/ (media udp ADDR)` on stdout.
    pub fn start(bin: &Path, id: &str, args: &[String], log: PathBuf) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bin.exists(),
            "node binary {} does not exist (build it with `cargo build --release -p kaskade-node`)",
            bin.display()
        );
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("creating log file {}", log.display()))?;
        let mut child = Command::new(bin)
            .arg("node")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // From here on the guard owns the child, so every early return kills it.
        let mut node = Self {
            child,
            id: id.to_owned(),
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            media: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout after the ready line so the node never blocks on it.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some((http, media)) = parse_ready(&line) {
                        node.http = http;
                        node.media = media;
                        return Ok(node);
                    }
                }
                Err(_) => {
                    let status = node.child.try_wait().ok().flatten();
                    bail!(
                        "node {id} printed no ready line within {READY_TIMEOUT:?} (exit: {status:?})\n{}",
                        node.log_tail(20)
                    );
                }
            }
        }
    }

    /// The node's process id (the binary is started directly, no wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the node has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("node {} exited ({status})\n{}", self.id, self.log_tail(20));
        }
        Ok(())
    }

    /// The last `n` lines of the node's stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(http, media)` from a ready line; `None` for any other line.
pub fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("Kaskade node ")?;
    let (_id, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("ready: open http://")?;
    let (http, rest) = rest.split_once(' ')?;
    let http = http.trim_end_matches('/').parse().ok()?;
    let media = rest.strip_prefix("(media udp ")?.strip_suffix(')')?;
    Some((http, media.parse().ok()?))
}

/// Polls `check` every 100 ms until it returns `Ok(true)` or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "{what}: not within {timeout:?}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let (http, media) = parse_ready(
            "Kaskade node n1 ready: open http://127.0.0.51:41234/ (media udp 127.0.0.51:50000)",
        )
        .unwrap();
        assert_eq!(http, "127.0.0.51:41234".parse::<SocketAddr>().unwrap());
        assert_eq!(media, "127.0.0.51:50000".parse::<SocketAddr>().unwrap());
        assert_eq!(parse_ready("listening on 127.0.0.1:1"), None);
    }
}
