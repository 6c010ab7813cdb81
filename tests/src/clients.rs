//! Owns: running the Python aiortc clients of `tests/clients/` (whip_publish.py,
//! whep_subscribe.py, ws_client.py) as guarded processes, and finding a Python that has their
//! requirements (`tests/requirements.txt`).

use crate::netns::NetNs;
use crate::proc::Spawned;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The Python interpreter: `$KASKADE_PYTHON`, else `python3` from PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KASKADE_PYTHON") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("python3");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("python3")
}

/// `tests/clients/`.
pub fn clients_dir() -> PathBuf {
    crate::tests_dir().join("clients")
}

/// Panics with setup instructions unless aiortc and websockets import (checked once).
pub fn require_python_deps() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECK.get_or_init(|| {
        python_check(
            &python(),
            "import aiortc, websockets, av; print(aiortc.__version__)",
        )
    });
    if let Err(e) = result {
        panic!(
            "the aiortc clients need Python packages: run `pip install -r tests/requirements.txt` \
             (or set KASKADE_PYTHON); import failed with:\n{e}"
        );
    }
}

/// Runs `code` with the interpreter `python`; its stderr when it fails.
pub fn python_check(python: &std::path::Path, code: &str) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", code])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A running aiortc client.
pub struct PyClient;

impl PyClient {
    /// Starts `tests/clients/<script>` with `args`, on the host or inside `netns`.
    pub fn spawn(
        name: &str,
        script: &str,
        args: &[&str],
        netns: Option<&NetNs>,
    ) -> anyhow::Result<Spawned> {
        require_python_deps();
        let mut cmd = Command::new(python());
        cmd.arg(clients_dir().join(script))
            .args(args)
            .current_dir(clients_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let cmd = match netns {
            Some(ns) => ns.wrap(&cmd),
            None => cmd,
        };
        Spawned::spawn(name, cmd)
    }

    /// `whip_publish.py --url {url} --seconds {seconds}`.
    pub fn whip_publish(name: &str, url: &str, seconds: f64) -> anyhow::Result<Spawned> {
        Self::spawn(
            name,
            "whip_publish.py",
            &["--url", url, "--seconds", &seconds.to_string()],
            None,
        )
    }

    /// `whep_subscribe.py --url {url} --seconds {seconds}`.
    pub fn whep_subscribe(name: &str, url: &str, seconds: f64) -> anyhow::Result<Spawned> {
        Self::spawn(
            name,
            "whep_subscribe.py",
            &["--url", url, "--seconds", &seconds.to_string()],
            None,
        )
    }

    /// `ws_client.py --url {ws_url} --room {room} --name {display} --seconds {seconds} {extra…}`.
    pub fn ws_client(
        name: &str,
        ws_url: &str,
        room: &str,
        display: &str,
        seconds: f64,
        extra: &[&str],
    ) -> anyhow::Result<Spawned> {
        let secs = seconds.to_string();
        let mut args = vec![
            "--url",
            ws_url,
            "--room",
            room,
            "--name",
            display,
            "--seconds",
            &secs,
        ];
        args.extend_from_slice(extra);
        Self::spawn(name, "ws_client.py", &args, None)
    }
}

/// Waits for a client to exit and returns its final `{"event":"result"}` line.
pub fn final_result(client: &mut Spawned, timeout: Duration) -> anyhow::Result<Value> {
    client.wait_exit(timeout)?;
    client.events("result").pop().ok_or_else(|| {
        anyhow::anyhow!(
            "{} printed no result\n{}",
            client.name(),
            client.diagnostics()
        )
    })
}

/// Numeric field of a JSON object (0 when absent or not a number).
pub fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}
