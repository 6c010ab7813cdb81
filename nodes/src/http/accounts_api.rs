//! The accounts API, for the web (the CLI does the same on the store directly):
//!
//! - `GET /api/tenants`, `POST /api/tenants` `{id, name, max_rooms?, max_participants?}`,
//!   `DELETE /api/tenants/{tenant}` (deletes its accounts, rooms and audit records): operators;
//! - `GET /api/tenants/{tenant}/users`, `POST …/users` `{user, name?, role, password}`,
//!   `DELETE …/users/{user}`, `POST …/users/{user}/unlock`: the tenant's admins and operators.
//!   Tenant admins grant roles up to their own; operator accounts are made with the CLI only.
//!
//! Every change is an audit record. Answers never contain password hashes.

use super::AppState;
use super::guard::refusal;
use crate::auth::access::{AccessControl, Enforcer, Refusal};
use crate::auth::tokens::AccessClaims;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kaskade_control::accounts::{
    Account, AccountRole, DirectoryError, TenantId, TenantLimits, UserId,
};
use kaskade_control::audit::AuditAction;
use kaskade_control::room_records::{delete_room, rooms_of};
use kaskade_proto::RoomName;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// The enforcer and the caller's claims, or the refusal.
#[allow(clippy::result_large_err)]
fn caller<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<(&'a Enforcer, AccessClaims), Response> {
    let AccessControl::Enforced(enforcer) = state.access.as_ref() else {
        return Err(text(
            StatusCode::NOT_FOUND,
            "this node runs without access control (--insecure-dev): there are no accounts",
        ));
    };
    match state.access.claims(headers) {
        Ok(Some(claims)) => Ok((enforcer, claims)),
        Ok(None) => Err(refusal(Refusal::Unauthenticated("no access token".into()))),
        Err(r) => Err(refusal(r)),
    }
}

#[allow(clippy::result_large_err)]
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
}

#[allow(clippy::result_large_err)]
fn tenant_id(raw: &str) -> Result<TenantId, Response> {
    TenantId::new(raw).map_err(|e| text(StatusCode::BAD_REQUEST, format!("tenant id: {e}")))
}

fn directory_error(e: DirectoryError) -> Response {
    match e {
        DirectoryError::TenantExists(_) | DirectoryError::AccountExists(_) => {
            text(StatusCode::CONFLICT, e.to_string())
        }
        DirectoryError::UnknownTenant(_) | DirectoryError::UnknownAccount(_) => {
            text(StatusCode::NOT_FOUND, e.to_string())
        }
        DirectoryError::Control(ref c) => {
            warn!(error = %c, "accounts API: store unavailable");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "accounts cannot be changed right now",
            )
        }
        DirectoryError::Hashing(_) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        other => text(StatusCode::BAD_REQUEST, other.to_string()),
    }
}

fn forbidden(message: &str) -> Response {
    refusal(Refusal::Forbidden(message.into()))
}

fn account_json(a: &Account, now_ms: u64) -> Value {
    json!({
        "user": a.user,
        "tenant": a.tenant,
        "name": a.display_name,
        "role": a.role,
        "locked": a.attempts.is_locked(now_ms),
        "created_at_ms": a.created_at_ms,
    })
}

fn role_named(name: &str) -> Option<AccountRole> {
    Some(match name {
        "participant" => AccountRole::Participant,
        "host" => AccountRole::Host,
        "tenant_admin" => AccountRole::TenantAdmin,
        "operator" => AccountRole::Operator,
        _ => return None,
    })
}

