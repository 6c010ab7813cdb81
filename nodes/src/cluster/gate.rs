//! Where a join goes: this node, another node of the participant's site (placement), or nowhere
//! (refused with a reason). Signalling joins get a WebSocket redirect (`redirect` message),
//! WHIP/WHEP requests a `307 Temporary Redirect` — the entry node never proxies media or
//! signalling. The policy:
//!
//! - a draining node takes nothing new: joins go to the room's placement in the site;
//! - a node of the participant's site keeps the join while it holds at most
//!   [`PLACEMENT_SLACK_SESSIONS`] more sessions than the site's least-loaded node;
//! - otherwise the control plane places it (`ControlPlane::place_room`: the room's node for that
//!   site, else the least-loaded live node of the nearest site with one);
//! - while the control plane is unreachable, rooms already open here and resuming participants
//!   are still taken; new rooms are refused with `unavailable`.

use super::{Cluster, PLACEMENT_SLACK_SESSIONS, ws_url};
use crate::auth::access::{AccessControl, Refusal};
use crate::http::rate_limits::{Limited, RateLimits};
use kaskade_control::placement::accepts_placements;
use kaskade_control::{ControlError, ControlPlane, NodeRecord};
use kaskade_mesh::admission::{
    Admission, JoinCredentials, JoinDenied, JoinGate, JoinGrant, ProtectionChange, ResumeClaim,
};
use kaskade_proto::signal::{ErrorCode, Role};
use kaskade_proto::{ParticipantId, RoomName};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::field::Empty;
use tracing::{Instrument, debug, info_span, warn};

/// The outcome of placing one join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Here,
    Elsewhere(NodeRecord),
    Refused { code: ErrorCode, message: String },
}

impl Cluster {
    /// Participants of `room` in the whole mesh as far as this node knows: its own, and the
    /// other nodes' from their room shares (published every keep-alive, so a burst of joins
    /// elsewhere shows a second late).
    pub async fn participants_in(&self, room: &RoomName) -> usize {
        let here = self.rooms.counts(room).members;
        let elsewhere: usize = match self.control.room_shares(room).await {
            Ok(shares) => shares
                .iter()
                .filter(|s| s.node != self.node)
                .map(|s| s.participants.len())
                .sum(),
            Err(_) => 0,
        };
        here + elsewhere
    }

    /// Places a join for `room` from a participant of `site` (default: this node's site), in a
    /// `placement` span that records where it went.
    pub async fn place(&self, room: &RoomName, site: Option<&str>, resuming: bool) -> Placement {
        let span = info_span!("placement", node = %self.node, site = %self.site, room = %room,
            client_site = site.unwrap_or(&self.site), resuming,
            outcome = Empty, placed_node = Empty, placed_site = Empty, refusal = Empty);
        let placement = self
            .decide_placement(room, site, resuming)
            .instrument(span.clone())
            .await;
        let (outcome, placed) = match &placement {
            Placement::Here => ("here", Some((self.node.as_str(), self.site.as_str()))),
            Placement::Elsewhere(node) => {
                ("elsewhere", Some((node.id.as_str(), node.site.as_str())))
            }
            Placement::Refused { code, .. } => {
                span.record("refusal", tracing::field::debug(code));
                ("refused", None)
            }
        };
        span.record("outcome", outcome);
        if let Some((node, site)) = placed {
            span.record("placed_node", node);
            span.record("placed_site", site);
        }
        placement
    }

    /// The placement policy of the module doc.
    async fn decide_placement(
        &self,
        room: &RoomName,
        site: Option<&str>,
        resuming: bool,
    ) -> Placement {
        let home = site.unwrap_or(&self.site).to_owned();
        let view = self.view();
        let draining = self.is_draining();
        let open_here = self.rooms.get(room).is_some();
        if !draining && home == self.site {
            let own = view
                .nodes
                .get(&self.node)
                .map(|n| n.load.sessions)
                .unwrap_or(0);
            let least = view
                .nodes
                .values()
                .filter(|n| n.site == home && accepts_placements(n))
                .map(|n| n.load.sessions)
                .min()
                .unwrap_or(own);
            if own <= least + PLACEMENT_SLACK_SESSIONS {
                if !view.reachable && !open_here && !resuming {
                    return unreachable_refusal(room);
                }
                return Placement::Here;
            }
        }
        let sites = self.sites_for(&home, &view);
        match self.control.place_room(room, &sites).await {
            Ok(node) if node.id == self.node => {
                if draining {
                    return Placement::Refused {
                        code: ErrorCode::Unavailable,
                        message: "this node is draining and no other node can take the room".into(),
                    };
                }
                Placement::Here
            }
            Ok(node) if node.http_url.is_empty() => {
                // A statically configured peer without a web endpoint: keep the join.
                debug!(room = %room, placed = %node.id, "placement names a node without a web endpoint; keeping the join");
                self.keep_unless_draining(room)
            }
            Ok(node) => Placement::Elsewhere(node),
            Err(ControlError::NoNodeAvailable(_)) => self.keep_unless_draining(room),
            Err(e) => {
                warn!(room = %room, error = %e, "placement failed");
                if !draining && (open_here || resuming) {
                    Placement::Here
                } else {
                    unreachable_refusal(room)
                }
            }
        }
    }

