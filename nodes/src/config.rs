//! The node's configuration: command-line flags, each also settable as a `KASKADE_*` environment
//! variable, over an optional TOML file (`--config`), over the embedded defaults. Precedence:
//! flag or environment > file > default.

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
// Parsed once at start-up; boxing the node's arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run one node (in-memory control plane unless configured otherwise).
    Node(NodeArgs),
    /// Create a cluster CA (or reuse the one in --out) and a certificate per node id, for the
    /// relay's mutual TLS. For development and tests; production meshes bring their own PKI.
    Certs(CertsArgs),
    /// Ask a node to drain: it takes no new placements, moves its browser participants to other
    /// nodes of its site and exits when empty (or after its drain deadline).
    Drain(DrainArgs),
    /// Create and list tenants and accounts in the mesh's store (etcd, or a single node's
    /// --data-dir while that node is stopped). Passwords come from KASKADE_PASSWORD or stdin.
    Accounts(AccountsArgs),
}

/// Where `kaskade accounts` finds the store.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// A single node's data directory (the node must not be running).
    #[arg(long, env = "KASKADE_DATA_DIR", conflicts_with = "etcd")]
    pub data_dir: Option<PathBuf>,
    /// etcd client URLs of the mesh.
    #[arg(long, env = "KASKADE_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix of the mesh in etcd.
    #[arg(long, env = "KASKADE_ETCD_PREFIX", default_value = DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,
}

#[derive(Args, Debug)]
pub struct AccountsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub action: AccountsAction,
}

#[derive(Subcommand, Debug)]
pub enum AccountsAction {
    /// Create a tenant (an organisation).
    CreateTenant {
        /// Its id: 1-32 of a-z, 0-9 and '-'.
        #[arg(long)]
        id: String,
        /// Its display name.
        #[arg(long)]
        name: String,
        /// Most rooms it may have (default 100).
        #[arg(long)]
        max_rooms: Option<u32>,
        /// Most participants in one of its rooms (default 1000).
        #[arg(long)]
        max_participants: Option<u32>,
    },
    /// Create an account: an operator (no --tenant) or a tenant_admin, host or participant of
    /// a tenant. The password is read from KASKADE_PASSWORD, else from the first line of stdin.
    CreateUser {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        user: String,
        /// Display name (default: the user id).
        #[arg(long)]
        name: Option<String>,
        /// operator, tenant_admin, host or participant.
        #[arg(long)]
        role: String,
    },
    /// List tenants, or the accounts of one tenant (operators without --tenant).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// List the tenants instead of accounts.
        #[arg(long)]
        tenants: bool,
    },
    /// Delete a tenant with its accounts and everything else it owns.
    DeleteTenant {
        #[arg(long)]
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Id of the node to drain.
    #[arg(long)]
    pub node: String,
    /// etcd client URLs, to look the node up in the registry.
    #[arg(long, env = "KASKADE_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix of the mesh in etcd.
    #[arg(long, env = "KASKADE_ETCD_PREFIX", default_value = DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,
    /// The node's HTTP URL, instead of looking it up in etcd.
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token of the admin endpoints (the node's --admin-token).
    #[arg(long, env = "KASKADE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// PEM file with the CA certificate(s) to trust when the node's URL is https.
    #[arg(long, env = "KASKADE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// Where a mesh keeps its keys in etcd unless told otherwise.
pub const DEFAULT_ETCD_PREFIX: &str = "/kaskade/";

/// The distance between two sites, for placement's nearest-site fallback: `A:B=N` (symmetric).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteDistance {
    pub a: String,
    pub b: String,
    pub distance: u32,
}

impl std::str::FromStr for SiteDistance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (pair, distance) = s
            .split_once('=')
            .ok_or_else(|| format!("expected SITE:SITE=N, got {s:?}"))?;
        let (a, b) = pair
            .split_once(':')
            .ok_or_else(|| format!("expected SITE:SITE=N, got {s:?}"))?;
        if a.is_empty() || b.is_empty() {
            return Err(format!("empty site in {s:?}"));
        }
        let distance = distance
            .parse()
            .map_err(|e| format!("bad distance in {s:?}: {e}"))?;
        Ok(Self {
            a: a.into(),
            b: b.into(),
            distance,
        })
    }
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory for ca.pem, ca.key and <node-id>.pem / <node-id>.key.
    #[arg(long)]
    pub out: PathBuf,
    /// Node ids to issue certificates for.
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// Another node of the mesh, given statically: `NODE_ID@SITE@ADDR` (ADDR is its relay endpoint).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    pub id: String,
    pub site: String,
    pub addr: SocketAddr,
}

