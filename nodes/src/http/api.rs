//! Read-only operations endpoints: health, Prometheus metrics (scrape credential, see
//! `guard::scraper`), and the room listing (operators see every room, tenant admins their
//! tenant's; open in `--insecure-dev`).

use super::AppState;
use super::guard;
use crate::auth::access::AccessControl;
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_control::room_records::get_room;
use kaskade_proto::RoomName;
use serde_json::json;
use std::net::SocketAddr;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = guard::scraper(&state, peer, &headers) {
        return r;
    }
    state.refresh_room_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Whether the caller may see `room`: always in `--insecure-dev`, else operators, and tenant
/// admins of the room's tenant.
async fn may_see(
    state: &AppState,
    caller: Option<&crate::auth::tokens::AccessClaims>,
    room: &RoomName,
) -> bool {
    let (Some(claims), AccessControl::Enforced(enforcer)) = (caller, state.access.as_ref()) else {
        return true;
    };
    if claims.is_operator() {
        return true;
    }
    match get_room(enforcer.control.as_ref(), room).await {
        Ok(Some(record)) => claims.administers(&record.tenant),
        _ => false,
    }
}

pub async fn rooms(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match guard::administrator(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut rooms = Vec::new();
    for (name, counts) in state.rooms.list() {
        if may_see(&state, caller.as_ref(), &name).await {
            rooms.push(
                json!({ "name": name, "participants": counts.members, "tracks": counts.tracks }),
            );
        }
    }
    Json(json!({ "node": state.node_id, "rooms": rooms })).into_response()
}

pub async fn room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match guard::administrator(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(name) = RoomName::parse(&room) else {
        return (StatusCode::BAD_REQUEST, "invalid room name\n").into_response();
    };
    if !may_see(&state, caller.as_ref(), &name).await {
        return guard::refusal(crate::auth::access::Refusal::UnknownRoom);
    }
    match state.rooms.snapshot(&name).await {
        Some(s) => Json(json!({
            "name": s.name,
            "participants": s.participants,
            "tracks": s.tracks,
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, "unknown room\n").into_response(),
    }
}
