//! Dev/test certificate generation for a Kaskade mesh (`kaskade certs`).
//!
//! Owns the on-disk layout of a mesh's PKI: a cluster CA (`ca.pem` + `ca.key`) and, per node id,
//! a leaf certificate (`<id>.pem`) with its PKCS#8 key (`<id>.key`, mode 0600). Leaves carry the
//! node id as their only SAN DNS name and both the serverAuth and clientAuth EKUs, so the same
//! pair serves a node as QUIC server and as QUIC client on the relay mesh (see `relay::tls`).
//!
//! An existing CA in the output directory is reused, so nodes can be added to a mesh later.
//! This is tooling for development and tests, not a production CA: there is no revocation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, UnixTime};

/// Common name of the cluster CA created by [`generate`].
pub const CA_COMMON_NAME: &str = "Kaskade cluster CA";
/// File name of the cluster CA certificate inside the output directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the cluster CA private key inside the output directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Longest node id accepted by [`validate_node_id`] (before the DNS-label check).
pub const MAX_NODE_ID_LEN: usize = 64;

/// Validity of a newly created cluster CA, in days.
const CA_VALID_DAYS: i64 = 3653;
/// Validity of a node certificate, in days.
const LEAF_VALID_DAYS: i64 = 366;
/// Certificates start being valid this many days before "today" (tolerates clock skew).
const BACKDATE_DAYS: i64 = 1;

/// Errors from certificate generation.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A node id is not usable as a certificate identity.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Only one of `ca.pem` / `ca.key` exists: refuse to guess (and to overwrite a CA).
    #[error("found {present} but not {missing}: restore it or remove both to create a new CA")]
    IncompleteCa {
        /// The CA file that exists.
        present: PathBuf,
        /// The CA file that is missing.
        missing: PathBuf,
    },
    /// The existing CA certificate could not be read as PEM.
    #[error("{path}: not a PEM certificate: {source}")]
    CaCertPem {
        /// The CA certificate file.
        path: PathBuf,
        /// The PEM error.
        source: rustls_pki_types::pem::Error,
    },
    /// The existing CA key could not be parsed.
    #[error("{path}: not a usable PKCS#8 private key: {source}")]
    CaKey {
        /// The CA key file.
        path: PathBuf,
        /// The parse error.
        source: rcgen::Error,
    },
    /// The existing CA cannot issue certificates that verify against it (key does not match the
    /// certificate, the CA was not made by `kaskade certs`, or it has expired).
    #[error("existing CA in {dir} cannot be reused: {source}")]
    CaUnusable {
        /// The output directory holding the CA.
        dir: PathBuf,
        /// Why a freshly issued certificate did not verify against the CA.
        source: webpki::Error,
    },
    /// Generating a key or certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system clock is before the Unix epoch.
    #[error("system clock is before 1970")]
    Clock,
}

/// Paths written (or reused) by [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The cluster CA certificate (`ca.pem`).
    pub ca_cert: PathBuf,
    /// The cluster CA private key (`ca.key`).
    pub ca_key: PathBuf,
    /// Whether an existing CA was loaded instead of creating a new one.
    pub ca_reused: bool,
    /// One entry per requested node, in request order.
    pub nodes: Vec<NodeCertFiles>,
}

/// A node's certificate and key paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertFiles {
    /// The node id (the certificate's SAN DNS name).
    pub node_id: String,
    /// The leaf certificate (`<id>.pem`).
    pub cert: PathBuf,
    /// The leaf private key (`<id>.key`, PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
}