impl std::str::FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '@');
        let (Some(id), Some(site), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("expected NODE_ID@SITE@ADDR, got {s:?}"));
        };
        if id.is_empty() || site.is_empty() {
            return Err(format!("empty node id or site in {s:?}"));
        }
        let addr = addr
            .parse()
            .map_err(|e| format!("bad address in {s:?}: {e}"))?;
        Ok(Self {
            id: id.to_owned(),
            site: site.to_owned(),
            addr,
        })
    }
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
    /// Client IP addresses in logs: short (the network: IPv4 /24, IPv6 /48; default) or full
    /// (address and port, for troubleshooting with logs kept shorter than the connection-data
    /// retention).
    #[arg(long, env = "KASKADE_LOG_ADDRESSES")]
    pub log_addresses: Option<crate::logged_address::AddressLogging>,
    /// Send traces (join, placement, negotiation, cascade setup, failover, drain) over OTLP/gRPC
    /// to this endpoint, e.g. http://127.0.0.1:4317 (an OpenTelemetry collector, Jaeger, Tempo).
    #[arg(long, env = "KASKADE_OTLP", value_name = "URL")]
    pub otlp: Option<String>,
    /// QUIC relay endpoint for the other nodes of the mesh (default 127.0.0.1:7100). The relay
    /// runs only with --certs.
    #[arg(long, env = "KASKADE_RELAY")]
    pub relay: Option<SocketAddr>,
    /// Directory with the cluster CA (ca.pem) and this node's <node-id>.pem / <node-id>.key,
    /// as `kaskade certs` writes them. Enables the relay.
    #[arg(long, env = "KASKADE_CERTS")]
    pub certs: Option<PathBuf>,
    /// Another node of the mesh: NODE_ID@SITE@ADDR (repeatable).
    #[arg(long = "peer", env = "KASKADE_PEERS", value_delimiter = ',')]
    pub peers: Vec<PeerSpec>,
    /// etcd client URLs (comma-separated): use etcd as the control plane (registry, discovery,
    /// placement, room state) instead of the in-memory one.
    #[arg(long, env = "KASKADE_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix of this mesh in etcd (default /kaskade/).
    #[arg(long, env = "KASKADE_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Registry lease TTL in milliseconds (default 3000): how long a dead node stays listed.
    #[arg(long, env = "KASKADE_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// Distance between two sites for placement fallback: SITE:SITE=N (repeatable, symmetric).
    #[arg(
        long = "site-distance",
        env = "KASKADE_SITE_DISTANCES",
        value_delimiter = ','
    )]
    pub site_distances: Vec<SiteDistance>,
    /// URL browsers use to reach this node's HTTP endpoint (default http://<--http>/, or
    /// https://<--http>/ with TLS).
    #[arg(long, env = "KASKADE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PEM certificate chain (leaf first) for HTTPS/WSS on --http; needs --tls-key.
    #[arg(long, env = "KASKADE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, env = "KASKADE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS/WSS with a self-signed certificate made at start (for the --public-url host,
    /// the --http address and localhost), for development. Not with --tls-cert/--tls-key.
    #[arg(long, env = "KASKADE_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Bearer token for the admin endpoints; without it they answer loopback callers only.
    #[arg(long, env = "KASKADE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Longest a drain waits for participants to move before the node exits, in seconds
    /// (default 30).
    #[arg(long, env = "KASKADE_DRAIN_DEADLINE_SECS")]
    pub drain_deadline_secs: Option<u64>,
    /// A TURN server handed to clients, e.g. `turn:turn.example.org:3478?transport=udp`
    /// (repeat for more; comma-separated in the environment). Needs --turn-secret.
    #[arg(long = "turn-url", env = "KASKADE_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN servers (coturn: `use-auth-secret` and
    /// `static-auth-secret`); clients get credentials made from it that expire.
    #[arg(long, env = "KASKADE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// How long a client's TURN credential stays valid, in seconds (default 3600).
    #[arg(long, env = "KASKADE_TURN_CREDENTIAL_LIFETIME_SECS")]
    pub turn_credential_lifetime_secs: Option<u64>,
    /// Sessions this node is sized for: reported in the registry, the operator page and the
    /// `kaskade_capacity_sessions` metric (the "node over capacity" alert). Not a hard limit.
    #[arg(long, env = "KASKADE_CAPACITY_SESSIONS")]
    pub capacity_sessions: Option<u64>,
    /// Run without access control (no login, anyone may open rooms, publish and watch), as a
    /// development default. Refused unless every listening address is loopback.
    #[arg(long, env = "KASKADE_INSECURE_DEV")]
    pub insecure_dev: bool,
    /// Directory for a single node's durable state (accounts, tenants, rooms) when there is no
    /// etcd: `control.json` in it, locked while the node runs.
    #[arg(long, env = "KASKADE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bearer credential Prometheus presents on /metrics; without it, loopback scrapers only.
    #[arg(long, env = "KASKADE_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
    /// Lifetime of a login's access token in seconds (default 1800).
    #[arg(long, env = "KASKADE_TOKEN_LIFETIME_SECS")]
    pub token_lifetime_secs: Option<u64>,
    /// Logins per client address and minute, bursts of half of it (default 60; 0: unlimited).
    #[arg(long, env = "KASKADE_MAX_LOGINS_PER_MINUTE")]
    pub max_logins_per_minute: Option<u32>,
    /// Joins (WebSocket, WHIP, WHEP) per client address and minute, bursts of half of it
    /// (default 1200, for a class behind one NAT address; per user at most 60; 0: unlimited).
    #[arg(long, env = "KASKADE_MAX_JOINS_PER_MINUTE")]
    pub max_joins_per_minute: Option<u32>,
    /// Signalling messages per session and second (default 50, bursts of twice that; 0:
    /// unlimited).
    #[arg(long, env = "KASKADE_MAX_MESSAGES_PER_SECOND")]
    pub max_messages_per_second: Option<u32>,
    /// How long audit records are kept, in days (default 365).
    #[arg(long, env = "KASKADE_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u64>,
    /// How long client addresses and other connection data are kept, in days (default 10).
    #[arg(long, env = "KASKADE_CONNECTION_DATA_RETENTION_DAYS")]
    pub connection_data_retention_days: Option<u64>,
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
    log_addresses: Option<crate::logged_address::AddressLogging>,
    otlp: Option<String>,
    relay: Option<SocketAddr>,
    certs: Option<PathBuf>,
    #[serde(default)]
    peers: Vec<PeerSpec>,
    #[serde(default)]
    etcd: Vec<String>,
    etcd_prefix: Option<String>,
    lease_ttl_ms: Option<u64>,
    #[serde(default)]
    site_distances: Vec<SiteDistance>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    tls_self_signed: bool,
    admin_token: Option<String>,
    drain_deadline_secs: Option<u64>,
    capacity_sessions: Option<u64>,
    #[serde(default)]
    turn_urls: Vec<String>,
    turn_secret: Option<String>,
    turn_credential_lifetime_secs: Option<u64>,
    #[serde(default)]
    insecure_dev: bool,
    data_dir: Option<PathBuf>,
    metrics_token: Option<String>,
    token_lifetime_secs: Option<u64>,
    max_logins_per_minute: Option<u32>,
    max_joins_per_minute: Option<u32>,
    max_messages_per_second: Option<u32>,
    audit_retention_days: Option<u64>,
    connection_data_retention_days: Option<u64>,
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
    pub log_addresses: crate::logged_address::AddressLogging,
    /// OTLP/gRPC endpoint for traces (`--otlp`); `None`: no trace export.
    pub otlp: Option<String>,
    pub relay: SocketAddr,
    pub certs: Option<PathBuf>,
    pub peers: Vec<PeerSpec>,
    /// etcd endpoints; empty means the in-memory control plane.
    pub etcd: Vec<String>,
    pub etcd_prefix: String,
    pub lease_ttl: Duration,
    pub site_distances: Vec<SiteDistance>,
    pub public_url: Option<String>,
    /// HTTPS/WSS on `http`; `None`: plain HTTP (behind a TLS reverse proxy).
    pub tls: Option<crate::tls::HttpTls>,
    pub admin_token: Option<String>,
    pub drain_deadline: Duration,
    /// Sessions the node is sized for; 0 when not configured.
    pub capacity_sessions: u64,
    /// TURN servers handed to clients, with their shared secret.
    pub turn: Option<crate::turn::TurnServers>,
    /// No access control (`--insecure-dev`, loopback only).
    pub insecure_dev: bool,
    pub data_dir: Option<PathBuf>,
    pub metrics_token: Option<String>,
    pub token_lifetime: Duration,
    pub rate_limits: crate::http::rate_limits::RateSettings,
    pub retention: kaskade_control::audit::RetentionPolicy,
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
    #[error(
        "--insecure-dev turns access control off and is allowed on loopback addresses only; \
         {what} {addr} is not loopback"
    )]
    InsecureDevNotLoopback { what: &'static str, addr: IpAddr },
    #[error(
        "access control keeps accounts, tenants and rooms in the control plane: give --data-dir DIR \
         (a single node) or --etcd URLS (a mesh); to try Kaskade out on this machine, add \
         --insecure-dev"
    )]
    NoDurableStore,
    #[error("{given} needs {missing}")]
    TlsIncomplete {
        given: &'static str,
        missing: &'static str,
    },
    #[error("--tls-self-signed and --tls-cert/--tls-key exclude each other: give one of them")]
    TlsConflict,
    #[error("{0}")]
    Turn(&'static str),
}

