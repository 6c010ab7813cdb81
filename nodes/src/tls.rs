//! TLS for the node's HTTP/WebSocket endpoint (`--http`): HTTPS and WSS.
//!
//! Owns: where the endpoint's certificate comes from ([`HttpTls`]: PEM files given with
//! `--tls-cert`/`--tls-key`, or a self-signed certificate generated in memory at start with
//! `--tls-self-signed`), loading and checking it, the rustls server configuration, and
//! [`TlsListener`] — an [`axum::serve::Listener`] that accepts TCP connections and completes each
//! TLS handshake in a task of its own, so that `axum::serve` serves (and on shutdown drains) HTTPS
//! connections exactly as it serves plain ones.
//!
//! Like the relay's mutual TLS (`relay::tls`), everything uses an explicit *ring*
//! [`CryptoProvider`], never a process-global default. Protocols: TLS 1.3 and 1.2; ALPN offers
//! `http/1.1` only — the node's axum is built without HTTP/2, and WebSocket upgrades are
//! HTTP/1.1 requests (WebSockets over HTTP/2 would need extended CONNECT on `/ws`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// The ALPN protocols offered to clients.
pub const ALPN: &[&[u8]] = &[b"http/1.1"];
/// Longest a client may take from its TCP connection to a finished TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Validity of a `--tls-self-signed` certificate (a new one is made at every start).
const SELF_SIGNED_VALID: Duration = Duration::from_secs(365 * 24 * 3600);
/// Handshaken connections waiting for `axum::serve` to take them.
const READY_QUEUE: usize = 64;

/// Where the HTTP endpoint's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// `--tls-cert` + `--tls-key`: a PEM certificate chain (leaf first) and its private key
    /// (PKCS#8, PKCS#1 RSA or SEC1 EC).
    Files { cert: PathBuf, key: PathBuf },
    /// `--tls-self-signed`: a certificate generated in memory at start, for development.
    SelfSigned,
}

/// Errors from loading or generating the endpoint's certificate.
#[derive(Debug, thiserror::Error)]
pub enum HttpTlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: PathBuf },
    /// The first certificate of the chain is not a usable X.509 certificate.
    #[error("{path}: unusable certificate: {source}")]
    Certificate {
        path: PathBuf,
        source: webpki::Error,
    },
    /// The key is unusable, or is not the key of the certificate.
    #[error("{path}: private key does not fit certificate {cert_path}: {source}")]
    Key {
        path: PathBuf,
        cert_path: PathBuf,
        source: rustls::Error,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain with its key, ready for [`server_config`].
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Loads a PEM certificate chain (leaf first) and its private key, and checks that the key
    /// belongs to the leaf, so that a wrong pair fails at start rather than at every handshake.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, HttpTlsError> {
        let pem_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HttpTlsError::Pem { path, source }
        };
        let chain = CertificateDer::pem_file_iter(cert_path)
            .map_err(pem_err(cert_path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(cert_path))?;
        let leaf = chain.first().ok_or_else(|| HttpTlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        })?;
        webpki::EndEntityCert::try_from(leaf).map_err(|source| HttpTlsError::Certificate {
            path: cert_path.to_path_buf(),
            source,
        })?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem_err(key_path))?;
        let key_err = |source| HttpTlsError::Key {
            path: key_path.to_path_buf(),
            cert_path: cert_path.to_path_buf(),
            source,
        };
        let certified = rustls::sign::CertifiedKey::from_der(chain, key.clone_key(), &provider())
            .map_err(key_err)?;
        // from_der lets a key whose public half it cannot derive pass; insist on a match.
        certified.keys_match().map_err(key_err)?;
        Ok(Self {
            chain: certified.cert,
            key,
        })
    }

    /// A self-signed certificate for `names` (IP addresses become IP SANs, anything else DNS
    /// names), with a fresh P-256 key that never leaves memory.
    pub fn self_signed(names: &[String]) -> Result<Self, HttpTlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Kaskade development certificate");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|name| {
                Ok(match name.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(name.as_str().try_into()?),
                })
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + SELF_SIGNED_VALID;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

/// The names a `--tls-self-signed` certificate is issued for: the `--public-url` host (if any),
/// the bind address (unless it is the unspecified address) and `localhost`.
pub fn self_signed_names(public_url: Option<&str>, bind: IpAddr) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |name: String| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    if let Some(host) = public_url.and_then(url_host) {
        add(host);
    }
    if !bind.is_unspecified() {
        add(bind.to_string());
    }
    add("localhost".to_owned());
    names
}

