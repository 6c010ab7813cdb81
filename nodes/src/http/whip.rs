//! WHIP (RFC 9725) and WHEP: publish or watch with one HTTP POST of an SDP offer. The answer comes
//! back with `201 Created` and a `Location` that a `DELETE` ends. A WHIP publisher is a listed
//! room member; a WHEP viewer is a hidden one.

use super::AppState;
use super::guard::{self, MediaNeed};
use super::state::{HttpSession, new_participant_id};
use crate::cluster::gate::Placement;
use crate::edge::{EdgeError, EdgeEvent, EngineCommand, EventSink, SessionKey, TrackDescriptor};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaskade_mesh::roles::JoinAccess;
use kaskade_mesh::{RoomError, RoomMsg};
use kaskade_proto::signal::{
    LayerChoice, MediaKind, ParticipantInfo, Role, TrackInfo, TrackSource,
};
use kaskade_proto::{ParticipantId, RoomName, TrackId};
use ractor::ActorRef;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use tokio::sync::mpsc;
use tracing::{info, warn};

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

fn edge_error(e: EdgeError) -> Response {
    match e {
        EdgeError::InvalidSdp(reason) => {
            text(StatusCode::BAD_REQUEST, format!("invalid SDP: {reason}"))
        }
        EdgeError::UnknownTrack => text(StatusCode::NOT_FOUND, "track is gone"),
        other => text(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// Validates the room name, the content type and the body of an SDP POST.
/// The error is the finished HTTP response; it is built once per rejected request, so its size
/// does not matter.
#[allow(clippy::result_large_err)]
fn sdp_request(
    room: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(RoomName, String), Response> {
    let room = RoomName::parse(room)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("invalid room name: {e}")))?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct
            .trim()
            .to_ascii_lowercase()
            .starts_with("application/sdp")
        {
            return Err(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/sdp",
            ));
        }
    }
    let sdp = std::str::from_utf8(body)
        .map_err(|_| text(StatusCode::BAD_REQUEST, "invalid SDP: body is not UTF-8"))?;
    Ok((room, sdp.to_owned()))
}

fn created(state: &AppState, session: HttpSession, answer: String, publisher: bool) -> Response {
    let id = format!("s{:016x}", rand::random::<u64>());
    let location = format!("/sessions/{id}");
    let participant = session.participant.0.clone();
    state.sessions().insert(id, session);
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response();
    if publisher && let Ok(v) = participant.parse() {
        response.headers_mut().insert("x-kaskade-publisher", v);
    }
    // The TURN servers, for a client that restarts ICE through them (RFC 9725 `ice-server`).
    if let Some(turn) = &state.turn {
        for link in turn.link_headers(&participant, crate::turn::unix_now()) {
            if let Ok(v) = link.parse() {
                response.headers_mut().append(header::LINK, v);
            }
        }
    }
    response
}

/// Placement for a WHIP/WHEP request: `None` to serve it here, else the finished response — a
/// `307 Temporary Redirect` to the node that takes the room's participants of this site (the
/// client POSTs the same offer there), or `503` with `Retry-After` when nobody can take it.
async fn placement(state: &AppState, room: &RoomName, path: &str) -> Option<Response> {
    let cluster = state.cluster.as_ref()?;
    match cluster.place(room, None, false).await {
        Placement::Here => None,
        Placement::Elsewhere(node) => {
            let location = format!("{}{path}", node.http_url.trim_end_matches('/'));
            info!(room = %room, to = %node.id, "HTTP media session redirected");
            Some(
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                    format!("room {room} is served by node {} for this site\n", node.id),
                )
                    .into_response(),
            )
        }
        Placement::Refused { message, .. } => Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                format!("{message}\n"),
            )
                .into_response(),
        ),
    }
}

