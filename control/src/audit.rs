//! The audit log: one append-only record per changing action (login, failed login, room opened,
//! invite, account and tenant changes, moderation, drain), kept as control-plane records under
//! `audit/{scope}/{at_ms:020}-{id}` so that keys sort by time within a scope. The scope is the
//! tenant (`t-{tenant}`) or the installation (`installation`) for actions outside any tenant.
//! Records are never rewritten: writing is conditional on absence. [`AuditLog::expire`] deletes
//! what is older than the retention, with the time passed in.

use crate::records::Expect;
use crate::{ControlError, ControlPlane};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Prefix of every audit record.
pub const AUDIT_PREFIX: &str = "audit/";
/// Scope of actions outside any tenant (operators, drains).
pub const INSTALLATION_SCOPE: &str = "installation";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Login,
    LoginFailed,
    LoginLocked,
    RoomOpened,
    RoomEnded,
    InviteIssued,
    RoleChanged,
    ParticipantMuted,
    ParticipantRemoved,
    SettingsChanged,
    TenantCreated,
    TenantDeleted,
    AccountCreated,
    AccountDeleted,
    Drain,
    Admitted,
    Denied,
    RoomDeleted,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (unix milliseconds).
    pub at_ms: u64,
    /// The tenant it concerns; `None` for the installation.
    pub tenant: Option<String>,
    /// Who: a user id, `guest-…`, `cli` or `node:{id}`.
    pub actor: String,
    pub action: AuditAction,
    /// What it was done to: a room, a user, a participant.
    pub target: Option<String>,
    /// Free detail (a new role, a setting) — never a password or token.
    pub detail: Option<String>,
    /// The client's address, where one made the request (personal data: kept for the
    /// connection-data retention only, see [`RetentionPolicy`]).
    pub address: Option<String>,
}

/// How long audit records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Audit records (default 12 months).
    pub audit_ms: u64,
    /// Client addresses inside audit records (connection data; default 10 days): after this
    /// they are removed from records that are kept longer.
    pub addresses_ms: u64,
}

const DAY_MS: u64 = 24 * 3600 * 1000;

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            audit_ms: 365 * DAY_MS,
            addresses_ms: 10 * DAY_MS,
        }
    }
}

fn scope_of(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("t-{t}"),
        None => INSTALLATION_SCOPE.to_owned(),
    }
}

fn scope_prefix(tenant: Option<&str>) -> String {
    format!("{AUDIT_PREFIX}{}/", scope_of(tenant))
}

fn decode(value: &[u8], key: &str) -> Result<AuditRecord, ControlError> {
    serde_json::from_slice(value)
        .map_err(|e| ControlError::Malformed(format!("audit record {key}: {e}")))
}

/// What [`AuditLog::expire`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub deleted: u64,
    pub addresses_removed: u64,
}

/// The audit log over a control plane's records.
pub struct AuditLog<C> {
    control: Arc<C>,
}

impl<C> Clone for AuditLog<C> {
    fn clone(&self) -> Self {
        Self {
            control: Arc::clone(&self.control),
        }
    }
}

impl<C: ControlPlane> AuditLog<C> {
    pub fn new(control: Arc<C>) -> Self {
        Self { control }
    }

    /// Appends `record`.
    pub async fn append(&self, record: &AuditRecord) -> Result<(), ControlError> {
        let value = serde_json::to_vec(record)
            .map_err(|e| ControlError::Malformed(format!("audit record: {e}")))?;
        let key = format!(
            "{}{:020}-{:016x}",
            scope_prefix(record.tenant.as_deref()),
            record.at_ms,
            rand::random::<u64>()
        );
        self.control
            .put_record(&key, value, Expect::Absent)
            .await
            .map(|_| ())
    }

