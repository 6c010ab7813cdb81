//! Owns: [`NetNs`], a network namespace created for one test (`ksk<pid>[-k]`, loopback up, a veth
//! pair 10.99.<n>.1/24 on the host ↔ 10.99.<n>.2/24 inside) and deleted on drop. Headless Chromium
//! gathers no ICE candidates with `lo` alone, hence the veth; no traffic leaves this machine.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace and its veth pair; both removed on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_ip: String,
    pub ns_ip: String,
    created_ns: bool,
    created_link: bool,
}

fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `ip {}`: {e}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NetNs {
    /// Whether namespaces can be made here: `ip` (iproute2) present and running as root.
    /// The error says what is missing.
    pub fn check_tooling() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root (ip netns add)".into());
        }
        match Command::new("ip")
            .args(["netns", "list"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("iproute2 `ip` is not available: {e}")),
        }
    }

    /// Creates the namespace, brings `lo` up and wires the veth pair.
    pub fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = if k == 0 {
            format!("ksk{pid}")
        } else {
            format!("ksk{pid}-{k}")
        };
        // Interface names are limited to 15 bytes.
        let tag = format!("{}{}", pid % 10_000_000, k);
        let host_if = format!("kv{tag}h");
        let ns_if = format!("kv{tag}n");
        let used = run(&["-4", "-o", "addr", "show"]).unwrap_or_default();
        let start = (pid + k * 37) % 250;
        let subnet = (0..250)
            .map(|i| (start + i) % 250 + 1)
            .find(|n| !used.contains(&format!("10.99.{n}.")))
            .ok_or_else(|| anyhow::anyhow!("no free 10.99.x.0/24 subnet"))?;
        let mut ns = NetNs {
            name,
            host_if,
            ns_if,
            host_ip: format!("10.99.{subnet}.1"),
            ns_ip: format!("10.99.{subnet}.2"),
            created_ns: false,
            created_link: false,
        };
        run(&["netns", "add", &ns.name])?;
        ns.created_ns = true;
        run(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        run(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ])?;
        ns.created_link = true;
        run(&["link", "set", &ns.ns_if, "netns", &ns.name])?;
        run(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        run(&["link", "set", &ns.host_if, "up"])?;
        run(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/24", ns.ns_ip),
            "dev",
            &ns.ns_if,
        ])?;
        run(&["-n", &ns.name, "link", "set", &ns.ns_if, "up"])?;
        Ok(ns)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Wraps an already-built command so it runs inside the namespace (keeps args, env, cwd).
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut c = self.command(cmd.get_program());
        c.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            c.current_dir(dir);
        }
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.created_link {
            // Deleting one end removes the pair; it may already be gone with the namespace.
            let _ = run(&["link", "del", &self.host_if]);
        }
        if self.created_ns
            && let Err(e) = run(&["netns", "del", &self.name])
        {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// Runs `f` on a thread that joined the network namespace named `name` (so sockets it opens live
/// there), and returns its result.
pub fn in_named_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = std::path::Path::new("/run/netns").join(name);
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd;
            // SAFETY: setns with a namespace file descriptor that stays open for the call; it
            // switches the network namespace of this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns into {name}: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
