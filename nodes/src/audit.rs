//! The node's side of the audit log (and of the bans rooms report): request handlers hand records to an [`Auditor`], whose one
//! writer task appends them to the control plane's audit log (so a slow store never slows a
//! login or a join), and a retention task expires old records and old client addresses once an
//! hour. Every node of a mesh runs it; conditional writes keep two nodes from doing the same
//! work twice.

use kaskade_control::any::AnyControlPlane;
use kaskade_control::audit::{AuditAction, AuditLog, AuditRecord, RetentionPolicy};
use kaskade_control::room_records::{get_room, update_room};
use kaskade_mesh::action_log::{ActionLog, ModeratedAction, ModerationEntry};
use kaskade_mesh::room_guard::RoomGuard;
use kaskade_proto::RoomName;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Records waiting to be written; beyond this the newest are dropped with a warning.
const QUEUE: usize = 4096;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Hands audit records to the writer.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<AuditRecord>,
    pub log: AuditLog<AnyControlPlane>,
}

impl Auditor {
    /// Starts the writer and the retention task.
    pub fn start(control: Arc<AnyControlPlane>, retention: RetentionPolicy) -> Self {
        let log = AuditLog::new(control);
        let (tx, mut rx) = mpsc::channel::<AuditRecord>(QUEUE);
        let writer = log.clone();
        tokio::spawn(async move {
            while let Some(record) = rx.recv().await {
                if let Err(e) = writer.append(&record).await {
                    warn!(action = ?record.action, error = %e, "audit record not written");
                }
            }
        });
        let expirer = log.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RETENTION_EVERY);
            loop {
                every.tick().await;
                match expirer.expire(now_ms(), retention).await {
                    Ok(done) if done.deleted + done.addresses_removed > 0 => {
                        info!(
                            deleted = done.deleted,
                            addresses_removed = done.addresses_removed,
                            "audit retention applied"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "audit retention failed; next try in an hour"),
                }
            }
        });
        Self { tx, log }
    }

    /// Queues one record (now).
    pub fn record(
        &self,
        tenant: Option<&str>,
        actor: &str,
        action: AuditAction,
        target: Option<&str>,
        address: Option<std::net::IpAddr>,
    ) {
        self.record_with(tenant, actor, action, target, None, address);
    }

    /// Queues one record with a detail.
    pub fn record_with(
        &self,
        tenant: Option<&str>,
        actor: &str,
        action: AuditAction,
        target: Option<&str>,
        detail: Option<String>,
        address: Option<std::net::IpAddr>,
    ) {
        let record = AuditRecord {
            at_ms: now_ms(),
            tenant: tenant.map(str::to_owned),
            actor: actor.to_owned(),
            action,
            target: target.map(str::to_owned),
            detail,
            address: address.map(|a| a.to_string()),
        };
        if self.tx.try_send(record).is_err() {
            warn!(?action, "audit queue full; record dropped");
        }
    }
}

/// Rooms' applied moderation, recorded under the room's tenant (looked up in the room's record;
/// the installation's scope for rooms without one, i.e. `--insecure-dev`).
pub struct RoomActionLog {
    pub auditor: Auditor,
    pub control: Arc<AnyControlPlane>,
}

impl ActionLog for RoomActionLog {
    fn log(&self, entry: ModerationEntry) {
        let action = match entry.action {
            ModeratedAction::RoleChanged => AuditAction::RoleChanged,
            ModeratedAction::Muted => AuditAction::ParticipantMuted,
            ModeratedAction::Removed => AuditAction::ParticipantRemoved,
            ModeratedAction::SettingsChanged => AuditAction::SettingsChanged,
            ModeratedAction::MeetingEnded => AuditAction::RoomEnded,
            ModeratedAction::Admitted => AuditAction::Admitted,
            ModeratedAction::Denied => AuditAction::Denied,
        };
        let auditor = self.auditor.clone();
        let control = self.control.clone();
        tokio::spawn(async move {
            let tenant = get_room(control.as_ref(), &entry.room)
                .await
                .ok()
                .flatten()
                .map(|r| r.tenant);
            let target = match &entry.target {
                Some(t) => format!("{} in {}", t, entry.room),
                None => entry.room.to_string(),
            };
            auditor.record_with(
                tenant.as_deref(),
                &entry.actor,
                action,
                Some(&target),
                entry.detail,
                None,
            );
        });
    }
}

/// Bans rooms report, kept in the room's record where every node's access control reads them.
pub struct RoomBans {
    pub control: Arc<AnyControlPlane>,
}

impl RoomGuard for RoomBans {
    fn ban(&self, room: &RoomName, user: &str) {
        let control = self.control.clone();
        let (room, user) = (room.clone(), user.to_owned());
        tokio::spawn(async move {
            let result = update_room(control.as_ref(), &room, |r| {
                if !r.banned.contains(&user) {
                    r.banned.push(user.clone());
                }
            })
            .await;
            match result {
                Ok(true) => info!(room = %room, %user, "banned from the room"),
                Ok(false) => warn!(room = %room, "ban not kept: the room has no record"),
                Err(e) => warn!(room = %room, error = %e, "ban not kept"),
            }
        });
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
