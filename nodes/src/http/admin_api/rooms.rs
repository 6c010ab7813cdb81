//! The rooms of the whole mesh (`GET /api/admin/rooms`, `GET /api/admin/rooms/{room}`, from the
//! control plane's room shares plus this node's fresh part) and what an operator may do to one:
//! end it for everyone (`DELETE /api/admin/rooms/{room}`) or remove one participant
//! (`DELETE /api/admin/rooms/{room}/participants/{id}`). Each node acts on its own members:
//! the node that takes the request acts here and forwards to the others holding the room.
//! Operators see every room; tenant admins their tenant's.

use super::error::{ApiError, ApiErrorBody};
use super::forward;
use crate::auth::access::AccessControl;
use crate::http::AppState;
use crate::http::guard::{AdminCaller, admin_caller};
use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use kaskade_control::audit::AuditAction;
use kaskade_control::room_records::get_room;
use kaskade_control::{ControlPlane, RoomShare};
use kaskade_mesh::RoomMsg;
use kaskade_proto::signal::{MediaKind, Role};
use kaskade_proto::{ParticipantId, RoomName};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tracing::info;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    pub rooms: Vec<RoomSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomSummary {
    pub name: String,
    /// The tenant that owns the room; `null` without access control.
    pub tenant: Option<String>,
    /// The nodes holding a part of it.
    pub nodes: Vec<String>,
    pub participants: usize,
    pub tracks: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDetail {
    pub name: String,
    pub tenant: Option<String>,
    pub participants: Vec<ParticipantView>,
    pub tracks: Vec<TrackView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantView {
    pub id: String,
    pub name: String,
    /// `host`, `speaker` or `audience`.
    pub role: String,
    /// The node it is connected to.
    pub node: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackView {
    pub id: String,
    pub participant: String,
    /// `audio` or `video`.
    pub kind: String,
    pub node: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomActionAnswer {
    pub room: String,
    /// The participant removed, for a removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// `ending` or `removed`.
    pub status: String,
    /// Nodes that acted.
    pub nodes: Vec<String>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Host => "host",
        Role::Speaker => "speaker",
        Role::Audience => "audience",
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// Every node's part of every room (or of `only`): the control plane's shares, with this
/// node's own part taken fresh from its room directory.
async fn shares(
    state: &AppState,
    only: Option<&RoomName>,
) -> Result<BTreeMap<RoomName, Vec<RoomShare>>, ApiError> {
    let mut rooms: BTreeMap<RoomName, Vec<RoomShare>> = BTreeMap::new();
    if let Some(cluster) = &state.cluster {
        let stored = match only {
            Some(room) => cluster
                .control
                .room_shares(room)
                .await
                .map(|s| s.into_iter().map(|share| (room.clone(), share)).collect()),
            None => cluster.control.all_room_shares().await,
        }
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("control plane: {e}"),
            )
        })?;
        for (room, share) in stored {
            if share.node != state.node_id {
                rooms.entry(room).or_default().push(share);
            }
        }
    }
    let local: Vec<RoomName> = match only {
        Some(room) => vec![room.clone()],
        None => state.rooms.names(),
    };
    for room in local {
        if let Some(snapshot) = state.rooms.local_share(&room).await
            && !snapshot.participants.is_empty()
        {
            rooms.entry(room).or_default().push(RoomShare {
                node: state.node_id.clone(),
                participants: snapshot.participants,
                tracks: snapshot.tracks,
            });
        }
    }
    for list in rooms.values_mut() {
        list.sort_by(|a, b| a.node.cmp(&b.node));
    }
    Ok(rooms)
}

/// The room's tenant when access control keeps one; whether `caller` may see and act on it.
async fn tenant_of(
    state: &AppState,
    caller: &AdminCaller,
    room: &RoomName,
) -> Result<(Option<String>, bool), ApiError> {
    let AccessControl::Enforced(enforcer) = state.access.as_ref() else {
        return Ok((None, true));
    };
    let tenant = get_room(enforcer.control.as_ref(), room)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("control plane: {e}"),
            )
        })?
        .map(|r| r.tenant);
    let allowed = match caller {
        AdminCaller::Operator { .. } => true,
        AdminCaller::TenantAdmin(claims) => {
            tenant.as_deref().is_some_and(|t| claims.administers(t))
        }
    };
    Ok((tenant, allowed))
}

