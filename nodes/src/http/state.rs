//! State shared by every HTTP handler: the engine handle, the room directory, metrics, and the
//! WHIP/WHEP sessions addressable by their `Location`.

use super::rate_limits::{RateLimits, RateSettings};
use crate::audit::Auditor;
use crate::auth::access::AccessControl;
use crate::edge::{EngineHandle, SessionKey};
use crate::metrics::Metrics;
use kaskade_control::audit::AuditAction;
use kaskade_mesh::RoomDirectory;
use kaskade_proto::{ParticipantId, RoomName};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A WHIP or WHEP session, as its `Location` names it.
#[derive(Debug, Clone)]
pub struct HttpSession {
    pub engine_session: SessionKey,
    pub room: RoomName,
    pub participant: ParticipantId,
}

#[derive(Clone)]
pub struct AppState {
    pub node_id: String,
    pub engine: EngineHandle,
    pub rooms: Arc<RoomDirectory>,
    pub metrics: Arc<Metrics>,
    pub http_sessions: Arc<Mutex<HashMap<String, HttpSession>>>,
    /// The mesh, when this node is part of one.
    pub relay: Option<crate::relay::manager::RelayHandle>,
    /// The node's control-plane membership (placement, resume, drain); `None` only in unit
    /// setups without one.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub admin: Option<AdminSettings>,
    /// Who may do what: `--insecure-dev` (open) or enforced with access tokens.
    pub access: Arc<AccessControl>,
    /// Logins, joins and messages per address, user and session.
    pub limits: Arc<RateLimits>,
    /// The audit log; `None` only in unit setups without a control plane.
    pub audit: Option<Auditor>,
    /// TURN servers handed to clients (`--turn-url`), with their shared secret.
    pub turn: Option<Arc<crate::turn::TurnServers>>,
}

/// What the admin endpoints need.
#[derive(Clone)]
pub struct AdminSettings {
    pub token: Option<String>,
    pub drain_deadline: std::time::Duration,
    /// Set when a drain finished and the node should stop.
    pub drained: tokio::sync::watch::Sender<bool>,
    /// The CA that HTTPS URLs of other nodes are checked against when the admin API forwards
    /// a request (the mesh CA of `--certs`); plain-HTTP nodes need none.
    pub forward_ca: Option<std::path::PathBuf>,
}

impl AppState {
    pub fn new(
        node_id: String,
        engine: EngineHandle,
        rooms: Arc<RoomDirectory>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node_id,
            engine,
            rooms,
            metrics,
            http_sessions: Arc::default(),
            relay: None,
            cluster: None,
            admin: None,
            access: Arc::new(AccessControl::Open),
            limits: Arc::new(RateLimits::new(RateSettings::default())),
            audit: None,
            turn: None,
        }
    }

    pub fn with_turn(mut self, turn: Option<crate::turn::TurnServers>) -> Self {
        self.turn = turn.map(Arc::new);
        self
    }

    pub fn with_audit(mut self, audit: Auditor) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Queues an audit record, if this node keeps the log.
    pub fn audit(
        &self,
        tenant: Option<&str>,
        actor: &str,
        action: AuditAction,
        target: Option<&str>,
        address: Option<IpAddr>,
    ) {
        if let Some(audit) = &self.audit {
            audit.record(tenant, actor, action, target, address);
        }
    }

    pub fn with_limits(mut self, limits: Arc<RateLimits>) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_access(mut self, access: Arc<AccessControl>) -> Self {
        self.access = access;
        self
    }

    pub fn with_cluster(
        mut self,
        cluster: Arc<crate::cluster::Cluster>,
        admin: AdminSettings,
    ) -> Self {
        self.cluster = Some(cluster);
        self.admin = Some(admin);
        self
    }

    /// The join policy for a signalling session of a client at `client`.
    pub fn gate(&self, client: IpAddr) -> Arc<dyn kaskade_mesh::admission::JoinGate> {
        match &self.cluster {
            Some(c) => Arc::new(crate::cluster::gate::ClusterGate {
                cluster: c.clone(),
                access: self.access.clone(),
                limits: self.limits.clone(),
                client,
                turn: self.turn.clone(),
            }),
            None => Arc::new(kaskade_mesh::admission::AdmitAll),
        }
    }

    pub fn with_relay(mut self, relay: Option<crate::relay::manager::RelayHandle>) -> Self {
        self.relay = relay;
        self
    }

    pub fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, HttpSession>> {
        self.http_sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refreshes the gauges that mirror the room directory.
    pub fn refresh_room_gauges(&self) {
        let rooms = self.rooms.list();
        self.metrics.rooms.set(rooms.len() as i64);
        self.metrics
            .participants
            .set(rooms.iter().map(|(_, c)| c.members as i64).sum());
    }
}

pub fn new_participant_id() -> ParticipantId {
    ParticipantId(format!("p{:016x}", rand::random::<u64>()))
}
