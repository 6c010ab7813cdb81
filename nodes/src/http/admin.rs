//! Admin endpoints: `POST /admin/drain` starts a maintenance drain, `GET /admin/status` tells
//! whether the node is draining and what it holds. They answer callers that present the node's
//! `--admin-token` as a bearer token or (with access control) an operator's access token; in
//! `--insecure-dev` without a configured token, loopback callers.
//! The caller's address is checked, never logged. Also the client side `kaskade drain` uses.

use super::AppState;
use super::guard::same_secret;
use crate::auth::access::{AccessControl, bearer};
use anyhow::Context;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty};
use serde_json::json;
use std::net::SocketAddr;
use tracing::{info, warn};

fn authorized(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let presented = bearer(headers);
    if let Some(token) = state.admin.as_ref().and_then(|a| a.token.as_deref())
        && presented.is_some_and(|p| same_secret(p, token))
    {
        return true;
    }
    match state.access.as_ref() {
        // With access control, an operator's access token also administers the node.
        AccessControl::Enforced(_) => state
            .access
            .claims(headers)
            .ok()
            .flatten()
            .is_some_and(|c| c.is_operator()),
        AccessControl::Open => {
            state
                .admin
                .as_ref()
                .and_then(|a| a.token.as_deref())
                .is_none()
                && peer.ip().is_loopback()
        }
    }
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "admin endpoints need the node's admin token (or a loopback caller when none is set)\n",
    )
        .into_response()
}

pub async fn drain(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, peer, &headers) {
        warn!(node = %state.node_id, "admin drain refused: not authorized");
        return refused();
    }
    let (Some(cluster), Some(admin)) = (&state.cluster, &state.admin) else {
        return (StatusCode::NOT_FOUND, "this node has no control plane\n").into_response();
    };
    let started = crate::cluster::drain::start(
        cluster.clone(),
        state.engine.clone(),
        admin.drain_deadline,
        admin.drained.clone(),
    );
    info!(node = %state.node_id, started, "drain requested through the admin endpoint");
    if started {
        let actor = match state.access.claims(&headers) {
            Ok(Some(c)) => c.sub,
            _ => "admin-token".to_owned(),
        };
        state.audit(
            None,
            &actor,
            kaskade_control::audit::AuditAction::Drain,
            Some(&state.node_id),
            Some(peer.ip()),
        );
    }
    let status = if started {
        "draining"
    } else {
        "already draining"
    };
    (
        StatusCode::ACCEPTED,
        Json(json!({ "node": state.node_id, "status": status })),
    )
        .into_response()
}

pub async fn status(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, peer, &headers) {
        return refused();
    }
    let stats = state.engine.stats().await;
    let (draining, site, control) = match &state.cluster {
        Some(c) => (c.is_draining(), c.site.clone(), c.control.kind()),
        None => (false, String::new(), "none"),
    };
    let view = state.cluster.as_ref().map(|c| c.view());
    Json(json!({
        "node": state.node_id,
        "site": site,
        "control_plane": control,
        "control_plane_reachable": view.as_ref().is_none_or(|v| v.reachable),
        "live_nodes": view.map(|v| v.nodes.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        "draining": draining,
        "sessions": stats.sessions,
        "rooms": state.rooms.list().len(),
    }))
    .into_response()
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

/// Asks the node at `base_url` to drain (what `kaskade drain` does); returns its answer.
pub async fn request_drain(
    base_url: &str,
    node: &str,
    token: Option<&str>,
    ca_cert: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let url = format!("{}/admin/drain", base_url.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad node URL {url}"))?;
    let mut request = hyper::Request::post(uri.clone()).header(header::CONTENT_LENGTH, "0");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
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
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), send)
        .await
        .with_context(|| format!("node {node} did not answer at {url}"))?
        .with_context(|| format!("reaching node {node} at {url}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    if !status.is_success() {
        anyhow::bail!("node {node} refused the drain ({status}): {body}");
    }
    Ok(body)
}