/// Enters the room for an HTTP media session; if that fails the engine session is closed again.
async fn join_room(
    state: &AppState,
    room: &RoomName,
    info: ParticipantInfo,
    hidden: bool,
    engine_session: SessionKey,
    ceiling: Option<Role>,
) -> Result<ActorRef<RoomMsg>, Response> {
    let id = info.id.clone();
    let role = JoinAccess {
        user: None,
        lobby: false,
        kept: None,
        requested: None,
        ceiling,
    };
    match state.rooms.join(room, info, None, hidden, role).await {
        Ok((actor, snapshot)) if !hidden && !snapshot.role.may_publish() => {
            // "Only hosts publish": a WHIP publisher without a host grant is audience.
            let _ = state.engine.send(EngineCommand::Close {
                session: engine_session,
            });
            let _ = actor.cast(RoomMsg::Leave {
                participant: id,
                epoch: Some(snapshot.epoch),
            });
            warn!(room = %room, "WHIP publish refused: only hosts publish in this room");
            Err(text(
                StatusCode::FORBIDDEN,
                "only hosts publish in this room",
            ))
        }
        Ok((actor, _)) => Ok(actor),
        Err(e) => {
            let _ = state.engine.send(EngineCommand::Close {
                session: engine_session,
            });
            warn!(room = %room, error = %e, "joining the room failed");
            let status = match e {
                RoomError::Refused(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            Err(text(status, e.to_string()))
        }
    }
}

/// Leaves the room when the engine reports the session closed (client gone, ICE timeout).
fn watch_session(
    state: AppState,
    room: RoomName,
    participant: ParticipantId,
    mut events: mpsc::UnboundedReceiver<EdgeEvent>,
) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let EdgeEvent::Closed { reason, .. } = event {
                info!(room = %room, participant = %participant, reason, "HTTP media session ended");
                break;
            }
        }
        if let Some(actor) = state.rooms.get(&room) {
            let _ = actor.cast(RoomMsg::Leave {
                participant: participant.clone(),
                epoch: None,
            });
        }
        state.sessions().retain(|_, s| s.participant != participant);
    });
}

pub async fn publish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (room, offer) = match sdp_request(&room, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ceiling = match guard::media(&state, peer.ip(), &headers, &room, MediaNeed::Publish).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(response) = placement(&state, &room, &format!("/whip/{room}")).await {
        return response;
    }
    let participant = new_participant_id();
    let (events_tx, events_rx) = EventSink::channel();
    let outcome = state
        .engine
        .request(|reply| EngineCommand::Publish {
            session: None,
            participant: participant.clone(),
            offer,
            sources: BTreeMap::new(),
            events: events_tx,
            reply,
        })
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return edge_error(e),
    };
    let info = ParticipantInfo::new(
        participant.clone(),
        format!("WHIP {}", &participant.0[1..7]),
    );
    let actor = match join_room(&state, &room, info, false, outcome.session, ceiling).await {
        Ok(actor) => actor,
        Err(response) => return response,
    };
    let tracks: Vec<TrackInfo> = outcome.tracks.values().map(TrackInfo::from).collect();
    let _ = actor.cast(RoomMsg::Publish { tracks });
    watch_session(state.clone(), room.clone(), participant.clone(), events_rx);
    info!(room = %room, participant = %participant, "WHIP publisher joined");
    let session = HttpSession {
        engine_session: outcome.session,
        room,
        participant,
    };
    created(&state, session, outcome.answer, true)
}

/// WHEP query parameters: `?layer=low|medium|high` caps the viewer's simulcast layer (the
/// highest the publisher sends when absent).
#[derive(Debug, Default, serde::Deserialize)]
pub struct WhepQuery {
    layer: Option<LayerChoice>,
}

pub async fn subscribe_first(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(query): Query<WhepQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = WhepRequest {
        client: peer.ip(),
        room,
        publisher: None,
        query,
    };
    subscribe(state, request, headers, body).await
}

pub async fn subscribe_to(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((room, publisher)): Path<(String, String)>,
    Query(query): Query<WhepQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = WhepRequest {
        client: peer.ip(),
        room,
        publisher: Some(ParticipantId(publisher)),
        query,
    };
    subscribe(state, request, headers, body).await
}

/// What a WHEP request asks for, from where.
struct WhepRequest {
    client: IpAddr,
    room: String,
    publisher: Option<ParticipantId>,
    query: WhepQuery,
}

/// One audio and one video track of `publisher` (or of the room's first publisher), camera first.
fn pick_tracks(tracks: &[TrackInfo], publisher: Option<&ParticipantId>) -> Vec<TrackDescriptor> {
    let publisher = match publisher {
        Some(p) => p.clone(),
        None => match tracks.first() {
            Some(t) => t.participant.clone(),
            None => return Vec::new(),
        },
    };
    let mine: Vec<&TrackInfo> = tracks
        .iter()
        .filter(|t| t.participant == publisher)
        .collect();
    let audio = mine.iter().find(|t| t.kind == MediaKind::Audio);
    let video = mine
        .iter()
        .find(|t| t.kind == MediaKind::Video && t.source != TrackSource::Screen)
        .or_else(|| mine.iter().find(|t| t.kind == MediaKind::Video));
    audio
        .into_iter()
        .chain(video)
        .map(|t| TrackDescriptor::from(*t))
        .collect()
}

