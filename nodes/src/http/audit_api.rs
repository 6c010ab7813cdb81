//! `GET /api/audit?from=MS&to=MS[&tenant=T]`: the audit log as JSON lines
//! (`application/x-ndjson`, one record per line, oldest first) — the query and the export in
//! one. Tenant admins read their own tenant's records; operators any tenant's, or every scope
//! without `tenant`.

use super::AppState;
use super::guard::{self, refusal};
use crate::auth::access::Refusal;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_control::audit::to_json_lines;
use serde::Deserialize;
use tracing::warn;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    tenant: Option<String>,
}

pub async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let caller = match guard::administrator(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(audit) = &state.audit else {
        return (StatusCode::NOT_FOUND, "this node keeps no audit log\n").into_response();
    };
    let (from, to) = (q.from.unwrap_or(0), q.to.unwrap_or(u64::MAX));
    // In --insecure-dev there is no caller: everything is visible, as every other listing.
    let operator = caller.as_ref().is_none_or(|c| c.is_operator());
    let tenant = match (&q.tenant, &caller) {
        (Some(t), Some(c)) if !c.administers(t) => {
            return refusal(Refusal::Forbidden(
                "tenant admins read their own tenant's audit log only".into(),
            ));
        }
        (Some(t), _) => Some(t.clone()),
        (None, Some(c)) if !operator => c.tenant.clone(),
        (None, _) => None,
    };
    let records = match &tenant {
        Some(t) => audit.log.query(Some(t), from, to).await,
        None => audit.log.query_all(from, to).await,
    };
    match records {
        Ok(records) => (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            to_json_lines(&records),
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "audit query failed");
            refusal(Refusal::Unavailable(
                "the audit log cannot be read right now".into(),
            ))
        }
    }
}