pub async fn list_tenants(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (enforcer, claims) = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !claims.is_operator() {
        return forbidden("only operators list tenants");
    }
    match enforcer.accounts.list_tenants().await {
        Ok(tenants) => Json(json!({ "tenants": tenants })).into_response(),
        Err(e) => directory_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    name: String,
    #[serde(default)]
    max_rooms: Option<u32>,
    #[serde(default)]
    max_participants: Option<u32>,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let (enforcer, claims) = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !claims.is_operator() {
        return forbidden("only operators create tenants");
    }
    let request: NewTenant = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let id = match tenant_id(&request.id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let defaults = TenantLimits::default();
    let limits = TenantLimits {
        max_rooms: request.max_rooms.unwrap_or(defaults.max_rooms),
        max_participants_per_room: request
            .max_participants
            .unwrap_or(defaults.max_participants_per_room),
    };
    match enforcer
        .accounts
        .create_tenant(id, &request.name, limits, crate::audit::now_ms())
        .await
    {
        Ok(tenant) => {
            state.audit(
                None,
                &claims.sub,
                AuditAction::TenantCreated,
                Some(tenant.id.as_str()),
                None,
            );
            (StatusCode::CREATED, Json(json!(tenant))).into_response()
        }
        Err(e) => directory_error(e),
    }
}

pub async fn delete_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    let (enforcer, claims) = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !claims.is_operator() {
        return forbidden("only operators delete tenants");
    }
    let id = match tenant_id(&tenant) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match enforcer.accounts.delete_tenant(&id).await {
        Ok(true) => {}
        Ok(false) => return text(StatusCode::NOT_FOUND, format!("there is no tenant {id}")),
        Err(e) => return directory_error(e),
    }
    // Deleting a tenant deletes its data: rooms and audit records too.
    if let Ok(rooms) = rooms_of(enforcer.control.as_ref(), id.as_str()).await {
        for (name, _) in rooms {
            if let Ok(room) = RoomName::parse(&name) {
                let _ = delete_room(enforcer.control.as_ref(), &room).await;
            }
        }
    }
    if let Some(audit) = &state.audit {
        let _ = audit.log.delete_tenant(id.as_str()).await;
    }
    state.audit(
        None,
        &claims.sub,
        AuditAction::TenantDeleted,
        Some(id.as_str()),
        None,
    );
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /api/rooms/{room}`: forgets a room's record — its tenant, password, bans, lock and
/// lobby (deleting a room deletes its data). For the tenant's hosts and admins and operators;
/// anyone still in the room stays until they leave, and the next join opens it afresh.
pub async fn delete_room_record(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Response {
    let (enforcer, claims) = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(room) = RoomName::parse(&room) else {
        return text(StatusCode::BAD_REQUEST, "invalid room name");
    };
    if !claims.grants.moderate || claims.room.is_some() {
        return forbidden("only hosts, tenant admins and operators delete rooms");
    }
    let record = match enforcer.room_access(&claims, &room, false).await {
        Ok(record) => record,
        Err(r) => return refusal(r),
    };
    match delete_room(enforcer.control.as_ref(), &room).await {
        Ok(_) => {
            state.audit(
                Some(&record.tenant),
                &claims.sub,
                AuditAction::RoomDeleted,
                Some(room.as_str()),
                None,
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            warn!(room = %room, error = %e, "deleting a room failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the room cannot be deleted right now",
            )
        }
    }
}

/// The enforcer, the caller and the tenant of the path, if the caller administers it.
#[allow(clippy::result_large_err)]
fn tenant_admin<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<(&'a Enforcer, AccessClaims, TenantId), Response> {
    let (enforcer, claims) = caller(state, headers)?;
    let id = administered(&claims, tenant)?;
    Ok((enforcer, claims, id))
}

/// The tenant of the path, if the caller administers it.
#[allow(clippy::result_large_err)]
fn administered(claims: &AccessClaims, tenant: &str) -> Result<TenantId, Response> {
    let id = tenant_id(tenant)?;
    if !claims.administers(id.as_str()) {
        return Err(forbidden(
            "only this tenant's admins (and operators) manage its accounts",
        ));
    }
    Ok(id)
}

pub async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    let (enforcer, _, id) = match tenant_admin(&state, &headers, &tenant) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = crate::audit::now_ms();
    match enforcer.accounts.list_accounts(Some(&id)).await {
        Ok(accounts) => {
            let users: Vec<Value> = accounts.iter().map(|a| account_json(a, now)).collect();
            Json(json!({ "tenant": id, "users": users })).into_response()
        }
        Err(e) => directory_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    user: String,
    #[serde(default)]
    name: Option<String>,
    role: String,
    password: String,
}

pub async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    bytes: Bytes,
) -> Response {
    let (enforcer, claims, id) = match tenant_admin(&state, &headers, &tenant) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let request: NewUser = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(role) = role_named(&request.role) else {
        return text(
            StatusCode::BAD_REQUEST,
            "role must be participant, host or tenant_admin",
        );
    };
    // Operators live outside tenants (CLI only); tenant admins grant up to their own role.
    if role == AccountRole::Operator {
        return text(StatusCode::BAD_REQUEST, "operators belong to no tenant");
    }
    let user = match UserId::new(request.user.as_str()) {
        Ok(u) => u,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("user id: {e}")),
    };
    let name = request.name.unwrap_or_else(|| user.to_string());
    match enforcer
        .accounts
        .create_account(
            Some(&id),
            user,
            &name,
            role,
            &request.password,
            crate::audit::now_ms(),
        )
        .await
    {
        Ok(account) => {
            state.audit(
                Some(id.as_str()),
                &claims.sub,
                AuditAction::AccountCreated,
                Some(account.user.as_str()),
                None,
            );
            (
                StatusCode::CREATED,
                Json(account_json(&account, crate::audit::now_ms())),
            )
                .into_response()
        }
        Err(e) => directory_error(e),
    }
}

pub async fn delete_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, user)): Path<(String, String)>,
) -> Response {
    let (enforcer, claims, id) = match tenant_admin(&state, &headers, &tenant) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(user) = UserId::new(user.as_str()) else {
        return text(StatusCode::BAD_REQUEST, "invalid user id");
    };
    match enforcer.accounts.delete_account(Some(&id), &user).await {
        Ok(true) => {
            state.audit(
                Some(id.as_str()),
                &claims.sub,
                AuditAction::AccountDeleted,
                Some(user.as_str()),
                None,
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => text(StatusCode::NOT_FOUND, format!("there is no account {user}")),
        Err(e) => directory_error(e),
    }
}

pub async fn unlock_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, user)): Path<(String, String)>,
) -> Response {
    let (enforcer, _, id) = match tenant_admin(&state, &headers, &tenant) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(user) = UserId::new(user.as_str()) else {
        return text(StatusCode::BAD_REQUEST, "invalid user id");
    };
    match enforcer.accounts.unlock(Some(&id), &user).await {
        Ok(account) => Json(account_json(&account, crate::audit::now_ms())).into_response(),
        Err(e) => directory_error(e),
    }
}
