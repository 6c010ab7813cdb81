//! Read-only operations endpoints: health, Prometheus metrics, and the room listing.

use super::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_proto::RoomName;
use serde_json::json;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.refresh_room_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

pub async fn rooms(State(state): State<AppState>) -> Json<serde_json::Value> {
    let rooms: Vec<_> = state
        .rooms
        .list()
        .into_iter()
        .map(|(name, counts)| {
            json!({ "name": name, "participants": counts.members, "tracks": counts.tracks })
        })
        .collect();
    Json(json!({ "node": state.node_id, "rooms": rooms }))
}

pub async fn room(State(state): State<AppState>, Path(room): Path<String>) -> Response {
    let Ok(name) = RoomName::parse(&room) else {
        return (StatusCode::BAD_REQUEST, "invalid room name\n").into_response();
    };
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
