//! `/ws`: the WebSocket transport of a signalling session. It checks frame sizes and kinds, hands
//! text frames to the session's `Participant` actor (`kaskade_mesh::participant`) and writes out
//! what the actor sends back. All signalling logic lives in the actor.

use super::AppState;
use super::rate_limits::session_message;
use super::state::new_participant_id;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use kaskade_mesh::participant::{
    ParticipantActor, ParticipantArgs, ParticipantMsg, ParticipantOutput,
};
use kaskade_proto::signal::{ErrorCode, MAX_SIGNAL_MESSAGE_BYTES, ServerMessage};
use ractor::Actor;
use std::net::{IpAddr, SocketAddr};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Frames up to this size are read and then judged; larger ones end the connection outright.
const READ_LIMIT: usize = 1024 * 1024;

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    ws.max_message_size(READ_LIMIT)
        .max_frame_size(READ_LIMIT)
        .on_upgrade(move |socket| run(state, socket, peer.ip()))
}

fn text_frame(message: &ServerMessage) -> Message {
    Message::Text(message.encode().into())
}

async fn run(state: AppState, mut socket: WebSocket, client: IpAddr) {
    let (output, mut outgoing) = mpsc::unbounded_channel();
    let args = ParticipantArgs {
        id: new_participant_id(),
        engine: state.engine.clone(),
        rooms: state.rooms.clone(),
        output,
        gate: state.gate(client),
    };
    let messages = state.limits.session();
    let participant = match Actor::spawn(None, ParticipantActor, args).await {
        Ok((actor, _)) => actor,
        Err(e) => {
            warn!(error = %e, "participant actor failed to start");
            let error = ServerMessage::Error {
                code: ErrorCode::Internal,
                message: "node cannot take participants right now".into(),
                fatal: true,
            };
            let _ = socket.send(text_frame(&error)).await;
            return;
        }
    };
    loop {
        tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > MAX_SIGNAL_MESSAGE_BYTES {
                        let close = CloseFrame {
                            code: close_code::SIZE,
                            reason: "message larger than 64 KiB".into(),
                        };
                        let _ = socket.send(Message::Close(Some(close))).await;
                        break;
                    }
                    if let Err(limited) = session_message(&messages) {
                        let error = ServerMessage::error(
                            ErrorCode::RateLimited,
                            format!(
                                "too many messages; this one was dropped (wait {} ms)",
                                limited.retry_after.as_millis().max(1)
                            ),
                        );
                        if socket.send(text_frame(&error)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    if participant.cast(ParticipantMsg::Text(text.as_str().to_owned())).is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let error = ServerMessage::error(
                        ErrorCode::BinaryNotSupported,
                        "signalling uses JSON text frames",
                    );
                    if socket.send(text_frame(&error)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    debug!(error = %e, "websocket error");
                    break;
                }
            },
            out = outgoing.recv() => match out {
                Some(ParticipantOutput::Send(message)) => {
                    if socket.send(text_frame(&message)).await.is_err() {
                        break;
                    }
                }
                Some(ParticipantOutput::Close { code, reason }) => {
                    let close = CloseFrame { code, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
                None => break,
            },
        }
    }
    let _ = participant.cast(ParticipantMsg::Disconnected);
}
