//! Admin endpoints: `POST /admin/drain` starts a maintenance drain, `GET /admin/status` tells
//! whether the node is draining and what it holds. They answer callers that present the node's
//! `--admin-token` as a bearer token or (with access control) an operator's access token; in
//! `--insecure-dev` without a configured token, loopback callers.
//! The caller's address is checked, never logged. Also the client side `kaskade drain` uses.
//! The fuller admin API (mesh, rooms, drain of any node) is [`super::admin_api`].

use super::AppState;
use super::node_client;
use anyhow::Context;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use tracing::{info, warn};

fn authorized(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    super::guard::admin_caller(state, peer, headers).is_ok_and(|c| c.is_operator())
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
    let caller = match super::guard::admin_caller(&state, peer, &headers) {
        Ok(c) if c.is_operator() => c,
        _ => {
            warn!(node = %state.node_id, "admin drain refused: not authorized");
            return refused();
        }
    };
    match start_drain(&state, caller.actor(), peer) {
        Some(started) => {
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
        None => (
            StatusCode::NOT_FOUND,
            "this node has no control plane
",
        )
            .into_response(),
    }
}

/// Starts this node's drain for `actor` (audited with the caller's address); `Some(false)` if
/// it drains already, `None` without a control plane.
pub fn start_drain(state: &AppState, actor: &str, peer: SocketAddr) -> Option<bool> {
    let (Some(cluster), Some(admin)) = (&state.cluster, &state.admin) else {
        return None;
    };
    let started = crate::cluster::drain::start(
        cluster.clone(),
        state.engine.clone(),
        admin.drain_deadline,
        admin.drained.clone(),
    );
    info!(node = %state.node_id, actor, started, "drain requested through the admin API");
    if started {
        state.audit(
            None,
            actor,
            kaskade_control::audit::AuditAction::Drain,
            Some(&state.node_id),
            Some(peer.ip()),
        );
    }
    Some(started)
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

/// Asks the node at `base_url` to drain (what `kaskade drain` does); returns its answer.
pub async fn request_drain(
    base_url: &str,
    node: &str,
    token: Option<&str>,
    ca_cert: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let url = format!("{}/admin/drain", base_url.trim_end_matches('/'));
    let (status, body) = node_client::send(hyper::Method::POST, &url, token, ca_cert, false)
        .await
        .with_context(|| format!("reaching node {node} at {url}"))?;
    if !status.is_success() {
        anyhow::bail!("node {node} refused the drain ({status}): {body}");
    }
    Ok(body)
}
