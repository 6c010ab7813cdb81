//! Owns: [`Spawned`], a guarded child process for the end-to-end tests — its own process group,
//! killed when the spawning test thread dies (PR_SET_PDEATHSIG), stdout collected line by line
//! for tests to wait on, stderr tail kept for failure reports, and a TERM-then-KILL of the whole
//! group on drop.

use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const STDERR_TAIL_LINES: usize = 300;

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    closed: bool,
}

/// A child process that is stopped (and its process group with it) when dropped.
pub struct Spawned {
    name: String,
    child: Child,
    stdout: Arc<(Mutex<Output>, Condvar)>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    exit: Option<ExitStatus>,
    /// How long to wait after SIGTERM before SIGKILL on drop.
    pub grace: Duration,
}

impl Spawned {
    /// Starts `cmd` with piped stdout/stderr in a new process group. `name` labels diagnostics.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Die with the test thread that started us, even if the test process is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        let stdout = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        {
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let (lock, cv) = &*stdout;
                    lock.lock().unwrap().lines.push(line);
                    cv.notify_all();
                }
                let (lock, cv) = &*stdout;
                lock.lock().unwrap().closed = true;
                cv.notify_all();
            });
        }
        {
            let tail = stderr_tail.clone();
            let echo = std::env::var_os("KASKADE_E2E_ECHO").is_some();
            let label = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    if echo {
                        eprintln!("[{label}] {line}");
                    }
                    let mut t = tail.lock().unwrap();
                    if t.len() == STDERR_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr_tail,
            exit: None,
            grace: Duration::from_secs(5),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.0.lock().unwrap().lines.clone()
    }

    /// stdout lines that parse as JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// JSON lines whose `"event"` equals `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// The last stderr lines (for failure messages).
    pub fn stderr_tail(&self, n: usize) -> String {
        let t = self.stderr_tail.lock().unwrap();
        let skip = t.len().saturating_sub(n);
        t.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits until a stdout line satisfies `pred`; fails when the deadline passes or stdout
    /// closes (the process ended) without such a line.
    pub fn wait_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.stdout;
        let mut out = lock.lock().unwrap();
        let mut seen = 0;
        loop {
            if let Some(l) = out.lines[seen..].iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            seen = out.lines.len();
            if out.closed {
                drop(out);
                anyhow::bail!(
                    "{}: exited before {what}\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            let now = Instant::now();
            if now >= deadline {
                drop(out);
                anyhow::bail!(
                    "{}: timed out after {:.0} s waiting for {what}\n{}",
                    self.name,
                    timeout.as_secs_f64(),
                    self.diagnostics()
                );
            }
            out = cv.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    /// Waits for a JSON stdout line satisfying `pred`.
    pub fn wait_json(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let line = self.wait_line(what, timeout, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object() && pred(&v))
        })?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Waits for a JSON line with `"event": event`.
    pub fn wait_event(&self, event: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_json(&format!("event {event:?}"), timeout, |v| {
            v["event"] == event
        })
    }

    /// Sends `sig` to the process itself (not its group).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Sends `sig` to the whole process group.
    pub fn signal_group(&self, sig: i32) {
        // SAFETY: the child leads its own group (process_group(0)); the negative pid is it.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), sig);
        }
    }

    /// `kill -9` of the process itself: no clean-up code of the child runs.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                // Let the reader thread drain stdout before callers read the final lines.
                let (lock, cv) = &*self.stdout;
                let out = lock.lock().unwrap();
                let _ = cv
                    .wait_timeout_while(out, Duration::from_secs(5), |o| !o.closed)
                    .unwrap();
                return Ok(s);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{}: still running after {:.0} s\n{}",
                    self.name,
                    timeout.as_secs_f64(),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; to the whole group.
    pub fn stop(&mut self) {
        if self.try_exit().is_some() {
            // The leader is gone; stragglers of its group (e.g. a browser) still get killed.
            self.signal_group(libc::SIGKILL);
            return;
        }
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.try_exit().is_some() {
                self.signal_group(libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(libc::SIGKILL);
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }

    /// stdout lines and the stderr tail, for failure messages.
    pub fn diagnostics(&self) -> String {
        let lines = self.lines();
        let skip = lines.len().saturating_sub(40);
        format!(
            "--- {} stdout (last {} lines) ---\n{}\n--- {} stderr (tail) ---\n{}",
            self.name,
            lines.len() - skip,
            lines[skip..].join("\n"),
            self.name,
            self.stderr_tail(80)
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_json_lines_and_waits_for_events() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"echo '{"event":"a","n":1}'; echo 'noise'; echo '{"event":"b"}'; echo oops >&2"#,
        ]);
        let mut p = Spawned::spawn("sh", cmd).unwrap();
        let b = p.wait_event("b", Duration::from_secs(10)).unwrap();
        assert_eq!(b["event"], "b");
        assert!(p.wait_exit(Duration::from_secs(10)).unwrap().success());
        assert_eq!(p.events("a")[0]["n"], 1);
        assert_eq!(p.json_lines().len(), 2);
    }

    #[test]
    fn reports_an_early_exit_instead_of_waiting() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bye; exit 3"]);
        let p = Spawned::spawn("sh", cmd).unwrap();
        let e = p
            .wait_line("never", Duration::from_secs(30), |l| l == "hello")
            .unwrap_err();
        assert!(e.to_string().contains("exited before"), "{e}");
    }

    #[test]
    fn drop_kills_a_running_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let p = Spawned::spawn("sleep", cmd).unwrap();
        let pid = p.pid() as libc::pid_t;
        drop(p);
        // SAFETY: signal 0 only checks existence; the child was reaped by drop.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "child {pid} survived drop");
    }
}