async fn subscribe(
    state: AppState,
    request: WhepRequest,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let WhepRequest {
        client,
        room,
        publisher,
        query,
    } = request;
    let (room, offer) = match sdp_request(&room, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if publisher
        .as_ref()
        .is_some_and(|p| !ParticipantId::is_well_formed(&p.0))
    {
        return text(StatusCode::BAD_REQUEST, "invalid publisher id");
    }
    let ceiling = match guard::media(&state, client, &headers, &room, MediaNeed::Subscribe).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let path = match &publisher {
        Some(p) => format!("/whep/{room}/{p}"),
        None => format!("/whep/{room}"),
    };
    if let Some(response) = placement(&state, &room, &path).await {
        return response;
    }
    let participant = new_participant_id();
    let info = ParticipantInfo::new(participant.clone(), "WHEP viewer");
    let mut snapshot = state.rooms.snapshot(&room).await;
    let found_here = snapshot
        .as_ref()
        .is_some_and(|s| !pick_tracks(&s.tracks, publisher.as_ref()).is_empty());
    // In a mesh the publisher may be on another node: enter the room here (hidden), which makes
    // this node interested in it, and wait for the other nodes to describe their part.
    let mut joined: Option<ActorRef<RoomMsg>> = None;
    if !found_here && let Some(relay) = &state.relay {
        match state
            .rooms
            .join(
                &room,
                info.clone(),
                None,
                true,
                JoinAccess {
                    user: None,
                    lobby: false,
                    kept: None,
                    requested: None,
                    ceiling,
                },
            )
            .await
        {
            Ok((actor, _)) => {
                joined = Some(actor);
                relay.fetch_room(&room).await;
                snapshot = state.rooms.snapshot(&room).await;
            }
            Err(e @ RoomError::Refused(_)) => return text(StatusCode::FORBIDDEN, e.to_string()),
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    let leave = |joined: &Option<ActorRef<RoomMsg>>| {
        if let Some(actor) = joined {
            let _ = actor.cast(RoomMsg::Leave {
                participant: participant.clone(),
                epoch: None,
            });
        }
    };
    let tracks = snapshot
        .as_ref()
        .map(|s| pick_tracks(&s.tracks, publisher.as_ref()))
        .unwrap_or_default();
    if tracks.is_empty() {
        leave(&joined);
        let what = match (&snapshot, &publisher) {
            (None, _) => format!("unknown room {room}"),
            (Some(_), Some(p)) => format!("no publisher {p} in room {room}"),
            (Some(_), None) => format!("room {room} has no publisher"),
        };
        return text(StatusCode::NOT_FOUND, what);
    }
    let video: Vec<TrackId> = tracks
        .iter()
        .filter(|t| t.kind == MediaKind::Video)
        .map(|t| t.id.clone())
        .collect();
    let (events_tx, events_rx) = EventSink::channel();
    let result = state
        .engine
        .request(|reply| EngineCommand::SubscribeAnswering {
            participant: participant.clone(),
            offer,
            tracks,
            events: events_tx,
            reply,
        })
        .await;
    let (engine_session, answer) = match result {
        Ok(v) => v,
        Err(e) => {
            leave(&joined);
            return edge_error(e);
        }
    };
    if let Some(layer) = query.layer {
        for track in video {
            let _ = state.engine.send(EngineCommand::SetLayer {
                session: engine_session,
                track,
                layer: layer.index(),
            });
        }
    }
    if joined.is_none()
        && let Err(response) = join_room(&state, &room, info, true, engine_session, ceiling).await
    {
        return response;
    }
    watch_session(state.clone(), room.clone(), participant.clone(), events_rx);
    info!(room = %room, participant = %participant, "WHEP viewer joined");
    let session = HttpSession {
        engine_session,
        room,
        participant,
    };
    created(&state, session, answer, false)
}

pub async fn end_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(session) = state.sessions().remove(&id) else {
        return text(StatusCode::NOT_FOUND, "unknown session");
    };
    let _ = state.engine.send(EngineCommand::Close {
        session: session.engine_session,
    });
    if let Some(actor) = state.rooms.get(&session.room) {
        let _ = actor.cast(RoomMsg::Leave {
            participant: session.participant,
            epoch: None,
        });
    }
    StatusCode::OK.into_response()
}
