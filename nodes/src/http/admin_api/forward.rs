//! Forwarding an admin request to the node that must act (a drain of another node, the end of
//! a room or a removal on the nodes holding its participants): same method and path on that
//! node's HTTP URL from the registry, the caller's own bearer credential, marked as forwarded
//! so the receiving node acts only on itself. An operator's access token is good on every node
//! of the mesh; an `--admin-token` only where it is configured.

use super::error::ApiError;
use crate::auth::access::bearer;
use crate::http::AppState;
use crate::http::node_client::{self, FORWARDED_HEADER};
use axum::http::{HeaderMap, StatusCode};
use kaskade_control::NodeRecord;
use tracing::warn;

/// Whether this request came from another node (then it must not travel further).
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

/// The live node `node`, to forward to; refused for a request that was forwarded already.
pub fn live_node(
    state: &AppState,
    headers: &HeaderMap,
    node: &str,
) -> Result<NodeRecord, ApiError> {
    let unknown = || ApiError::not_found(format!("no live node {node} in the mesh"));
    if is_forwarded(headers) {
        return Err(unknown());
    }
    let cluster = state.cluster.as_ref().ok_or_else(unknown)?;
    let record = cluster
        .view()
        .nodes
        .get(node)
        .cloned()
        .ok_or_else(unknown)?;
    if record.http_url.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("node {node} has no HTTP endpoint in the registry"),
        ));
    }
    Ok(record)
}

/// Calls `path` (relative, no leading slash) on `target` and returns its JSON answer; its
/// refusal comes back with its status, an unreachable node as 502.
pub async fn call(
    state: &AppState,
    headers: &HeaderMap,
    target: &NodeRecord,
    method: hyper::Method,
    path: &str,
) -> Result<serde_json::Value, ApiError> {
    let url = format!("{}/{path}", target.http_url.trim_end_matches('/'));
    let ca = state.admin.as_ref().and_then(|a| a.forward_ca.as_deref());
    let (status, body) = node_client::send(method, &url, bearer(headers), ca, true)
        .await
        .map_err(|e| {
            warn!(node = %state.node_id, to = %target.id, error = %e, "forwarding an admin request failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("node {} could not be reached: {e}", target.id),
            )
        })?;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    if status.is_success() {
        Ok(json)
    } else {
        let message = json["error"].as_str().map_or(body.clone(), str::to_owned);
        Err(ApiError::new(
            status,
            format!("node {}: {message}", target.id),
        ))
    }
}
