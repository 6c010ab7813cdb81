//! `janus::config`: the minimal Janus configuration the benchmarks run — [`JanusConfig`] (binary,
//! module folder, HTTP port, RTP port range, session timeout, log level) and the config files it
//! renders for one network namespace: the VideoRoom plugin and the plain-HTTP transport only (no
//! admin API, no WebSockets, no event handlers, no loggers, no STUN/TURN), ICE-lite on one
//! interface. Only those two modules are linked into the run's own module folders, so nothing
//! else loads whatever the machine has installed.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::error::JanusProcessError;

/// File names Janus looks for in its configs folder (`-F`).
pub const CORE_FILE: &str = "janus.jcfg";
pub const HTTP_FILE: &str = "janus.transport.http.jcfg";
pub const VIDEOROOM_FILE: &str = "janus.plugin.videoroom.jcfg";
/// The two modules a run loads, relative to the module folder.
pub const VIDEOROOM_MODULE: &str = "plugins/libjanus_videoroom.so";
pub const HTTP_MODULE: &str = "transports/libjanus_http.so";

/// How to run Janus.
#[derive(Clone, Debug)]
pub struct JanusConfig {
    /// The `janus` binary: a path, or a name looked up in `PATH`.
    pub binary: PathBuf,
    /// Folder holding `plugins/` and `transports/`; `None` looks in the usual places
    /// (Debian's `/usr/lib/<arch>-linux-gnu/janus`, `/usr/lib/janus`, `/opt/janus/lib/janus`).
    pub modules_dir: Option<PathBuf>,
    /// Port of the HTTP API (on the namespace's veth address).
    pub http_port: u16,
    /// UDP ports for media; Janus (libnice) takes one per PeerConnection with BUNDLE and rtcp-mux.
    pub rtp_ports: RangeInclusive<u16>,
    /// Seconds without requests or long polls after which Janus drops a session.
    pub session_timeout_secs: u32,
    /// Janus log level 0–7 (4 = info; every PeerConnection logs a handful of lines).
    pub debug_level: u8,
    /// Number of shared event-loop threads all handles are spread over (`event_loops`); 0 keeps
    /// Janus's default of one thread per handle, i.e. a thousand threads for a thousand
    /// subscribers.
    pub event_loops: u32,
}

impl Default for JanusConfig {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("janus"),
            modules_dir: None,
            http_port: 8088,
            rtp_ports: 20_000..=29_999,
            session_timeout_secs: 60,
            debug_level: 4,
            event_loops: 0,
        }
    }
}

/// Where Janus runs: the namespace interface ICE may use and its address.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    /// Interface name for `ice_enforce_list` (the veth end inside the namespace).
    pub interface: &'a str,
    /// Its IPv4 address: SDP address, ICE host candidates and the HTTP API bind here.
    pub ip: &'a str,
}

/// A value that goes between double quotes in a Janus (libconfig) file.
fn quoted(what: &str, value: &str) -> Result<String, JanusProcessError> {
    if value.is_empty() || value.contains(['"', '\\', '\n', '\r']) {
        return Err(JanusProcessError::BadConfig(format!(
            "{what} {value:?} is empty or has quotes, backslashes or line breaks"
        )));
    }
    Ok(format!("\"{value}\""))
}