/// Checks that `id` can be used as a node id and certificate identity: 1–64 characters of
/// `[A-Za-z0-9_-]` that also form a valid DNS name (at most 63 characters, no leading or trailing
/// `-`, not purely numeric), because peers match it against the certificate's SAN DNS name.
pub fn validate_node_id(id: &str) -> Result<(), CertError> {
    let invalid = |reason| {
        Err(CertError::InvalidNodeId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
        return invalid("must be 1-64 characters long");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return invalid("only A-Z, a-z, 0-9, '_' and '-' are allowed");
    }
    if DnsName::try_from(id).is_err() {
        return invalid(
            "must be a valid DNS label: at most 63 characters, no leading or trailing '-', \
             not purely numeric or hexadecimal",
        );
    }
    Ok(())
}

/// Creates (or reuses) the cluster CA in `out_dir` and issues a certificate and key for each node
/// id in `nodes`. Existing node files are overwritten; an existing CA is never overwritten.
///
/// All node ids are validated before anything is written.
pub fn generate(out_dir: &Path, nodes: &[String]) -> Result<CertFiles, CertError> {
    for id in nodes {
        validate_node_id(id)?;
    }
    fs::create_dir_all(out_dir).map_err(|source| CertError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;

    let ca_cert_path = out_dir.join(CA_CERT_FILE);
    let ca_key_path = out_dir.join(CA_KEY_FILE);
    let today = days_since_epoch()?;

    let (ca_der, issuer, ca_reused) = match (ca_cert_path.exists(), ca_key_path.exists()) {
        (true, true) => {
            let (der, issuer) = load_ca(&ca_cert_path, &ca_key_path)?;
            (der, issuer, true)
        }
        (false, false) => {
            let (der, issuer) = create_ca(&ca_cert_path, &ca_key_path, today)?;
            (der, issuer, false)
        }
        (true, false) => {
            return Err(CertError::IncompleteCa {
                present: ca_cert_path,
                missing: ca_key_path,
            });
        }
        (false, true) => {
            return Err(CertError::IncompleteCa {
                present: ca_key_path,
                missing: ca_cert_path,
            });
        }
    };

    let mut node_files = Vec::with_capacity(nodes.len());
    for id in nodes {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = leaf_params(id, today)?.signed_by(&key, &issuer)?;
        // An existing CA might not be one we can issue for (e.g. made by another tool with a
        // differently encoded subject): check before writing anything for this node.
        check_issued_by(cert.der(), &ca_der).map_err(|source| CertError::CaUnusable {
            dir: out_dir.to_path_buf(),
            source,
        })?;

        let cert_path = out_dir.join(format!("{id}.pem"));
        let key_path = out_dir.join(format!("{id}.key"));
        write_secret(&key_path, key.serialize_pem().as_bytes())?;
        write_public(&cert_path, cert.pem().as_bytes())?;
        node_files.push(NodeCertFiles {
            node_id: id.clone(),
            cert: cert_path,
            key: key_path,
        });
    }

    Ok(CertFiles {
        ca_cert: ca_cert_path,
        ca_key: ca_key_path,
        ca_reused,
        nodes: node_files,
    })
}

/// Parameters of the cluster CA. Also used to rebuild the issuer of a reused CA, so the subject
/// written into new leaves is byte-for-byte the subject of the CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(id: &str, today: i64) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::DnsName(id.try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, today, LEAF_VALID_DAYS);
    Ok(params)
}

fn create_ca(
    cert_path: &Path,
    key_path: &Path,
    today: i64,
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params();
    set_validity(&mut params, today, CA_VALID_DAYS);
    let cert = params.self_signed(&key)?;
    write_secret(key_path, key.serialize_pem().as_bytes())?;
    write_public(cert_path, cert.pem().as_bytes())?;
    Ok((cert.der().clone(), Issuer::new(params, key)))
}

fn load_ca(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), CertError> {
    let der = CertificateDer::from_pem_file(cert_path).map_err(|source| match source {
        rustls_pki_types::pem::Error::Io(source) => CertError::Io {
            path: cert_path.to_path_buf(),
            source,
        },
        source => CertError::CaCertPem {
            path: cert_path.to_path_buf(),
            source,
        },
    })?;
    let key_pem = fs::read_to_string(key_path).map_err(|source| CertError::Io {
        path: key_path.to_path_buf(),
        source,
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| CertError::CaKey {
        path: key_path.to_path_buf(),
        source,
    })?;
    Ok((der, Issuer::new(ca_params(), key)))
}

/// Verifies that `leaf` chains to `ca` for both TLS usages, now.
fn check_issued_by(
    leaf: &CertificateDer<'_>,
    ca: &CertificateDer<'_>,
) -> Result<(), webpki::Error> {
    let anchor = webpki::anchor_from_trusted_cert(ca)?;
    let ee = webpki::EndEntityCert::try_from(leaf)?;
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            algs,
            std::slice::from_ref(&anchor),
            &[],
            UnixTime::now(),
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

fn days_since_epoch() -> Result<i64, CertError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Clock)?
        .as_secs();
    i64::try_from(secs / 86_400).map_err(|_| CertError::Clock)
}

/// Valid from midnight UTC `BACKDATE_DAYS` before `today` for `days` days after `today`.
fn set_validity(params: &mut CertificateParams, today: i64, days: i64) {
    let (y, m, d) = civil_from_days(today - BACKDATE_DAYS);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Proleptic Gregorian (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`). Always a valid date for the day counts used here.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is 1..=31 and month 1..=12 by construction; the year stays far inside i32 for any
    // date a system clock can report.
    (year as i32, month as u8, day as u8)
}

/// Writes a private key: created with mode 0600, and tightened to 0600 before writing if it
/// already existed with wider permissions.
fn write_secret(path: &Path, contents: &[u8]) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
    }
    write_all(&mut file, contents).map_err(io_err)
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::create(path).map_err(io_err)?;
    write_all(&mut file, contents).map_err(io_err)
}

fn write_all(file: &mut File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

/// A uniquely named directory under the system temp dir, removed on drop (tests only).
#[cfg(test)]
pub(crate) struct TestDir(PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kaskade-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Owned node ids from string literals (tests only).
#[cfg(test)]
pub(crate) fn node_ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::node_ids as ids;
    use super::*;

    #[test]
    fn creates_ca_and_node_files() {
        let dir = TestDir::new("certs-create");
        let files = generate(dir.path(), &ids(&["a", "node_b-2"])).expect("generate");
        assert!(!files.ca_reused);
        assert_eq!(files.ca_cert, dir.path().join("ca.pem"));
        assert_eq!(files.ca_key, dir.path().join("ca.key"));
        assert_eq!(files.nodes.len(), 2);
        for (node, id) in files.nodes.iter().zip(["a", "node_b-2"]) {
            assert_eq!(node.node_id, id);
            assert_eq!(node.cert, dir.path().join(format!("{id}.pem")));
            assert_eq!(node.key, dir.path().join(format!("{id}.key")));
            let cert = CertificateDer::from_pem_file(&node.cert).expect("leaf pem");
            let key = fs::read_to_string(&node.key).expect("key");
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
            let ca = CertificateDer::from_pem_file(&files.ca_cert).expect("ca pem");
            check_issued_by(&cert, &ca).expect("leaf chains to CA");
            let ee = webpki::EndEntityCert::try_from(&cert).expect("parse leaf");
            let name = rustls_pki_types::ServerName::try_from(id).expect("dns name");
            ee.verify_is_valid_for_subject_name(&name)
                .expect("SAN matches node id");
            assert_eq!(ee.valid_dns_names().collect::<Vec<_>>(), vec![id]);
        }
    }

    #[test]
    fn second_call_reuses_ca() {
        let dir = TestDir::new("certs-reuse");
        let first = generate(dir.path(), &ids(&["a"])).expect("first");
        let ca_pem = fs::read(&first.ca_cert).expect("read ca");
        let ca_key = fs::read(&first.ca_key).expect("read ca key");
        let second = generate(dir.path(), &ids(&["b"])).expect("second");
        assert!(second.ca_reused);
        assert_eq!(fs::read(&second.ca_cert).expect("read ca"), ca_pem);
        assert_eq!(fs::read(&second.ca_key).expect("read ca key"), ca_key);
        // The leaf issued by the reloaded CA chains to the original CA certificate.
        let ca = CertificateDer::from_pem_file(&first.ca_cert).expect("ca");
        let b = CertificateDer::from_pem_file(&second.nodes[0].cert).expect("b");
        check_issued_by(&b, &ca).expect("b chains to the reused CA");
    }

    #[test]
    fn rejects_bad_node_ids_before_writing() {
        let dir = TestDir::new("certs-bad");
        let long = "x".repeat(65);
        let max_label = "x".repeat(63);
        for bad in [
            "",
            "a.b",
            "a b",
            "ä",
            "../x",
            "a/b",
            "-a",
            "a-",
            "123",
            "0x1f",
            &long,
            &"y".repeat(64),
        ] {
            let err = generate(dir.path(), &ids(&["ok", bad])).expect_err(bad);
            assert!(
                matches!(&err, CertError::InvalidNodeId { id, .. } if id == bad),
                "{bad:?}: {err}"
            );
        }
        assert!(!dir.path().join("ca.pem").exists(), "nothing written");
        assert!(!dir.path().join("ok.pem").exists(), "nothing written");
        for good in ["a", "A", "n1", "node_1", "_x", "edge-eu-1", &max_label] {
            validate_node_id(good).expect(good);
        }
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TestDir::new("certs-mode");
        // A pre-existing world-readable key file gets tightened too.
        let stale = dir.path().join("b.key");
        fs::write(&stale, "old").expect("write");
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).expect("chmod");
        let files = generate(dir.path(), &ids(&["a", "b"])).expect("generate");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&files.ca_key), 0o600);
        for node in &files.nodes {
            assert_eq!(mode(&node.key), 0o600, "{}", node.key.display());
        }
    }

    #[test]
    fn incomplete_ca_is_an_error() {
        let dir = TestDir::new("certs-incomplete");
        let files = generate(dir.path(), &[]).expect("generate");
        fs::remove_file(&files.ca_key).expect("rm key");
        let err = generate(dir.path(), &ids(&["a"])).expect_err("missing key");
        assert!(matches!(err, CertError::IncompleteCa { .. }), "{err}");
    }

    #[test]
    fn mismatched_ca_key_is_an_error() {
        let one = TestDir::new("certs-mismatch-1");
        let two = TestDir::new("certs-mismatch-2");
        generate(one.path(), &[]).expect("one");
        generate(two.path(), &[]).expect("two");
        fs::copy(two.path().join("ca.key"), one.path().join("ca.key")).expect("copy");
        let err = generate(one.path(), &ids(&["a"])).expect_err("wrong key");
        assert!(matches!(err, CertError::CaUnusable { .. }), "{err}");
        assert!(!one.path().join("a.pem").exists());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