    /// Records of `tenant` (`None`: the installation's) with `from_ms <= at_ms < to_ms`, oldest
    /// first.
    pub async fn query(
        &self,
        tenant: Option<&str>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        let mut out = Vec::new();
        for record in self.control.list_records(&scope_prefix(tenant)).await? {
            let r = decode(&record.value, &record.key)?;
            if r.at_ms >= from_ms && r.at_ms < to_ms {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every scope's records, for operators (installation first, then tenants by id).
    pub async fn query_all(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        let mut out = Vec::new();
        for record in self.control.list_records(AUDIT_PREFIX).await? {
            let r = decode(&record.value, &record.key)?;
            if r.at_ms >= from_ms && r.at_ms < to_ms {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Applies `policy` at `now_ms`: deletes records older than the audit retention and removes
    /// client addresses from records older than the connection-data retention.
    pub async fn expire(
        &self,
        now_ms: u64,
        policy: RetentionPolicy,
    ) -> Result<Expired, ControlError> {
        let mut done = Expired::default();
        let audit_cutoff = now_ms.saturating_sub(policy.audit_ms);
        let address_cutoff = now_ms.saturating_sub(policy.addresses_ms);
        for record in self.control.list_records(AUDIT_PREFIX).await? {
            let r = decode(&record.value, &record.key)?;
            if r.at_ms < audit_cutoff {
                if self
                    .control
                    .delete_record(&record.key, Expect::Version(record.version))
                    .await?
                {
                    done.deleted += 1;
                }
            } else if r.at_ms < address_cutoff && r.address.is_some() {
                let without = AuditRecord { address: None, ..r };
                let value = serde_json::to_vec(&without)
                    .map_err(|e| ControlError::Malformed(format!("audit record: {e}")))?;
                match self
                    .control
                    .put_record(&record.key, value, Expect::Version(record.version))
                    .await
                {
                    Ok(_) => done.addresses_removed += 1,
                    // Changed meanwhile (another node expiring): its turn.
                    Err(ControlError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    /// Deletes every record of `tenant` (the tenant was deleted).
    pub async fn delete_tenant(&self, tenant: &str) -> Result<u64, ControlError> {
        self.control
            .delete_records(&scope_prefix(Some(tenant)))
            .await
    }
}

/// One record per line, as JSON (the export format).
pub fn to_json_lines(records: &[AuditRecord]) -> String {
    let mut out = String::new();
    for r in records {
        if let Ok(line) = serde_json::to_string(r) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryControlPlane;

    fn record(at_ms: u64, tenant: Option<&str>, action: AuditAction) -> AuditRecord {
        AuditRecord {
            at_ms,
            tenant: tenant.map(str::to_owned),
            actor: "ada".into(),
            action,
            target: Some("maths".into()),
            detail: None,
            address: Some("192.0.2.7".into()),
        }
    }

    #[tokio::test]
    async fn records_are_kept_per_tenant_in_time_order() {
        let log = AuditLog::new(Arc::new(MemoryControlPlane::default()));
        log.append(&record(30, Some("school"), AuditAction::RoomOpened))
            .await
            .unwrap();
        log.append(&record(10, Some("school"), AuditAction::Login))
            .await
            .unwrap();
        log.append(&record(20, Some("other"), AuditAction::Login))
            .await
            .unwrap();
        log.append(&record(5, None, AuditAction::TenantCreated))
            .await
            .unwrap();
        let school = log.query(Some("school"), 0, u64::MAX).await.unwrap();
        let actions: Vec<_> = school.iter().map(|r| (r.at_ms, r.action)).collect();
        assert_eq!(
            actions,
            [(10, AuditAction::Login), (30, AuditAction::RoomOpened)]
        );
        assert_eq!(log.query(Some("school"), 11, 31).await.unwrap().len(), 1);
        assert_eq!(log.query(None, 0, u64::MAX).await.unwrap().len(), 1);
        assert_eq!(log.query_all(0, u64::MAX).await.unwrap().len(), 4);
        let lines = to_json_lines(&school);
        assert_eq!(lines.lines().count(), 2);
        assert!(lines.contains("\"action\":\"room_opened\""), "{lines}");
        assert_eq!(log.delete_tenant("school").await.unwrap(), 2);
        assert!(
            log.query(Some("school"), 0, u64::MAX)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn retention_deletes_old_records_and_strips_old_addresses() {
        let log = AuditLog::new(Arc::new(MemoryControlPlane::default()));
        let now = 400 * DAY_MS;
        for (age_days, action) in [
            (370, AuditAction::Login),      // past 12 months: deleted
            (100, AuditAction::RoomOpened), // kept, address removed
            (2, AuditAction::InviteIssued), // kept with address
        ] {
            log.append(&record(now - age_days * DAY_MS, Some("school"), action))
                .await
                .unwrap();
        }
        let done = log.expire(now, RetentionPolicy::default()).await.unwrap();
        assert_eq!(
            done,
            Expired {
                deleted: 1,
                addresses_removed: 1
            }
        );
        let kept = log.query(Some("school"), 0, u64::MAX).await.unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].action, AuditAction::RoomOpened);
        assert_eq!(kept[0].address, None);
        assert_eq!(kept[1].address.as_deref(), Some("192.0.2.7"));
        // A second run has nothing left to do.
        assert_eq!(
            log.expire(now, RetentionPolicy::default()).await.unwrap(),
            Expired::default()
        );
    }
}
