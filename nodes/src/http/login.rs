//! `POST /api/login`: user id + password (+ tenant; none for operators) in, a short-lived access
//! token out. The answer never says whether an account exists: unknown tenant, unknown user and
//! wrong password are the same 401; only an existing account locked after repeated failures
//! gets 429 with `Retry-After`. The password is never logged; the user id and tenant are. Every
//! attempt is an audit record (with the client's address, kept for the connection-data
//! retention).

use super::AppState;
use super::guard::refusal;
use super::guard::too_many;
use crate::auth::access::{AccessControl, Refusal};
use crate::auth::tokens::AccessRole;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_control::accounts::{AccountRole, LoginError, TenantId, UserId};
use kaskade_control::audit::AuditAction;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use tracing::{info, warn};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The organisation; absent or empty for an operator.
    #[serde(default)]
    tenant: Option<String>,
    user: String,
    password: String,
}

/// The token role of an account role.
pub fn access_role(role: AccountRole) -> AccessRole {
    match role {
        AccountRole::Participant => AccessRole::Participant,
        AccountRole::Host => AccessRole::Host,
        AccountRole::TenantAdmin => AccessRole::TenantAdmin,
        AccountRole::Operator => AccessRole::Operator,
    }
}

fn invalid_credentials() -> Response {
    refusal(Refusal::Unauthenticated(
        LoginError::InvalidCredentials.to_string(),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Response {
    if let Err(limited) = state.limits.login(peer.ip()) {
        return too_many("logins", limited);
    }
    let AccessControl::Enforced(enforcer) = state.access.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            "this node runs without access control (--insecure-dev): no login needed\n",
        )
            .into_response();
    };
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid login request: {e}\n"),
            )
                .into_response();
        }
    };
    let tenant = match request.tenant.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match TenantId::new(t) {
            Ok(t) => Some(t),
            Err(_) => return invalid_credentials(),
        },
    };
    let Ok(user) = UserId::new(request.user.as_str()) else {
        return invalid_credentials();
    };
    let now_ms = crate::auth::tokens::unix_now() * 1000;
    match enforcer
        .accounts
        .login(tenant.as_ref(), &user, &request.password, now_ms)
        .await
    {
        Ok(account) => {
            let role = access_role(account.role);
            let tenant = account.tenant.as_ref().map(|t| t.as_str());
            let (token, claims) =
                enforcer.login_token(account.user.as_str(), tenant, &account.display_name, role);
            info!(user = %account.user, tenant = ?tenant, role = %account.role, "login");
            state.audit(
                tenant,
                account.user.as_str(),
                AuditAction::Login,
                None,
                Some(peer.ip()),
            );
            Json(json!({
                "token": token,
                "expires_at": claims.exp,
                "user": claims.sub,
                "tenant": claims.tenant,
                "name": claims.name,
                "role": claims.role,
                "grants": claims.grants,
            }))
            .into_response()
        }
        Err(LoginError::InvalidCredentials) => {
            warn!(user = %user, tenant = ?tenant.as_ref().map(|t| t.as_str()), "login failed");
            state.audit(
                tenant.as_ref().map(|t| t.as_str()),
                user.as_str(),
                AuditAction::LoginFailed,
                None,
                Some(peer.ip()),
            );
            invalid_credentials()
        }
        Err(LoginError::Locked { until_ms }) => {
            warn!(user = %user, tenant = ?tenant.as_ref().map(|t| t.as_str()), "login refused: account locked");
            state.audit(
                tenant.as_ref().map(|t| t.as_str()),
                user.as_str(),
                AuditAction::LoginLocked,
                None,
                Some(peer.ip()),
            );
            let retry = until_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry.to_string())],
                format!(
                    "{}; try again in {retry} s\n",
                    LoginError::Locked { until_ms }
                ),
            )
                .into_response()
        }
        Err(LoginError::Unavailable(e)) => {
            warn!(error = %e, "login: account directory unavailable");
            refusal(Refusal::Unavailable(
                "accounts cannot be read right now; retry shortly".into(),
            ))
        }
    }
}
