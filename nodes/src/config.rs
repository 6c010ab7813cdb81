//! The node's configuration: command-line flags, each also settable as a `KASKADE_*` environment
//! variable, over an optional TOML file (`--config`), over the embedded defaults. Precedence:
//! flag or environment > file > default.

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kaskade",
    version,
    about = "Kaskade: a self-hostable WebRTC media mesh"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node (in-memory control plane unless configured otherwise).
    Node(NodeArgs),
}

#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// TOML file with any of the settings below (keys as the long flag names, with `_`).
    #[arg(long, env = "KASKADE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket listen address (default 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long, env = "KASKADE_HTTP")]
    pub http: Option<SocketAddr>,
    /// UDP media address shared by all sessions (default 127.0.0.1:7000).
    #[arg(long, env = "KASKADE_RTC")]
    pub rtc: Option<SocketAddr>,
    /// IP put in ICE candidates (default: the --rtc IP).
    #[arg(long, env = "KASKADE_ADVERTISE")]
    pub advertise: Option<IpAddr>,
    /// This node's id (default: random).
    #[arg(long, env = "KASKADE_NODE_ID")]
    pub node_id: Option<String>,
    /// The site (datacentre) this node runs in (default "local").
    #[arg(long, env = "KASKADE_SITE")]
    pub site: Option<String>,
    /// Log format: text or json (default text).
    #[arg(long, env = "KASKADE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The same settings as they may appear in the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<SocketAddr>,
    rtc: Option<SocketAddr>,
    advertise: Option<IpAddr>,
    node_id: Option<String>,
    site: Option<String>,
    log_format: Option<LogFormat>,
}

/// The resolved configuration a node runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub http: SocketAddr,
    pub rtc: SocketAddr,
    pub advertise: Option<IpAddr>,
    pub node_id: String,
    pub site: String,
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl NodeArgs {
    pub fn resolve(self) -> Result<NodeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        Ok(NodeConfig {
            http: self
                .http
                .or(file.http)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            rtc: self
                .rtc
                .or(file.rtc)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7000))),
            advertise: self.advertise.or(file.advertise),
            node_id: self
                .node_id
                .or(file.node_id)
                .unwrap_or_else(|| format!("n{:08x}", rand::random::<u32>())),
            site: self.site.or(file.site).unwrap_or_else(|| "local".into()),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("kaskade-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, "http = \"127.0.0.1:9000\"\nsite = \"berlin\"\n").unwrap();
        let args = NodeArgs {
            config: Some(path),
            site: Some("hamburg".into()),
            ..Default::default()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.http, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(cfg.site, "hamburg");
        assert_eq!(cfg.rtc, SocketAddr::from(([127, 0, 0, 1], 7000)));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("kaskade-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, "htttp = \"x\"\n").unwrap();
        let args = NodeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
    }
}
