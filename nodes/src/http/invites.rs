//! `POST /api/rooms/{room}/invites`: a host (anyone whose token has the moderate grant, in the
//! room's tenant) mints a guest invite — an access token scoped to that one room and a time
//! window, watch-only unless the host lets guests speak — and gets the link to hand out
//! (`<node URL>/?room=R&token=T`). Guests choose their own display name.

use super::AppState;
use super::guard::refusal;
use crate::auth::access::{AccessControl, Refusal};
use crate::auth::tokens::{AccessRole, Grants, MAX_INVITE_WINDOW, TokenRequest, unix_now};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kaskade_control::audit::AuditAction;
use kaskade_proto::RoomName;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

/// Default validity of an invite.
const DEFAULT_INVITE_SECS: u64 = 24 * 3600;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Valid from (unix seconds); default now.
    #[serde(default)]
    valid_from: Option<u64>,
    /// How long from `valid_from`; default a day, at most a week.
    #[serde(default)]
    valid_for_secs: Option<u64>,
    /// Guests may publish (speaker); default watch only (audience).
    #[serde(default)]
    may_publish: bool,
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", message.into())).into_response()
}

pub async fn create(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let AccessControl::Enforced(enforcer) = state.access.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            "this node runs without access control (--insecure-dev): anyone may join, no invite needed\n",
        )
            .into_response();
    };
    let claims = match state.access.claims(&headers) {
        Ok(Some(c)) => c,
        Ok(None) => return refusal(Refusal::Unauthenticated("no access token".into())),
        Err(r) => return refusal(r),
    };
    let Ok(room) = RoomName::parse(&room) else {
        return bad_request("invalid room name");
    };
    if !claims.grants.moderate || claims.role == AccessRole::Guest {
        return refusal(Refusal::Forbidden("only hosts may invite".into()));
    }
    let record = match enforcer.room_access(&claims, &room, false).await {
        Ok(record) => record,
        Err(r) => return refusal(r),
    };
    // An empty body takes every default.
    let request: InviteRequest = if body.is_empty() {
        InviteRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("invalid invite request: {e}")),
        }
    };
    let now = unix_now();
    let from = request.valid_from.unwrap_or(now);
    let window = request.valid_for_secs.unwrap_or(DEFAULT_INVITE_SECS);
    if window == 0 || window > MAX_INVITE_WINDOW.as_secs() {
        return bad_request(format!(
            "valid_for_secs must be 1..={}",
            MAX_INVITE_WINDOW.as_secs()
        ));
    }
    if from > now + MAX_INVITE_WINDOW.as_secs() {
        return bad_request("valid_from is more than a week away");
    }
    let expires = from.saturating_add(window);
    if expires <= now {
        return bad_request("the invite would already have expired");
    }
    let tenant = record.tenant;
    let grants = Grants {
        publish: request.may_publish,
        ..Grants::of_role(AccessRole::Guest)
    };
    let (token, invite) = enforcer.tokens.issue(
        TokenRequest {
            user: format!("guest-{:012x}", rand::random::<u64>() >> 16),
            tenant: Some(tenant),
            name: "Guest".into(),
            role: AccessRole::Guest,
            room: Some(room.to_string()),
            grants,
            not_before: from,
            expires,
        },
        now,
    );
    info!(room = %room, by = %claims.sub, invite = %invite.jti, may_publish = request.may_publish, expires, "invite issued");
    if let Some(audit) = &state.audit {
        audit.record_with(
            invite.tenant.as_deref(),
            &claims.sub,
            AuditAction::InviteIssued,
            Some(room.as_str()),
            Some(format!(
                "invite {} until {expires}, may_publish {}",
                invite.jti, request.may_publish
            )),
            None,
        );
    }
    let base = state
        .cluster
        .as_ref()
        .map(|c| c.record().http_url)
        .unwrap_or_default();
    let url = format!("{}/?room={room}&token={token}", base.trim_end_matches('/'));
    (
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "url": url,
            "room": room,
            "valid_from": from,
            "expires_at": expires,
            "may_publish": request.may_publish,
        })),
    )
        .into_response()
}
