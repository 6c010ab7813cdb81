//! The HTTP side of access control: what a request must present for each kind of endpoint, and
//! the responses when it does not (401 without or with a bad token, 403 when the token is not
//! enough, 404 for a room that does not exist for the caller). Handlers call one function here
//! before doing anything else. The caller's address decides only where the policy says so
//! (loopback scrapers and admin callers in `--insecure-dev`, or without a configured
//! credential); it is checked, never logged.

use super::AppState;
use super::rate_limits::Limited;
use crate::auth::access::{AccessControl, Refusal, bearer, ceiling_of};
use crate::auth::tokens::AccessClaims;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_proto::RoomName;
use kaskade_proto::signal::Role;
use std::net::{IpAddr, SocketAddr};

/// Where a WHIP/WHEP request carries the room's password.
pub const ROOM_PASSWORD_HEADER: &str = "x-kaskade-room-password";

/// What a media request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaNeed {
    Publish,
    Subscribe,
}

/// The response for a refusal.
pub fn refusal(r: Refusal) -> Response {
    let (status, message) = match r {
        Refusal::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, m),
        Refusal::Forbidden(m) => (StatusCode::FORBIDDEN, m),
        Refusal::UnknownRoom => (
            StatusCode::NOT_FOUND,
            "unknown room (or not one of yours)".into(),
        ),
        Refusal::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        Refusal::LimitReached(m) => (StatusCode::FORBIDDEN, m),
        Refusal::Banned => (
            StatusCode::FORBIDDEN,
            "a host removed you from this room for good".into(),
        ),
        Refusal::PasswordRequired(m) => (StatusCode::FORBIDDEN, m),
        Refusal::Locked => (
            StatusCode::FORBIDDEN,
            "the room is locked; a host has to unlock it".into(),
        ),
    };
    let mut response = (status, format!("{message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"kaskade\""),
        );
    }
    response
}