impl JanusConfig {
    /// The binary to run: `binary` itself when it is a path, else its first match in `PATH`.
    pub fn find_binary(&self) -> Result<PathBuf, JanusProcessError> {
        let not_installed = || JanusProcessError::NotInstalled {
            what: format!("the Janus binary {:?}", self.binary),
        };
        if self.binary.components().count() > 1 {
            return self
                .binary
                .is_file()
                .then(|| self.binary.clone())
                .ok_or_else(not_installed);
        }
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(&self.binary))
            .find(|p| p.is_file())
            .ok_or_else(not_installed)
    }

    /// The module folder: `modules_dir`, or the first usual place that has both modules.
    pub fn find_modules_dir(&self) -> Result<PathBuf, JanusProcessError> {
        let has_modules =
            |dir: &Path| dir.join(VIDEOROOM_MODULE).is_file() && dir.join(HTTP_MODULE).is_file();
        let candidates: Vec<PathBuf> = match &self.modules_dir {
            Some(dir) => vec![dir.clone()],
            None => vec![
                PathBuf::from(format!(
                    "/usr/lib/{}-linux-gnu/janus",
                    std::env::consts::ARCH
                )),
                PathBuf::from("/usr/lib/janus"),
                PathBuf::from("/usr/local/lib/janus"),
                PathBuf::from("/opt/janus/lib/janus"),
            ],
        };
        candidates
            .iter()
            .find(|d| has_modules(d))
            .cloned()
            .ok_or_else(|| JanusProcessError::NotInstalled {
                what: format!(
                    "Janus's {VIDEOROOM_MODULE} and {HTTP_MODULE} (looked in {candidates:?})"
                ),
            })
    }

    /// The config files for a run whose folder is `dir` (with `plugins/`, `transports/`,
    /// `events/` and `loggers/` below it), as (file name, contents).
    pub fn render(
        &self,
        dir: &Path,
        at: Placement<'_>,
    ) -> Result<Vec<(&'static str, String)>, JanusProcessError> {
        let (lo, hi) = (*self.rtp_ports.start(), *self.rtp_ports.end());
        if lo < 1024 || lo > hi {
            return Err(JanusProcessError::BadConfig(format!(
                "rtp_ports {lo}-{hi} must be a non-empty range above 1023"
            )));
        }
        if self.debug_level > 7 {
            return Err(JanusProcessError::BadConfig(format!(
                "debug_level {} is above 7",
                self.debug_level
            )));
        }
        let dir_text = dir.to_str().ok_or_else(|| {
            JanusProcessError::BadConfig(format!("{} is not UTF-8", dir.display()))
        })?;
        let folder = |sub: &str| quoted("folder", &format!("{dir_text}/{sub}"));
        let core = format!(
            r#"general: {{
	configs_folder = {configs}
	plugins_folder = {plugins}
	transports_folder = {transports}
	events_folder = {events}
	loggers_folder = {loggers}
	interface = {ip}
	debug_level = {debug}
	session_timeout = {timeout}
	reclaim_session_timeout = 0
	event_loops = {event_loops}
	server_name = "kaskade-bench"
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "{lo}-{hi}"
}}
nat: {{
	nice_debug = false
	full_trickle = false
	ice_lite = true
	ice_tcp = false
	ignore_mdns = true
	ice_enforce_list = {iface}
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
"#,
            configs = quoted("folder", dir_text)?,
            plugins = folder("plugins")?,
            transports = folder("transports")?,
            events = folder("events")?,
            loggers = folder("loggers")?,
            ip = quoted("ip", at.ip)?,
            debug = self.debug_level,
            timeout = self.session_timeout_secs,
            event_loops = self.event_loops,
            iface = quoted("interface", at.interface)?,
        );
        let http = format!(
            r#"general: {{
	events = false
	json = "compact"
	base_path = "/janus"
	http = true
	port = {port}
	ip = {ip}
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
"#,
            port = self.http_port,
            ip = quoted("ip", at.ip)?,
        );
        let videoroom = "general: {\n\tevents = false\n}\n".to_owned();
        Ok(vec![
            (CORE_FILE, core),
            (HTTP_FILE, http),
            (VIDEOROOM_FILE, videoroom),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_minimal_config_for_the_namespace() {
        let files = JanusConfig::default()
            .render(
                Path::new("/tmp/j1"),
                Placement {
                    interface: "kv1n",
                    ip: "10.99.1.2",
                },
            )
            .unwrap();
        let get = |name| &files.iter().find(|(n, _)| *n == name).unwrap().1;
        let core = get(CORE_FILE);
        for line in [
            "plugins_folder = \"/tmp/j1/plugins\"",
            "interface = \"10.99.1.2\"",
            "rtp_port_range = \"20000-29999\"",
            "ice_lite = true",
            "ice_enforce_list = \"kv1n\"",
            "broadcast = false",
        ] {
            assert!(core.contains(line), "{line:?} missing from\n{core}");
        }
        assert!(!core.contains("stun"), "no STUN server:\n{core}");
        let http = get(HTTP_FILE);
        assert!(http.contains("port = 8088") && http.contains("ip = \"10.99.1.2\""));
        assert!(http.contains("admin_http = false") && http.contains("https = false"));
    }

    #[test]
    fn refuses_values_it_cannot_quote_and_bad_ranges() {
        let at = Placement {
            interface: "kv\"1",
            ip: "10.99.1.2",
        };
        let cfg = JanusConfig::default();
        assert!(matches!(
            cfg.render(Path::new("/tmp/j"), at),
            Err(JanusProcessError::BadConfig(_))
        ));
        let cfg = JanusConfig {
            rtp_ports: RangeInclusive::new(30_000, 20_000),
            ..Default::default()
        };
        let at = Placement {
            interface: "kv1n",
            ip: "10.99.1.2",
        };
        assert!(matches!(
            cfg.render(Path::new("/tmp/j"), at),
            Err(JanusProcessError::BadConfig(_))
        ));
    }
}