/// The TURN servers from `--turn-url`, `--turn-secret` and the credential lifetime: none, or
/// all of URLs and secret.
fn turn_servers(
    urls: Vec<String>,
    secret: Option<String>,
    lifetime_secs: Option<u64>,
) -> Result<Option<crate::turn::TurnServers>, ConfigError> {
    let lifetime = std::time::Duration::from_secs(lifetime_secs.unwrap_or(3600));
    match (urls.is_empty(), secret) {
        (true, None) => Ok(None),
        (true, Some(_)) => Err(ConfigError::Turn("--turn-secret needs --turn-url")),
        (false, None) => Err(ConfigError::Turn(
            "--turn-url needs --turn-secret (the TURN server's static-auth-secret)",
        )),
        (false, Some(secret)) => {
            let valid = |u: &String| {
                ["turn:", "turns:", "stun:"]
                    .iter()
                    .any(|p| u.starts_with(p))
            };
            if !urls.iter().all(valid) {
                return Err(ConfigError::Turn(
                    "--turn-url takes turn:, turns: or stun: URLs (e.g. turn:turn.example.org:3478?transport=udp)",
                ));
            }
            Ok(Some(crate::turn::TurnServers::new(urls, secret, lifetime)))
        }
    }
}

/// The HTTP endpoint's TLS from the resolved `--tls-cert`, `--tls-key` and `--tls-self-signed`.
fn http_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: bool,
) -> Result<Option<crate::tls::HttpTls>, ConfigError> {
    use crate::tls::HttpTls;
    match (cert, key, self_signed) {
        (None, None, false) => Ok(None),
        (None, None, true) => Ok(Some(HttpTls::SelfSigned)),
        (_, _, true) => Err(ConfigError::TlsConflict),
        (Some(cert), Some(key), false) => Ok(Some(HttpTls::Files { cert, key })),
        (Some(_), None, false) => Err(ConfigError::TlsIncomplete {
            given: "--tls-cert",
            missing: "--tls-key",
        }),
        (None, Some(_), false) => Err(ConfigError::TlsIncomplete {
            given: "--tls-key",
            missing: "--tls-cert",
        }),
    }
}

