//! Mutual TLS for the node-to-node relay endpoint (QUIC via quinn).
//!
//! Owns the node's mesh identity (cluster CA, own certificate chain and key, node id) and turns it
//! into quinn server and client configurations in which both sides must present a certificate
//! issued by the cluster CA. A client dials a peer with the peer's node id as the server name,
//! so the server must hold a certificate whose SAN DNS name is that id; the server in turn checks
//! with [`peer_node_id_matches`] that the node id a client claims in its hello is the one its
//! client certificate was issued for. Certificates are produced by [`crate::certs::generate`].
//!
//! Everything uses an explicit *ring* [`CryptoProvider`], never a process-global default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// ALPN protocol id spoken on the relay endpoint.
pub const ALPN: &[u8] = b"kaskade-relay/1";
/// Keep-alive interval on relay connections: frequent enough that a dead peer is noticed by
/// silence within [`MAX_IDLE_TIMEOUT`], and the cost (one tiny packet per interval per link) is
/// nothing next to media.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(150);
/// Idle timeout after which a silent relay connection is considered dead: five missed
/// keep-alives. This bounds how long subscribers downstream of a dead relay node wait before
/// their node re-routes (failover target: media back within 1 s of a node's death).
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_millis(750);
/// Receive buffer for unreliable datagrams (media), in bytes.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 1 << 20;

/// Errors from loading the mesh identity or building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM (or I/O) error.
        source: rustls_pki_types::pem::Error,
    },
    /// The node id cannot be a certificate identity.
    #[error(transparent)]
    NodeId(#[from] crate::certs::CertError),
    /// The node's own certificate is not valid for its node id, or does not chain to the cluster
    /// CA for both server and client use (e.g. it belongs to another node, another CA, or expired).
    #[error("certificate {path} is not usable for node {node_id:?}: {source}")]
    OwnCertificate {
        /// The node's certificate file.
        path: PathBuf,
        /// The node id it was checked against.
        node_id: String,
        /// What failed.
        source: webpki::Error,
    },
    /// The private key is unusable or does not belong to the node's certificate.
    #[error("{path}: private key does not fit certificate {cert_path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The certificate file it was checked against.
        cert_path: PathBuf,
        /// What failed.
        source: rustls::Error,
    },
    /// The cluster CA certificate cannot be used as a trust anchor.
    #[error("{path}: unusable CA certificate: {source}")]
    CaCertificate {
        /// The CA file.
        path: PathBuf,
        /// What failed.
        source: webpki::Error,
    },
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls rejected the configuration (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the QUIC initial cipher suite.
    #[error("QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// A node's identity on the mesh: the cluster CA it trusts, its own certificate chain and key,
/// and the node id its certificate was issued for.
pub struct MeshIdentity {
    ca: CertificateDer<'static>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    node_id: String,
}

impl MeshIdentity {
    /// Loads PEM files written by `kaskade certs`: the cluster CA certificate (the first
    /// certificate in `ca_path`), this node's certificate chain (leaf first) and its private key.
    ///
    /// Fails early if the node's certificate does not chain to the CA for both TLS usages or is
    /// not issued for `node_id`, instead of letting every peer refuse the node later.
    pub fn load(
        ca_path: &Path,
        cert_path: &Path,
        key_path: &Path,
        node_id: &str,
    ) -> Result<Self, TlsError> {
        crate::certs::validate_node_id(node_id)?;
        let pem_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Pem { path, source }
        };
        let ca = CertificateDer::from_pem_file(ca_path).map_err(pem_err(ca_path))?;
        webpki::anchor_from_trusted_cert(&ca).map_err(|source| TlsError::CaCertificate {
            path: ca_path.to_path_buf(),
            source,
        })?;
        let cert_chain = CertificateDer::pem_file_iter(cert_path)
            .map_err(pem_err(cert_path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(cert_path))?;
        if cert_chain.is_empty() {
            return Err(pem_err(cert_path)(
                rustls_pki_types::pem::Error::NoItemsFound,
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem_err(key_path))?;
        rustls::sign::CertifiedKey::from_der(cert_chain.clone(), key.clone_key(), &provider())
            .map_err(|source| TlsError::Key {
                path: key_path.to_path_buf(),
                cert_path: cert_path.to_path_buf(),
                source,
            })?;

        let identity = Self {
            ca,
            cert_chain,
            key,
            node_id: node_id.to_owned(),
        };
        identity
            .check_own_certificate()
            .map_err(|source| TlsError::OwnCertificate {
                path: cert_path.to_path_buf(),
                node_id: node_id.to_owned(),
                source,
            })?;
        Ok(identity)
    }

    /// The node id this identity's certificate was issued for.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// quinn server configuration for the relay endpoint: presents this node's certificate and
    /// requires every client to present one issued by the cluster CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = provider();
        let verifier = self.client_verifier(provider.clone())?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        config.transport_config(transport_config());
        Ok(config)
    }

    /// quinn client configuration for dialling peers: trusts only the cluster CA and presents
    /// this node's certificate. Connect with the remote node id as the server name.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.root_store()?)
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(transport_config());
        Ok(config)
    }

    fn root_store(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    fn client_verifier(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        Ok(WebPkiClientVerifier::builder_with_provider(self.root_store()?, provider).build()?)
    }

    /// The leaf must chain to the CA for both usages and carry the node id as a SAN DNS name.
    fn check_own_certificate(&self) -> Result<(), webpki::Error> {
        let (leaf, intermediates) = self.cert_chain.split_first().ok_or(webpki::Error::BadDer)?;
        let anchor = webpki::anchor_from_trusted_cert(&self.ca)?;
        let ee = webpki::EndEntityCert::try_from(leaf)?;
        let algs = provider().signature_verification_algorithms.all;
        for usage in [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ] {
            ee.verify_for_usage(
                algs,
                std::slice::from_ref(&anchor),
                intermediates,
                UnixTime::now(),
                usage,
                None,
                None,
            )?;
        }
        if cert_names_node(&ee, &self.node_id) {
            Ok(())
        } else {
            Err(webpki::Error::CertNotValidForName(
                webpki::InvalidNameContext {
                    expected: ServerName::try_from(self.node_id.clone())
                        .map_err(|_| webpki::Error::BadDer)?,
                    presented: ee.valid_dns_names().map(str::to_owned).collect(),
                },
            ))
        }
    }
}

impl Clone for MeshIdentity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            node_id: self.node_id.clone(),
        }
    }
}

