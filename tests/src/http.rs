//! Owns: a minimal blocking HTTP/1.1 client for the end-to-end tests (`http://` on loopback, and
//! `https://` with a [`TlsClient`]; one request per connection), and [`Stream`], the plain or
//! TLS connection it and the WebSocket client (`ws.rs`) run on. Hand-written rather than a crate
//! so that tests can send deliberately oversized bodies and still read a server's early `413`
//! reply.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Per-request connect/read/write timeout.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "response is not JSON ({e}): {:?}",
                truncate(&self.text(), 300)
            )
        })
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Splits `http://host:port/path?q` (or `https://…`) into (socket address, host header,
/// path-and-query).
pub fn split_url(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| anyhow::anyhow!("only http:// and https:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("bad authority {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address for {authority}"))?;
    Ok((addr, authority.to_owned(), path.to_owned()))
}

/// Sends one request and reads the whole response (`Connection: close`). An error while writing
/// the body (the server may answer early, e.g. 413, and close) is ignored if a response follows.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    request_on(None, method, url, headers, body)
}

/// [`request`] to an `https://` URL, with `tls` deciding which server certificates to accept.
pub fn request_tls(
    tls: &TlsClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    request_on(Some(tls), method, url, headers, body)
}

/// `GET` an `https://` URL.
pub fn get_tls(tls: &TlsClient, url: &str) -> anyhow::Result<Response> {
    request_tls(tls, "GET", url, &[], &[])
}

/// [`request`] over TLS when `tls` is given (the URL must then be `https://`), plain otherwise.
pub fn request_on(
    tls: Option<&TlsClient>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    anyhow::ensure!(
        tls.is_some() == url.starts_with("https://"),
        "{url}: https:// URLs need a TlsClient, http:// URLs none"
    );
    let (addr, host, path) = split_url(url)?;
    let mut stream = Stream::connect(addr, &host, tls, TIMEOUT)
        .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let write = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .and_then(|_| stream.flush());
    let write_error = write.err();

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(done) = complete_response(&raw) {
                    raw.truncate(done);
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if complete_response(&raw).is_some() || (!raw.is_empty() && is_reset(&e)) => {
                break;
            }
            Err(e) => {
                anyhow::bail!(
                    "{method} {url}: reading the response failed: {e} (write error: {write_error:?})"
                )
            }
        }
    }
    parse_response(&raw).map_err(|e| {
        anyhow::anyhow!(
            "{method} {url}: {e} (write error: {write_error:?}, {} bytes read)",
            raw.len()
        )
    })
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
}

/// Which server certificates an HTTPS or WSS client accepts (rustls with the ring provider).
pub type TlsClient = Arc<ClientConfig>;

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts the CA certificate(s) in `ca_pem` only.
pub fn tls_trusting(ca_pem: &[u8]) -> anyhow::Result<TlsClient> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "no CA certificate in the PEM");
    Ok(Arc::new(
        ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A client that accepts any server certificate (tests of self-signed servers only). Handshake
/// signatures are still checked.
pub fn tls_without_verification() -> TlsClient {
    let provider = ring();
    Arc::new(
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client connection to a test server: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Connects to `addr` (with `timeout` for connect, reads and writes); with `tls`, also
    /// completes the TLS handshake for the host of `authority` (`host[:port]`), so that a refused
    /// certificate fails here.
    pub fn connect(
        addr: SocketAddr,
        authority: &str,
        tls: Option<&TlsClient>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let Some(tls) = tls else {
            return Ok(Self::Plain(tcp));
        };
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| anyhow::anyhow!("bad TLS server name {host:?}: {e}"))?;
        let mut conn = ClientConnection::new(tls.clone(), name)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| anyhow::anyhow!("TLS handshake: {e}"))?;
        }
        Ok(Self::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    /// The ALPN protocol the server chose (TLS only).
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.conn.alpn_protocol().map(<[u8]>::to_vec),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

pub fn get(url: &str) -> anyhow::Result<Response> {
    request("GET", url, &[], &[])
}

/// `GET url`, presenting `token` (if any) as `Authorization: Bearer`.
pub fn get_with_bearer(url: &str, token: Option<&str>) -> anyhow::Result<Response> {
    request_with_bearer("GET", url, token, &[], &[])
}

/// `request`, with `Authorization: Bearer token` added when `token` is given.
pub fn request_with_bearer(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut all = headers.to_vec();
    if let Some(b) = bearer.as_deref() {
        all.push(("Authorization", b));
    }
    request(method, url, &all, body)
}

pub fn delete(url: &str) -> anyhow::Result<Response> {
    request("DELETE", url, &[], &[])
}

pub fn post(url: &str, content_type: &str, body: &[u8]) -> anyhow::Result<Response> {
    request("POST", url, &[("Content-Type", content_type)], body)
}

/// Length of a complete response at the start of `raw`, if it is complete.
fn complete_response(raw: &[u8]) -> Option<usize> {
    let head_end = find(raw, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut content_length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                content_length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(head_end);
    }
    if chunked {
        let (_, used) = dechunk(&raw[head_end..])?;
        return Some(head_end + used);
    }
    let len = content_length?;
    (raw.len() >= head_end + len).then_some(head_end + len)
}

/// Decodes a complete chunked body; `None` while incomplete. Returns (body, bytes consumed).
fn dechunk(mut data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = data.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            let end = find(data, b"\r\n")?;
            if end == 0 {
                data = &data[2..];
            } else {
                let end = find(data, b"\r\n\r\n")?;
                data = &data[end + 4..];
            }
            return Some((body, total - data.len()));
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let head_end =
        find(raw, b"\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no complete response head"))? + 4;
    let head = std::str::from_utf8(&raw[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    let mut chunked = false;
    let mut content_length = None;
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_owned();
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
            if k == "content-length" {
                content_length = v.parse::<usize>().ok();
            }
            headers.push((k, v));
        }
    }
    let rest = &raw[head_end..];
    let body = if chunked {
        dechunk(rest)
            .map(|(b, _)| b)
            .ok_or_else(|| anyhow::anyhow!("truncated chunked body"))?
    } else if let Some(n) = content_length {
        anyhow::ensure!(
            rest.len() >= n,
            "body truncated: {} of {n} bytes",
            rest.len()
        );
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let raw = b"HTTP/1.1 201 Created\r\nLocation: /sessions/x\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(complete_response(raw), Some(raw.len()));
        let r = parse_response(raw).unwrap();
        assert_eq!(
            (r.status, r.header("location"), r.text().as_str()),
            (201, Some("/sessions/x"), "abc")
        );

        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(complete_response(raw), Some(raw.len()));
        assert_eq!(parse_response(raw).unwrap().text(), "abcde");
        assert_eq!(complete_response(&raw[..raw.len() - 3]), None);
    }

    #[test]
    fn talks_to_a_loopback_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while find(&got, b"hello").is_none() {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let r = post(
            &format!("http://{addr}/whip/r"),
            "application/sdp",
            b"hello",
        )
        .unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(r.text(), "too big!");
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /whip/r HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Content-Type: application/sdp"), "{req}");
    }
}