/// A room an admin request names, as the caller may see it.
struct NamedRoom {
    caller: AdminCaller,
    name: RoomName,
    tenant: Option<String>,
    /// Every node's part of it (none: the room is empty or gone).
    parts: Vec<RoomShare>,
}

fn unknown_room() -> ApiError {
    ApiError::not_found("unknown room (or not one of yours)")
}

/// The caller and the room `room` (its tenant and parts); 404 for another tenant's room, as
/// for one that does not exist.
async fn named_room(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    room: &str,
) -> Result<NamedRoom, ApiError> {
    let caller = admin_caller(state, peer, headers)?;
    let name = parse_room(room)?;
    let (tenant, allowed) = tenant_of(state, &caller, &name).await?;
    if !allowed {
        return Err(unknown_room());
    }
    let parts = shares(state, Some(&name))
        .await?
        .remove(&name)
        .unwrap_or_default();
    Ok(NamedRoom {
        caller,
        name,
        tenant,
        parts,
    })
}

fn parse_room(room: &str) -> Result<RoomName, ApiError> {
    RoomName::parse(room)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid room name: {e}")))
}

#[utoipa::path(
    get,
    path = "/api/admin/rooms",
    tag = "rooms",
    responses(
        (status = 200, description = "Every room of the mesh the caller may see", body = RoomList),
        (status = 401, description = "No admin credential", body = ApiErrorBody),
        (status = 403, description = "Neither operator nor tenant admin", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<RoomList>, ApiError> {
    let caller = admin_caller(&state, peer, &headers)?;
    let mut rooms = Vec::new();
    for (name, parts) in shares(&state, None).await? {
        let (tenant, allowed) = tenant_of(&state, &caller, &name).await?;
        if !allowed {
            continue;
        }
        rooms.push(RoomSummary {
            name: name.as_str().to_owned(),
            tenant,
            nodes: parts.iter().map(|s| s.node.clone()).collect(),
            participants: parts.iter().map(|s| s.participants.len()).sum(),
            tracks: parts.iter().map(|s| s.tracks.len()).sum(),
        });
    }
    Ok(Json(RoomList { rooms }))
}

#[utoipa::path(
    get,
    path = "/api/admin/rooms/{room}",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 200, description = "The room's participants and tracks, with their nodes", body = RoomDetail),
        (status = 401, description = "No admin credential", body = ApiErrorBody),
        (status = 404, description = "No such room (or not the caller's tenant's)", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn detail(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RoomDetail>, ApiError> {
    let NamedRoom { tenant, parts, .. } = named_room(&state, peer, &headers, &room).await?;
    if parts.is_empty() {
        return Err(unknown_room());
    }
    let mut participants = Vec::new();
    let mut tracks = Vec::new();
    for share in parts {
        participants.extend(share.participants.iter().map(|p| ParticipantView {
            id: p.id.0.clone(),
            name: p.name.clone(),
            role: role_name(p.role).to_owned(),
            node: share.node.clone(),
        }));
        tracks.extend(share.tracks.iter().map(|t| TrackView {
            id: t.id.0.clone(),
            participant: t.participant.0.clone(),
            kind: kind_name(t.kind).to_owned(),
            node: share.node.clone(),
        }));
    }
    Ok(Json(RoomDetail {
        name: room,
        tenant,
        participants,
        tracks,
    }))
}

/// Acts on this node's members (`target` or everyone) and forwards to the `others`; the nodes
/// that acted.
async fn act(
    state: &AppState,
    headers: &HeaderMap,
    room: &RoomName,
    target: Option<&ParticipantId>,
    here: bool,
    others: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    let mut acted = Vec::new();
    if here && let Some(actor) = state.rooms.get(room) {
        let _ = actor.cast(RoomMsg::Operator {
            target: target.cloned(),
        });
        acted.push(state.node_id.clone());
    }
    let path = match target {
        Some(p) => format!("api/admin/rooms/{}/participants/{}", room.as_str(), p.0),
        None => format!("api/admin/rooms/{}", room.as_str()),
    };
    for node in others {
        let record = forward::live_node(state, headers, &node)?;
        forward::call(state, headers, &record, hyper::Method::DELETE, &path).await?;
        acted.push(node);
    }
    Ok(acted)
}

#[utoipa::path(
    delete,
    path = "/api/admin/rooms/{room}",
    tag = "rooms",
    params(("room" = String, Path, description = "Room name")),
    responses(
        (status = 202, description = "The meeting ends for everyone, on every node", body = RoomActionAnswer),
        (status = 401, description = "No admin credential", body = ApiErrorBody),
        (status = 404, description = "No such room (or not the caller's tenant's)", body = ApiErrorBody),
        (status = 502, description = "A node holding the room could not be reached", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn end(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<RoomActionAnswer>), ApiError> {
    let NamedRoom {
        caller,
        name,
        tenant,
        parts,
    } = named_room(&state, peer, &headers, &room).await?;
    let forwarded = forward::is_forwarded(&headers);
    let here = state.rooms.get(&name).is_some();
    if parts.is_empty() && !here {
        return Err(unknown_room());
    }
    let others = if forwarded {
        Vec::new()
    } else {
        parts
            .iter()
            .map(|s| s.node.clone())
            .filter(|n| *n != state.node_id)
            .collect()
    };
    let nodes = act(&state, &headers, &name, None, here, others).await?;
    if !forwarded {
        info!(node = %state.node_id, room = %name, actor = caller.actor(), "room ended through the admin API");
        state.audit(
            tenant.as_deref(),
            caller.actor(),
            AuditAction::RoomEnded,
            Some(name.as_str()),
            Some(peer.ip()),
        );
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RoomActionAnswer {
            room,
            participant: None,
            status: "ending".to_owned(),
            nodes,
        }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/admin/rooms/{room}/participants/{participant}",
    tag = "rooms",
    params(
        ("room" = String, Path, description = "Room name"),
        ("participant" = String, Path, description = "Participant id (from the room's detail)"),
    ),
    responses(
        (status = 202, description = "The participant is removed from the room", body = RoomActionAnswer),
        (status = 401, description = "No admin credential", body = ApiErrorBody),
        (status = 404, description = "No such room or participant", body = ApiErrorBody),
        (status = 502, description = "The participant's node could not be reached", body = ApiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<RoomActionAnswer>), ApiError> {
    let NamedRoom {
        caller,
        name,
        tenant,
        parts,
    } = named_room(&state, peer, &headers, &room).await?;
    let holder = parts
        .iter()
        .find(|s| s.participants.iter().any(|p| p.id.0 == participant))
        .map(|s| s.node.clone());
    let Some(holder) = holder else {
        return Err(ApiError::not_found("no such participant in the room"));
    };
    let id = ParticipantId(participant.clone());
    let here = holder == state.node_id;
    let others = if here { Vec::new() } else { vec![holder] };
    let nodes = act(&state, &headers, &name, Some(&id), here, others).await?;
    if !forward::is_forwarded(&headers) {
        info!(node = %state.node_id, room = %name, participant = %id, actor = caller.actor(), "participant removed through the admin API");
        state.audit(
            tenant.as_deref(),
            caller.actor(),
            AuditAction::ParticipantRemoved,
            Some(&format!("{}/{}", name.as_str(), id.0)),
            Some(peer.ip()),
        );
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RoomActionAnswer {
            room,
            participant: Some(participant),
            status: "removed".to_owned(),
            nodes,
        }),
    ))
}