impl fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshIdentity")
            .field("node_id", &self.node_id)
            .field("cert_chain_len", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

/// Whether the (already TLS-verified) client certificate of `conn` was issued for node id
/// `claimed`. False when the peer presented no certificate, the certificate cannot be parsed, or
/// its SAN DNS name is not exactly `claimed` (the comparison is case-sensitive on top of the
/// usual case-insensitive DNS match, so "A" does not pass for a certificate issued to "a").
pub fn peer_node_id_matches(conn: &quinn::Connection, claimed: &str) -> bool {
    let Some(identity) = conn.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    cert_names_node(&ee, claimed)
}

fn cert_names_node(ee: &webpki::EndEntityCert<'_>, node_id: &str) -> bool {
    // Only DNS names: an IP-address-shaped claim must never match an IP SAN.
    let Ok(name @ ServerName::DnsName(_)) = ServerName::try_from(node_id) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
        && ee.valid_dns_names().any(|presented| presented == node_id)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport_config() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
            MAX_IDLE_TIMEOUT.as_millis() as u32,
        ))));
    Arc::new(transport)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use quinn::{Connection, ConnectionError, Endpoint};

    use super::*;
    use crate::certs::{self, TestDir, node_ids as ids};

    /// Upper bound for any single step; loopback handshakes take milliseconds.
    const STEP: Duration = Duration::from_secs(10);

    fn identity(dir: &Path, id: &str) -> MeshIdentity {
        MeshIdentity::load(
            &dir.join("ca.pem"),
            &dir.join(format!("{id}.pem")),
            &dir.join(format!("{id}.key")),
            id,
        )
        .expect("load identity")
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn server(identity: &MeshIdentity) -> (Endpoint, SocketAddr) {
        let config = identity.server_config().expect("server config");
        let endpoint = Endpoint::server(config, loopback()).expect("bind server");
        let addr = endpoint.local_addr().expect("server addr");
        (endpoint, addr)
    }

    type Side = Result<Connection, ConnectionError>;

    /// Dials `addr` as `server_name` with `config` while `server` accepts; returns the outcome
    /// at the server and at the client.
    async fn attempt(
        server: &Endpoint,
        addr: SocketAddr,
        config: quinn::ClientConfig,
        server_name: &str,
    ) -> (Side, Side) {
        let client = Endpoint::client(loopback()).expect("bind client");
        let accept = async {
            let incoming = tokio::time::timeout(STEP, server.accept())
                .await
                .expect("server saw no connection attempt")
                .expect("server endpoint closed");
            tokio::time::timeout(STEP, incoming)
                .await
                .expect("server handshake timed out")
        };
        let connect = async {
            let connecting = client
                .connect_with(config, addr, server_name)
                .expect("start connecting");
            tokio::time::timeout(STEP, connecting)
                .await
                .expect("client handshake timed out")
        };
        let (server_side, client_side) = tokio::join!(accept, connect);
        // With TLS 1.3 client auth the client completes its side of the handshake before the
        // server has judged its certificate: a client the server refused then sees a close.
        let client_side = match (&server_side, client_side) {
            (Err(_), Ok(conn)) => Err(tokio::time::timeout(STEP, conn.closed())
                .await
                .expect("client connection stayed up after the server refused it")),
            (_, client_side) => client_side,
        };
        (server_side, client_side)
    }

    /// The TLS alert a connection failed with, if it failed in the TLS handshake.
    fn tls_alert(error: &ConnectionError) -> Option<u8> {
        let code = match error {
            ConnectionError::TransportError(e) => u64::from(e.code),
            ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
            _ => return None,
        };
        // QUIC CRYPTO_ERROR codes are 0x100 + the TLS alert (RFC 9001, section 4.8).
        (0x100..=0x1ff)
            .contains(&code)
            .then_some((code & 0xff) as u8)
    }

    /// Both sides must fail, with a TLS alert.
    fn assert_refused(what: &str, (server_side, client_side): (Side, Side)) {
        for (side, outcome) in [("server", server_side), ("client", client_side)] {
            match outcome {
                Ok(conn) => panic!("{what}: {side} side connected to {}", conn.remote_address()),
                Err(e) => assert!(
                    tls_alert(&e).is_some(),
                    "{what}: {side} side failed, but not in the TLS handshake: {e}"
                ),
            }
        }
    }

    #[tokio::test]
    async fn mutual_auth_handshake_and_datagram() {
        let dir = TestDir::new("tls-ok");
        certs::generate(dir.path(), &ids(&["a", "b"])).expect("certs");
        let a = identity(dir.path(), "a");
        let b = identity(dir.path(), "b");
        let (server_ep, addr) = server(&a);

        let (server_side, client_side) =
            attempt(&server_ep, addr, b.client_config().expect("client"), "a").await;
        let at_a = server_side.expect("a accepted b");
        let at_b = client_side.expect("b connected to a");

        assert!(peer_node_id_matches(&at_a, "b"));
        assert!(!peer_node_id_matches(&at_a, "c"));
        assert!(!peer_node_id_matches(&at_a, "a"));
        assert!(
            !peer_node_id_matches(&at_a, "B"),
            "exact node id, not DNS case folding"
        );
        assert!(!peer_node_id_matches(&at_a, "127.0.0.1"));
        assert!(peer_node_id_matches(&at_b, "a"));

        let alpn = at_a
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol);
        assert_eq!(alpn.as_deref(), Some(ALPN));

        at_b.send_datagram(b"hello from b".to_vec().into())
            .expect("send datagram");
        let got = tokio::time::timeout(STEP, at_a.read_datagram())
            .await
            .expect("datagram timed out")
            .expect("read datagram");
        assert_eq!(&got[..], b"hello from b");
        assert!(at_a.max_datagram_size().is_some(), "datagrams negotiated");
    }

    #[tokio::test]
    async fn client_cert_from_other_ca_is_refused() {
        let ours = TestDir::new("tls-ours");
        let theirs = TestDir::new("tls-theirs");
        certs::generate(ours.path(), &ids(&["a"])).expect("our certs");
        certs::generate(theirs.path(), &ids(&["b"])).expect("their certs");
        let a = identity(ours.path(), "a");
        let foreign_b = identity(theirs.path(), "b");
        // Trusts our CA (so it accepts a's certificate) but presents a "b" from another CA.
        let intruder = MeshIdentity {
            ca: a.ca.clone(),
            ..foreign_b
        };
        let (server_ep, addr) = server(&a);
        let outcome = attempt(
            &server_ep,
            addr,
            intruder.client_config().expect("cfg"),
            "a",
        )
        .await;
        assert_refused("foreign client cert", outcome);

        // load() refuses that combination up front.
        let err = MeshIdentity::load(
            &ours.path().join("ca.pem"),
            &theirs.path().join("b.pem"),
            &theirs.path().join("b.key"),
            "b",
        )
        .expect_err("foreign cert");
        assert!(matches!(err, TlsError::OwnCertificate { .. }), "{err}");
    }

    #[tokio::test]
    async fn client_without_cert_is_refused() {
        let dir = TestDir::new("tls-anon");
        certs::generate(dir.path(), &ids(&["a"])).expect("certs");
        let a = identity(dir.path(), "a");
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(a.root_store().expect("roots"))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let config = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(tls).expect("quic client"),
        ));
        let (server_ep, addr) = server(&a);
        let outcome = attempt(&server_ep, addr, config, "a").await;
        assert_refused("anonymous client", outcome);
    }

    #[tokio::test]
    async fn wrong_server_name_is_refused() {
        let dir = TestDir::new("tls-name");
        certs::generate(dir.path(), &ids(&["a", "b"])).expect("certs");
        let a = identity(dir.path(), "a");
        let b = identity(dir.path(), "b");
        let (server_ep, addr) = server(&a);
        let outcome = attempt(&server_ep, addr, b.client_config().expect("cfg"), "c").await;
        assert_refused("server name c", outcome);
    }

    #[tokio::test]
    async fn server_cert_from_other_ca_is_refused() {
        let ours = TestDir::new("tls-srv-ours");
        let theirs = TestDir::new("tls-srv-theirs");
        certs::generate(ours.path(), &ids(&["b"])).expect("our certs");
        certs::generate(theirs.path(), &ids(&["a"])).expect("their certs");
        let b = identity(ours.path(), "b");
        let fake_a = identity(theirs.path(), "a");
        let (server_ep, addr) = server(&fake_a);
        let outcome = attempt(&server_ep, addr, b.client_config().expect("cfg"), "a").await;
        assert_refused("impersonated server a", outcome);
    }

    #[test]
    fn load_checks_node_id() {
        let dir = TestDir::new("tls-load");
        certs::generate(dir.path(), &ids(&["a"])).expect("certs");
        let ca = dir.path().join("ca.pem");
        let (cert, key) = (dir.path().join("a.pem"), dir.path().join("a.key"));
        let loaded = MeshIdentity::load(&ca, &cert, &key, "a").expect("load a");
        assert_eq!(loaded.node_id(), "a");
        let err = MeshIdentity::load(&ca, &cert, &key, "b").expect_err("a's cert as b");
        assert!(matches!(err, TlsError::OwnCertificate { .. }), "{err}");
        let err = MeshIdentity::load(&ca, &cert, &key, "A").expect_err("case differs");
        assert!(matches!(err, TlsError::OwnCertificate { .. }), "{err}");
        let err = MeshIdentity::load(&ca, &cert, &key, "a.b").expect_err("bad id");
        assert!(matches!(err, TlsError::NodeId(_)), "{err}");
        let err = MeshIdentity::load(&ca, &dir.path().join("nope.pem"), &key, "a")
            .expect_err("missing file");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        let err = MeshIdentity::load(&ca, &cert, &dir.path().join("ca.key"), "a")
            .expect_err("CA key with a's cert");
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        // A key file is not a certificate file.
        let err = MeshIdentity::load(&ca, &key, &key, "a").expect_err("no certs");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    }
}