/// 429 with `Retry-After` for a limited request.
pub fn too_many(what: &str, limited: Limited) -> Response {
    let secs = limited.retry_after.as_secs().max(1);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many {what}; try again in {secs} s\n"),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The role ceiling for a WHIP (publish) or WHEP (subscribe) request on `room` from `client`:
/// `None` in `--insecure-dev`. A publisher's token may open the room; a viewer's may not.
#[allow(clippy::result_large_err)]
pub async fn media(
    state: &AppState,
    client: IpAddr,
    headers: &HeaderMap,
    room: &RoomName,
    need: MediaNeed,
) -> Result<Option<Role>, Response> {
    state
        .limits
        .join(client)
        .map_err(|l| too_many("joins", l))?;
    let AccessControl::Enforced(enforcer) = state.access.as_ref() else {
        return Ok(None);
    };
    let claims = state
        .access
        .claims(headers)
        .map_err(refusal)?
        .ok_or_else(|| refusal(Refusal::Unauthenticated("no access token".into())))?;
    let allowed = match need {
        MediaNeed::Publish => claims.grants.publish,
        MediaNeed::Subscribe => claims.grants.subscribe,
    };
    if !allowed {
        return Err(refusal(Refusal::Forbidden(format!(
            "this token does not allow {}",
            match need {
                MediaNeed::Publish => "publishing",
                MediaNeed::Subscribe => "watching",
            }
        ))));
    }
    state
        .limits
        .user_join(&claims.sub)
        .map_err(|l| too_many("joins", l))?;
    let record = enforcer
        .room_access(&claims, room, need == MediaNeed::Publish)
        .await
        .map_err(refusal)?;
    let password = headers
        .get(ROOM_PASSWORD_HEADER)
        .and_then(|v| v.to_str().ok());
    enforcer
        .may_enter(&claims, &record, password)
        .await
        .map_err(refusal)?;
    if record.lobby && ceiling_of(&claims.grants) != Role::Host {
        return Err(refusal(Refusal::Forbidden(
            "the room has a lobby: join from the page and wait for a host".into(),
        )));
    }
    let present = match &state.cluster {
        Some(cluster) => cluster.participants_in(room).await,
        None => state.rooms.counts(room).members,
    };
    enforcer
        .room_has_space(&record, present)
        .await
        .map_err(refusal)?;
    Ok(Some(ceiling_of(&claims.grants)))
}

/// The caller of an administrative listing (`/api/rooms`): an operator or a tenant admin.
/// `Ok(None)` in `--insecure-dev`.
#[allow(clippy::result_large_err)]
pub fn administrator(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<AccessClaims>, Response> {
    let Some(claims) = state.access.claims(headers).map_err(refusal)? else {
        return Ok(None);
    };
    if !claims.grants.admin {
        return Err(refusal(Refusal::Forbidden(
            "only operators and tenant admins may do this".into(),
        )));
    }
    Ok(Some(claims))
}

/// Who calls an admin endpoint (`/admin/…`, `/api/admin/…`).
#[derive(Debug, Clone)]
pub enum AdminCaller {
    /// The node's `--admin-token`, an operator's access token, or (in `--insecure-dev` without
    /// an admin token) a loopback caller: everything.
    Operator { actor: String },
    /// A tenant admin's access token: that tenant's rooms only.
    TenantAdmin(AccessClaims),
}

impl AdminCaller {
    /// Who acted, for the audit log.
    pub fn actor(&self) -> &str {
        match self {
            AdminCaller::Operator { actor } => actor,
            AdminCaller::TenantAdmin(c) => &c.sub,
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, AdminCaller::Operator { .. })
    }
}

/// The caller of an admin endpoint, or the refusal (401 without a credential that works, 403
/// for a token without the admin grant).
pub fn admin_caller(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<AdminCaller, Refusal> {
    let configured = state.admin.as_ref().and_then(|a| a.token.as_deref());
    let presented = bearer(headers);
    if let (Some(token), Some(p)) = (configured, presented)
        && same_secret(p, token)
    {
        return Ok(AdminCaller::Operator {
            actor: "admin-token".to_owned(),
        });
    }
    match state.access.as_ref() {
        AccessControl::Enforced(_) => {
            let claims = state
                .access
                .claims(headers)?
                .ok_or_else(|| Refusal::Unauthenticated("no access token".into()))?;
            if claims.is_operator() {
                Ok(AdminCaller::Operator { actor: claims.sub })
            } else if claims.grants.admin {
                Ok(AdminCaller::TenantAdmin(claims))
            } else {
                Err(Refusal::Forbidden(
                    "only operators and tenant admins may do this".into(),
                ))
            }
        }
        AccessControl::Open if configured.is_none() && peer.ip().is_loopback() => {
            Ok(AdminCaller::Operator {
                actor: "loopback".to_owned(),
            })
        }
        AccessControl::Open => Err(Refusal::Unauthenticated(
            "admin endpoints need the node's admin token (or a loopback caller when none is set)"
                .into(),
        )),
    }
}

/// `/metrics`: the scrape credential when one is configured; otherwise loopback scrapers only
/// (in `--insecure-dev` too, unless the node is bound to loopback anyway).
#[allow(clippy::result_large_err)]
pub fn scraper(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Response> {
    let configured = match state.access.as_ref() {
        AccessControl::Open => None,
        AccessControl::Enforced(e) => e.metrics_token.as_deref(),
    };
    let ok = match configured {
        Some(token) => bearer(headers).is_some_and(|p| same_secret(p, token)),
        None => peer.ip().is_loopback(),
    };
    if ok {
        Ok(())
    } else {
        Err(refusal(Refusal::Unauthenticated(
            "metrics need the node's scrape token (or a loopback scraper when none is set)".into(),
        )))
    }
}

/// Compares a presented secret with the configured one in constant time.
pub fn same_secret(presented: &str, configured: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.len() == configured.len()
        && bool::from(presented.as_bytes().ct_eq(configured.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_their_status() {
        let r = refusal(Refusal::Unauthenticated("x".into()));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            refusal(Refusal::Forbidden("x".into())).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            refusal(Refusal::UnknownRoom).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }
}
