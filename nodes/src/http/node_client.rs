//! A small HTTP(S) client for one node calling another's admin endpoints: `kaskade drain`, and
//! the admin API forwarding a drain, an end of room or a removal to the node that holds it.
//! hyper's own client (already in the tree through axum); HTTPS trusts only the CA given.

use anyhow::Context;
use axum::http::{StatusCode, header};
use http_body_util::{BodyExt, Empty};

/// Marks a request one node forwards to another, which then acts only on itself (no chains).
pub const FORWARDED_HEADER: &str = "x-kaskade-forwarded";

/// How long a call to another node may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends `method url` (no body) with `token` as bearer, marked as forwarded if `forwarded`;
/// returns the status and body text.
pub async fn send(
    method: hyper::Method,
    url: &str,
    token: Option<&str>,
    ca_cert: Option<&std::path::Path>,
    forwarded: bool,
) -> anyhow::Result<(StatusCode, String)> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad node URL {url}"))?;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(uri.clone())
        .header(header::CONTENT_LENGTH, "0");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if forwarded {
        request = request.header(FORWARDED_HEADER, "1");
    }
    let request = request.body(Empty::<bytes::Bytes>::new())?;
    let send = async {
        match uri.scheme_str() {
            Some("http") => {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<Empty<bytes::Bytes>>();
                Ok(client.request(request).await?)
            }
            Some("https") => https_request(&uri, request, ca_cert).await,
            _ => anyhow::bail!("the node's URL must be http or https; got {url}"),
        }
    };
    let response = tokio::time::timeout(TIMEOUT, send)
        .await
        .with_context(|| format!("no answer from {url}"))??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
}

/// One request over HTTPS (HTTP/1.1), trusting the CA certificates in `ca_cert`.
async fn https_request(
    uri: &hyper::Uri,
    mut request: hyper::Request<Empty<bytes::Bytes>>,
    ca_cert: Option<&std::path::Path>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let ca = ca_cert.context(
        "the node's URL is https: give --ca-cert with the CA that signed its certificate",
    )?;
    let config = crate::tls::client_config_trusting(ca)?;
    let host = uri
        .host()
        .context("no host in the node's URL")?
        .trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(443);
    // A bare HTTP/1.1 connection adds no Host header of its own.
    if let Some(authority) = uri.authority() {
        request
            .headers_mut()
            .insert(header::HOST, authority.as_str().parse()?);
    }
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}