impl NodeConfig {
    /// Refuses combinations that would weaken access control.
    fn checked(self) -> Result<Self, ConfigError> {
        if self.insecure_dev {
            let binds = [("--http", self.http.ip()), ("--rtc", self.rtc.ip())];
            for (what, addr) in binds {
                if !addr.is_loopback() {
                    return Err(ConfigError::InsecureDevNotLoopback { what, addr });
                }
            }
            if let Some(addr) = self.advertise.filter(|a| !a.is_loopback()) {
                return Err(ConfigError::InsecureDevNotLoopback {
                    what: "--advertise",
                    addr,
                });
            }
        } else if self.etcd.is_empty() && self.data_dir.is_none() {
            return Err(ConfigError::NoDurableStore);
        }
        Ok(self)
    }
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
            log_addresses: self
                .log_addresses
                .or(file.log_addresses)
                .unwrap_or_default(),
            otlp: self.otlp.or(file.otlp),
            relay: self
                .relay
                .or(file.relay)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7100))),
            certs: self.certs.or(file.certs),
            peers: if self.peers.is_empty() {
                file.peers
            } else {
                self.peers
            },
            etcd: if self.etcd.is_empty() {
                file.etcd
            } else {
                self.etcd
            },
            etcd_prefix: self
                .etcd_prefix
                .or(file.etcd_prefix)
                .unwrap_or_else(|| DEFAULT_ETCD_PREFIX.into()),
            lease_ttl: Duration::from_millis(
                self.lease_ttl_ms
                    .or(file.lease_ttl_ms)
                    .unwrap_or(3000)
                    .max(1000),
            ),
            site_distances: if self.site_distances.is_empty() {
                file.site_distances
            } else {
                self.site_distances
            },
            public_url: self.public_url.or(file.public_url),
            tls: http_tls(
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
                self.tls_self_signed || file.tls_self_signed,
            )?,
            admin_token: self.admin_token.or(file.admin_token),
            drain_deadline: Duration::from_secs(
                self.drain_deadline_secs
                    .or(file.drain_deadline_secs)
                    .unwrap_or(30),
            ),
            capacity_sessions: self
                .capacity_sessions
                .or(file.capacity_sessions)
                .unwrap_or(0),
            turn: turn_servers(
                if self.turn_urls.is_empty() {
                    file.turn_urls
                } else {
                    self.turn_urls
                },
                self.turn_secret.or(file.turn_secret),
                self.turn_credential_lifetime_secs
                    .or(file.turn_credential_lifetime_secs),
            )?,
            insecure_dev: self.insecure_dev || file.insecure_dev,
            data_dir: self.data_dir.or(file.data_dir),
            metrics_token: self.metrics_token.or(file.metrics_token),
            token_lifetime: Duration::from_secs(
                self.token_lifetime_secs
                    .or(file.token_lifetime_secs)
                    .unwrap_or(1800)
                    .clamp(60, 24 * 3600),
            ),
            retention: {
                const DAY_MS: u64 = 24 * 3600 * 1000;
                let defaults = kaskade_control::audit::RetentionPolicy::default();
                kaskade_control::audit::RetentionPolicy {
                    audit_ms: self
                        .audit_retention_days
                        .or(file.audit_retention_days)
                        .map_or(defaults.audit_ms, |d| d.max(1) * DAY_MS),
                    addresses_ms: self
                        .connection_data_retention_days
                        .or(file.connection_data_retention_days)
                        .map_or(defaults.addresses_ms, |d| d.max(1) * DAY_MS),
                }
            },
            rate_limits: {
                let defaults = crate::http::rate_limits::RateSettings::default();
                let joins = self
                    .max_joins_per_minute
                    .or(file.max_joins_per_minute)
                    .unwrap_or(defaults.joins_per_address);
                crate::http::rate_limits::RateSettings {
                    logins_per_address: self
                        .max_logins_per_minute
                        .or(file.max_logins_per_minute)
                        .unwrap_or(defaults.logins_per_address),
                    joins_per_address: joins,
                    joins_per_user: joins.min(defaults.joins_per_user),
                    messages_per_session_second: self
                        .max_messages_per_second
                        .or(file.max_messages_per_second)
                        .unwrap_or(defaults.messages_per_session_second),
                }
            },
        })
        .and_then(NodeConfig::checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_needs_urls_and_secret_together() {
        assert_eq!(turn_servers(vec![], None, None).unwrap(), None);
        assert!(matches!(
            turn_servers(vec!["turn:t:3478".into()], None, None),
            Err(ConfigError::Turn(_))
        ));
        assert!(matches!(
            turn_servers(vec![], Some("s".into()), None),
            Err(ConfigError::Turn(_))
        ));
        assert!(matches!(
            turn_servers(vec!["http://t".into()], Some("s".into()), None),
            Err(ConfigError::Turn(_))
        ));
        let turn = turn_servers(vec!["turn:t:3478".into()], Some("s".into()), Some(600))
            .unwrap()
            .unwrap();
        assert_eq!(turn.lifetime, std::time::Duration::from_secs(600));
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("kaskade-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, "http = \"127.0.0.1:9000\"\nsite = \"berlin\"\n").unwrap();
        let args = NodeArgs {
            config: Some(path),
            site: Some("hamburg".into()),
            insecure_dev: true,
            ..Default::default()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.http, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(cfg.site, "hamburg");
        assert_eq!(cfg.rtc, SocketAddr::from(([127, 0, 0, 1], 7000)));
    }

    #[test]
    fn peers_come_from_flags_or_the_file() {
        let p: PeerSpec = "n3@b@127.0.0.3:7100".parse().unwrap();
        assert_eq!(p.id, "n3");
        assert_eq!(p.site, "b");
        assert!("n3@127.0.0.3:7100".parse::<PeerSpec>().is_err());
        assert!("n3@b@nowhere".parse::<PeerSpec>().is_err());
        let dir = std::env::temp_dir().join(format!("kaskade-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "[[peers]]\nid = \"n2\"\nsite = \"a\"\naddr = \"127.0.0.2:7100\"\n",
        )
        .unwrap();
        let cfg = NodeArgs {
            config: Some(path),
            insecure_dev: true,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].addr, SocketAddr::from(([127, 0, 0, 2], 7100)));
        assert_eq!(cfg.relay, SocketAddr::from(([127, 0, 0, 1], 7100)));
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

    #[test]
    fn access_control_needs_a_store_and_insecure_dev_needs_loopback() {
        let open = |http: &str| NodeArgs {
            insecure_dev: true,
            http: Some(http.parse().unwrap()),
            ..Default::default()
        };
        assert!(open("127.0.0.1:0").resolve().unwrap().insecure_dev);
        assert!(matches!(
            open("0.0.0.0:8080").resolve(),
            Err(ConfigError::InsecureDevNotLoopback { what: "--http", .. })
        ));
        assert!(matches!(
            NodeArgs {
                advertise: Some("192.0.2.1".parse().unwrap()),
                ..open("127.0.0.1:0")
            }
            .resolve(),
            Err(ConfigError::InsecureDevNotLoopback {
                what: "--advertise",
                ..
            })
        ));
        assert!(matches!(
            NodeArgs::default().resolve(),
            Err(ConfigError::NoDurableStore)
        ));
        let enforced = NodeArgs {
            data_dir: Some("/tmp/kaskade-data".into()),
            http: Some("0.0.0.0:8080".parse().unwrap()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(!enforced.insecure_dev);
        assert_eq!(enforced.token_lifetime, Duration::from_secs(1800));
    }
}