/// The host of `scheme://[user@]host[:port][/…]` (an IPv6 host without its brackets).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The rustls server configuration of the HTTP endpoint: no client certificates, TLS 1.3 and
/// 1.2, ALPN [`ALPN`].
pub fn server_config(identity: ServerIdentity) -> Result<Arc<rustls::ServerConfig>, HttpTlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The acceptor for `tls`; `public_url` and `bind` name a self-signed certificate.
pub fn acceptor(
    tls: &HttpTls,
    public_url: Option<&str>,
    bind: IpAddr,
) -> Result<TlsAcceptor, HttpTlsError> {
    let identity = match tls {
        HttpTls::Files { cert, key } => ServerIdentity::load(cert, key)?,
        HttpTls::SelfSigned => {
            let names = self_signed_names(public_url, bind);
            warn!(names = ?names, "HTTPS with a self-signed certificate made at start (--tls-self-signed): for development only, browsers will warn");
            ServerIdentity::self_signed(&names)?
        }
    };
    Ok(TlsAcceptor::from(server_config(identity)?))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the CA certificates in the PEM file at `ca` (for tools that
/// talk to a node's HTTPS endpoint, e.g. `kaskade drain --ca-cert`).
pub fn client_config_trusting(ca: &Path) -> Result<Arc<rustls::ClientConfig>, HttpTlsError> {
    let pem_err = |source| HttpTlsError::Pem {
        path: ca.to_path_buf(),
        source,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(pem_err)? {
        roots.add(cert.map_err(pem_err)?)?;
    }
    if roots.is_empty() {
        return Err(HttpTlsError::NoCertificate {
            path: ca.to_path_buf(),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TCP listener that hands `axum::serve` only connections whose TLS handshake is done.
///
/// A background task accepts TCP connections and runs each handshake in a task of its own,
/// bounded by [`HANDSHAKE_TIMEOUT`], so a slow or broken client never holds up others. Failed
/// handshakes (plain HTTP on this port, an untrusted certificate, a scanner) are the client's
/// business: logged at debug level, without the client's address. When `axum::serve` drops the
/// listener (graceful shutdown), the background task stops accepting and pending handshakes are
/// abandoned.
///
/// Serve it as `listener.tap_io(|_| {})` with `into_make_service_with_connect_info::<SocketAddr>()`:
/// axum derives `ConnectInfo<SocketAddr>` for any [`axum::serve::TapIo`] listener whose address
/// type is `SocketAddr`, and handlers rely on it (rate limits, loopback-only endpoints).
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; must be called inside the runtime.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(Self { ready, local_addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ends only when this receiver is gone; never reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

type Ready = mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>;

async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, ready: Ready) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        tokio::spawn(handshake(acceptor.clone(), stream, peer, ready.clone()));
    }
}

async fn handshake(acceptor: TlsAcceptor, stream: TcpStream, peer: SocketAddr, ready: Ready) {
    let done = tokio::select! {
        _ = ready.closed() => return,
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => done,
    };
    match done {
        Ok(Ok(tls)) => {
            // Fails only when the server is shutting down: the connection is dropped.
            let _ = ready.send((tls, peer)).await;
        }
        Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
        Err(_) => debug!("TLS handshake timed out"),
    }
}

/// As `axum::serve` treats TCP accept errors: a connection that went away before it was
/// accepted is nothing; anything else (e.g. out of file descriptors) waits a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    warn!(error = %e, "accepting an HTTPS connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::TestDir;
    use crate::config::{ConfigError, NodeArgs};

    fn write_pair(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.join(format!("{tag}.pem"));
        let key_path = dir.join(format!("{tag}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn loads_a_matching_pem_pair_and_builds_a_server_config() {
        let dir = TestDir::new("http-tls-good");
        let (cert, key) = write_pair(dir.path(), "server", &["127.0.0.1", "localhost"]);
        let identity = ServerIdentity::load(&cert, &key).unwrap();
        assert_eq!(identity.chain.len(), 1);
        let config = server_config(identity).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        acceptor(
            &HttpTls::Files { cert, key },
            None,
            IpAddr::from([127, 0, 0, 1]),
        )
        .unwrap();
    }

    #[test]
    fn refuses_missing_empty_garbage_and_mismatched_files() {
        let dir = TestDir::new("http-tls-bad");
        let (cert, key) = write_pair(dir.path(), "a", &["localhost"]);
        let (_, other_key) = write_pair(dir.path(), "b", &["localhost"]);

        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            ServerIdentity::load(&missing, &key),
            Err(HttpTlsError::Pem { .. })
        ));
        assert!(matches!(
            ServerIdentity::load(&cert, &missing),
            Err(HttpTlsError::Pem { .. })
        ));

        // A key file given as the certificate: PEM, but no certificate in it.
        assert!(matches!(
            ServerIdentity::load(&key, &key),
            Err(HttpTlsError::NoCertificate { .. })
        ));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            ServerIdentity::load(&garbage, &key),
            Err(HttpTlsError::Certificate { .. })
        ));
        // A certificate given as the key.
        assert!(matches!(
            ServerIdentity::load(&cert, &cert),
            Err(HttpTlsError::Pem { .. })
        ));

        let err = ServerIdentity::load(&cert, &other_key).unwrap_err();
        assert!(matches!(err, HttpTlsError::Key { .. }), "{err}");
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn self_signed_certificates_name_the_public_host_the_bind_address_and_localhost() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            self_signed_names(Some("https://Meet.Example:8443/room"), loopback),
            ["meet.example", "127.0.0.1", "localhost"]
        );
        assert_eq!(
            self_signed_names(Some("https://[::1]:8443/"), IpAddr::from([0u8; 4])),
            ["::1", "localhost"]
        );
        assert_eq!(
            self_signed_names(Some("https://127.0.0.1/"), loopback),
            ["127.0.0.1", "localhost"]
        );
        assert_eq!(
            self_signed_names(None, loopback),
            ["127.0.0.1", "localhost"]
        );

        let identity = ServerIdentity::self_signed(&self_signed_names(None, loopback)).unwrap();
        let leaf = webpki::EndEntityCert::try_from(&identity.chain[0]).unwrap();
        for name in ["127.0.0.1", "localhost"] {
            let name = rustls_pki_types::ServerName::try_from(name).unwrap();
            leaf.verify_is_valid_for_subject_name(&name).unwrap();
        }
        server_config(identity).unwrap();
    }

    fn args() -> NodeArgs {
        NodeArgs {
            insecure_dev: true,
            ..Default::default()
        }
    }

    #[test]
    fn config_takes_a_certificate_with_its_key_or_self_signed_but_not_both() {
        assert_eq!(args().resolve().unwrap().tls, None);
        let files = NodeArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..args()
        };
        assert_eq!(
            files.resolve().unwrap().tls,
            Some(HttpTls::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        let own = NodeArgs {
            tls_self_signed: true,
            ..args()
        };
        assert_eq!(own.resolve().unwrap().tls, Some(HttpTls::SelfSigned));

        let cert_only = NodeArgs {
            tls_cert: Some("c.pem".into()),
            ..args()
        };
        assert!(matches!(
            cert_only.resolve(),
            Err(ConfigError::TlsIncomplete {
                missing: "--tls-key",
                ..
            })
        ));
        let key_only = NodeArgs {
            tls_key: Some("k.pem".into()),
            ..args()
        };
        assert!(matches!(
            key_only.resolve(),
            Err(ConfigError::TlsIncomplete {
                missing: "--tls-cert",
                ..
            })
        ));
        let both = NodeArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_self_signed: true,
            ..args()
        };
        assert!(matches!(both.resolve(), Err(ConfigError::TlsConflict)));
    }

    #[test]
    fn config_file_sets_tls_and_flags_conflict_with_it() {
        let dir = TestDir::new("http-tls-cfg");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "tls_cert = \"/etc/k/c.pem\"\ntls_key = \"/etc/k/k.pem\"\n",
        )
        .unwrap();
        let from_file = NodeArgs {
            config: Some(path.clone()),
            ..args()
        };
        assert_eq!(
            from_file.resolve().unwrap().tls,
            Some(HttpTls::Files {
                cert: "/etc/k/c.pem".into(),
                key: "/etc/k/k.pem".into()
            })
        );
        let flag_overrides_cert = NodeArgs {
            config: Some(path.clone()),
            tls_cert: Some("/other.pem".into()),
            ..args()
        };
        assert_eq!(
            flag_overrides_cert.resolve().unwrap().tls,
            Some(HttpTls::Files {
                cert: "/other.pem".into(),
                key: "/etc/k/k.pem".into()
            })
        );
        let conflict = NodeArgs {
            config: Some(path),
            tls_self_signed: true,
            ..args()
        };
        assert!(matches!(conflict.resolve(), Err(ConfigError::TlsConflict)));

        let self_signed = dir.path().join("dev.toml");
        std::fs::write(&self_signed, "tls_self_signed = true\n").unwrap();
        let dev = NodeArgs {
            config: Some(self_signed),
            ..args()
        };
        assert_eq!(dev.resolve().unwrap().tls, Some(HttpTls::SelfSigned));
    }
}