    fn keep_unless_draining(&self, room: &RoomName) -> Placement {
        if self.is_draining() {
            Placement::Refused {
                code: ErrorCode::Unavailable,
                message: format!("no node can take room {room} now (this one is draining)"),
            }
        } else {
            Placement::Here
        }
    }
}

fn unreachable_refusal(room: &RoomName) -> Placement {
    Placement::Refused {
        code: ErrorCode::Unavailable,
        message: format!(
            "the mesh's control plane is unreachable: room {room} cannot be opened now; \
             rooms already running continue — retry in a few seconds"
        ),
    }
}

/// The `JoinGate` the signalling sessions of this node use: the node's access control, then
/// placement.
pub struct ClusterGate {
    pub cluster: Arc<Cluster>,
    pub access: Arc<AccessControl>,
    pub limits: Arc<RateLimits>,
    /// The session's client address: a key of the join limit, never logged.
    pub client: IpAddr,
    /// TURN servers for the client, if the node has some.
    pub turn: Option<Arc<crate::turn::TurnServers>>,
}

#[async_trait::async_trait]
impl JoinGate for ClusterGate {
    async fn authorize(
        &self,
        room: &RoomName,
        credentials: JoinCredentials<'_>,
    ) -> Result<JoinGrant, JoinDenied> {
        let limited = |l: Limited| JoinDenied {
            code: ErrorCode::RateLimited,
            message: format!(
                "too many joins; try again in {} s",
                l.retry_after.as_secs().max(1)
            ),
        };
        self.limits.join(self.client).map_err(limited)?;
        let present = self.cluster.participants_in(room).await;
        let grant = self
            .access
            .authorize_join(room, credentials, present)
            .await?;
        if let Some(user) = &grant.user {
            self.limits.user_join(user).map_err(limited)?;
        }
        Ok(grant)
    }

    async fn protect(&self, room: &RoomName, change: ProtectionChange) -> Result<(), JoinDenied> {
        let AccessControl::Enforced(enforcer) = self.access.as_ref() else {
            return Err(JoinDenied {
                code: ErrorCode::BadRequest,
                message: "room passwords need a node with access control".into(),
            });
        };
        let result = match change {
            ProtectionChange::Password(password) => enforcer.set_password(room, password).await,
            ProtectionChange::Flags { locked, lobby } => {
                enforcer.set_flags(room, locked, lobby).await
            }
        };
        result.map_err(|r| JoinDenied {
            code: match r {
                Refusal::UnknownRoom => ErrorCode::UnknownRoom,
                _ => ErrorCode::Unavailable,
            },
            message: match r {
                Refusal::UnknownRoom => format!("room {room} has no record to protect"),
                _ => "the room's protection cannot be changed right now; retry shortly".into(),
            },
        })
    }

    async fn admit(&self, room: &RoomName, site: Option<&str>, resuming: bool) -> Admission {
        match self.cluster.place(room, site, resuming).await {
            Placement::Here => Admission::Here,
            Placement::Elsewhere(node) => Admission::Redirect {
                url: ws_url(&node.http_url),
            },
            Placement::Refused { code, message } => Admission::Refused { code, message },
        }
    }

    fn issue_resume(
        &self,
        room: &RoomName,
        participant: &ParticipantId,
        name: &str,
        ceiling: Option<Role>,
    ) -> String {
        self.cluster.resume.issue(room, participant, name, ceiling)
    }

    fn verify_resume(&self, room: &RoomName, token: &str) -> Result<ResumeClaim, String> {
        let claim = self.cluster.resume.verify(room, token)?;
        self.cluster
            .metrics
            .mesh
            .failover(crate::metrics::FailoverKind::SessionResumed);
        Ok(claim)
    }

    fn alternates(&self) -> Vec<String> {
        self.cluster.alternates()
    }

    fn ice_servers(&self, participant: &ParticipantId) -> Vec<kaskade_proto::signal::IceServer> {
        self.turn
            .iter()
            .map(|t| t.ice_server(&participant.0, crate::turn::unix_now()))
            .collect()
    }
}
