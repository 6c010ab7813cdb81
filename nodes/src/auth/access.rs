//! The node's access policy: either `--insecure-dev` (the open defaults of the earlier issues,
//! loopback only) or enforced — every join, WHIP/WHEP request, admin and listing call needs an
//! access token, `/metrics` its scrape credential. Turns a token and a room into a
//! [`JoinGrant`] (the role ceiling the room actor applies), opening rooms for users allowed to
//! create them and refusing rooms of other tenants as if they did not exist.

use super::tokens::{
    AccessClaims, AccessRole, Grants, TokenAuthority, TokenError, TokenRequest, unix_now,
};
use crate::audit::Auditor;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use kaskade_control::accounts::{
    AccountDirectory, PasswordHashing, TenantId, TenantLimits, verify_password_off_runtime,
};
use kaskade_control::any::AnyControlPlane;
use kaskade_control::audit::AuditAction;
use kaskade_control::room_records::{RoomRecord, get_room, open_room, rooms_of, update_room};
use kaskade_mesh::admission::{JoinCredentials, JoinDenied, JoinGrant, KeptSettings};
use kaskade_proto::RoomName;
use kaskade_proto::signal::{ErrorCode, Role};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// How the node decides who may do what.
pub enum AccessControl {
    /// `--insecure-dev`: everything open, as before access control existed.
    Open,
    Enforced(Box<Enforcer>),
}

/// Enforced access control's keys and settings.
pub struct Enforcer {
    pub tokens: TokenAuthority,
    pub control: Arc<AnyControlPlane>,
    pub accounts: AccountDirectory<AnyControlPlane>,
    /// Bearer credential of `/metrics` (Prometheus' scrape config); without one, loopback
    /// scrapers only.
    pub metrics_token: Option<String>,
    pub login_token_lifetime: Duration,
    /// Where rooms opened are recorded.
    pub audit: Option<Auditor>,
}

/// Why an HTTP request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no or bad credentials.
    Unauthenticated(String),
    /// 403: valid credentials, not enough for this.
    Forbidden(String),
    /// 404: no such room (for this tenant).
    UnknownRoom,
    /// 503: the control plane cannot answer.
    Unavailable(String),
    /// 403: a cap of the tenant was reached (rooms, participants per room).
    LimitReached(String),
    /// 403: a host banned the token's user from the room.
    Banned,
    /// 403: the room has a password and it was missing or wrong.
    PasswordRequired(String),
    /// 403: a host locked the room.
    Locked,
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Self {
        Refusal::Unauthenticated(e.to_string())
    }
}

/// The bearer token of an `Authorization: Bearer …` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl AccessControl {
    pub fn is_open(&self) -> bool {
        matches!(self, AccessControl::Open)
    }

    /// The claims of the request's bearer token (enforced mode), or `None` in open mode.
    pub fn claims(&self, headers: &HeaderMap) -> Result<Option<AccessClaims>, Refusal> {
        match self {
            AccessControl::Open => Ok(None),
            AccessControl::Enforced(e) => {
                let token = bearer(headers).ok_or(TokenError::Missing)?;
                Ok(Some(e.tokens.verify(token, unix_now())?))
            }
        }
    }

    /// The join grant for a signalling join of `room` with `credentials`; `present`
    /// participants are in the room already (as this node knows).
    pub async fn authorize_join(
        &self,
        room: &RoomName,
        credentials: JoinCredentials<'_>,
        present: usize,
    ) -> Result<JoinGrant, JoinDenied> {
        let token = credentials.token;
        let AccessControl::Enforced(enforcer) = self else {
            return Ok(JoinGrant::default());
        };
        let deny = |code, message: String| JoinDenied { code, message };
        let token = token.ok_or_else(|| {
            deny(
                ErrorCode::Unauthorized,
                "this node needs an access token: log in (or use an invite link) and join again"
                    .into(),
            )
        })?;
        let claims = enforcer
            .tokens
            .verify(token, unix_now())
            .map_err(|e| deny(ErrorCode::Unauthorized, e.to_string()))?;
        let mut lobby = false;
        let mut kept = None;
        let room_access = match enforcer.room_access(&claims, room, true).await {
            Ok(record) => match enforcer
                .may_enter(&claims, &record, credentials.password)
                .await
            {
                Ok(()) => {
                    lobby = record.lobby && ceiling_of(&claims.grants) != Role::Host;
                    kept = Some(KeptSettings {
                        locked: record.locked,
                        lobby: record.lobby,
                    });
                    enforcer.room_has_space(&record, present).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match room_access {
            Ok(()) => {}
            Err(Refusal::Banned) => {
                return Err(deny(
                    ErrorCode::Banned,
                    "a host removed you from this room for good".into(),
                ));
            }
            Err(Refusal::PasswordRequired(m)) => return Err(deny(ErrorCode::PasswordRequired, m)),
            Err(Refusal::Locked) => {
                return Err(deny(
                    ErrorCode::RoomLocked,
                    "the room is locked; a host has to unlock it".into(),
                ));
            }
            Err(Refusal::LimitReached(m)) => return Err(deny(ErrorCode::LimitReached, m)),
            Err(Refusal::UnknownRoom) => {
                return Err(deny(
                    ErrorCode::UnknownRoom,
                    format!("room {room} does not exist; a host has to open it first"),
                ));
            }
            Err(Refusal::Unavailable(m)) => return Err(deny(ErrorCode::Unavailable, m)),
            Err(Refusal::Unauthenticated(m) | Refusal::Forbidden(m)) => {
                return Err(deny(ErrorCode::Unauthorized, m));
            }
        }
        Ok(JoinGrant {
            user: Some(claims.sub.clone()),
            ceiling: Some(ceiling_of(&claims.grants)),
            // Accounts join under their own name; guests choose theirs.
            name: (claims.role != AccessRole::Guest).then(|| claims.name.clone()),
            lobby,
            kept,
        })
    }
}

/// The highest room role a token's grants allow at join.
pub fn ceiling_of(grants: &Grants) -> Role {
    if grants.moderate {
        Role::Host
    } else if grants.publish {
        Role::Speaker
    } else {
        Role::Audience
    }
}

impl Enforcer {
    /// Whether `claims` reach `room`: the room exists and belongs to the token's tenant (any
    /// tenant for operators), or it does not exist and `open` is set and the token may create
    /// rooms: then it is opened for the token's tenant.
    pub async fn room_access(
        &self,
        claims: &AccessClaims,
        room: &RoomName,
        open: bool,
    ) -> Result<RoomRecord, Refusal> {
        if claims.room.as_deref().is_some_and(|r| r != room.as_str()) {
            return Err(Refusal::Forbidden(format!(
                "this token is good for room {} only",
                claims.room.as_deref().unwrap_or_default()
            )));
        }
        let existing = get_room(self.control.as_ref(), room).await.map_err(|e| {
            warn!(room = %room, error = %e, "room lookup failed");
            Refusal::Unavailable("the control plane cannot be reached; retry shortly".into())
        })?;
        let record = match existing {
            Some(record) => record,
            None => {
                let Some(tenant) = claims.tenant.clone().filter(|_| open) else {
                    return Err(Refusal::UnknownRoom);
                };
                if !claims.grants.create_rooms {
                    return Err(Refusal::UnknownRoom);
                }
                self.room_may_open(&tenant).await?;
                let record = RoomRecord::new(tenant, claims.sub.clone(), unix_now() * 1000);
                let opened = open_room(self.control.as_ref(), room, record.clone())
                    .await
                    .map_err(|e| {
                        warn!(room = %room, error = %e, "opening a room failed");
                        Refusal::Unavailable(
                            "the control plane cannot be reached; retry shortly".into(),
                        )
                    })?;
                if opened == record
                    && let Some(audit) = &self.audit
                {
                    audit.record(
                        Some(&record.tenant),
                        &claims.sub,
                        AuditAction::RoomOpened,
                        Some(room.as_str()),
                        None,
                    );
                }
                opened
            }
        };
        if claims.covers_room(room, &record.tenant) {
            Ok(record)
        } else {
            // Another tenant's room is reported as unknown: names of other tenants' rooms
            // are not disclosed.
            Err(Refusal::UnknownRoom)
        }
    }

    /// The limits of `tenant` (defaults if it has no record, e.g. deleted meanwhile).
    async fn limits_of(&self, tenant: &str) -> Result<TenantLimits, Refusal> {
        let Ok(id) = TenantId::new(tenant) else {
            return Ok(TenantLimits::default());
        };
        match self.accounts.get_tenant(&id).await {
            Ok(t) => Ok(t.map(|t| t.limits).unwrap_or_default()),
            Err(e) => {
                warn!(tenant, error = %e, "reading the tenant's limits failed");
                Err(Refusal::Unavailable(
                    "the control plane cannot be reached; retry shortly".into(),
                ))
            }
        }
    }

    /// Refuses a new room when the tenant has `max_rooms` already.
    async fn room_may_open(&self, tenant: &str) -> Result<(), Refusal> {
        let limits = self.limits_of(tenant).await?;
        let rooms = rooms_of(self.control.as_ref(), tenant).await.map_err(|_| {
            Refusal::Unavailable("the control plane cannot be reached; retry shortly".into())
        })?;
        if rooms.len() >= limits.max_rooms as usize {
            return Err(Refusal::LimitReached(format!(
                "your organisation has {} rooms, its limit; delete one first",
                rooms.len()
            )));
        }
        Ok(())
    }

    /// Refuses a banned user, and anyone who may not host without the room's password.
    pub async fn may_enter(
        &self,
        claims: &AccessClaims,
        record: &RoomRecord,
        password: Option<&str>,
    ) -> Result<(), Refusal> {
        if record.banned.contains(&claims.sub) {
            return Err(Refusal::Banned);
        }
        if record.locked && ceiling_of(&claims.grants) != Role::Host {
            return Err(Refusal::Locked);
        }
        let Some(hash) = &record.password_hash else {
            return Ok(());
        };
        if ceiling_of(&claims.grants) == Role::Host {
            return Ok(()); // hosts let themselves in
        }
        let Some(password) = password else {
            return Err(Refusal::PasswordRequired(
                "this room has a password; enter it to join".into(),
            ));
        };
        if verify_password_off_runtime(password, hash).await {
            Ok(())
        } else {
            Err(Refusal::PasswordRequired("wrong room password".into()))
        }
    }

    /// Sets or clears `room`'s password (the caller checked it is a host's request).
    pub async fn set_password(
        &self,
        room: &RoomName,
        password: Option<String>,
    ) -> Result<(), Refusal> {
        let hash = match password {
            Some(p) => Some(
                PasswordHashing::default()
                    .hash_off_runtime(&p)
                    .await
                    .map_err(|_| Refusal::Unavailable("the password could not be hashed".into()))?,
            ),
            None => None,
        };
        let updated = update_room(self.control.as_ref(), room, |r| {
            r.password_hash = hash.clone();
        })
        .await
        .map_err(|e| {
            warn!(room = %room, error = %e, "setting the room password failed");
            Refusal::Unavailable("the control plane cannot be reached; retry shortly".into())
        })?;
        if updated {
            Ok(())
        } else {
            Err(Refusal::UnknownRoom)
        }
    }

    /// Keeps a host's lock and lobby settings in the room's record.
    pub async fn set_flags(
        &self,
        room: &RoomName,
        locked: bool,
        lobby: bool,
    ) -> Result<(), Refusal> {
        let updated = update_room(self.control.as_ref(), room, |r| {
            r.locked = locked;
            r.lobby = lobby;
        })
        .await
        .map_err(|e| {
            warn!(room = %room, error = %e, "keeping the room's settings failed");
            Refusal::Unavailable("the control plane cannot be reached; retry shortly".into())
        })?;
        if updated {
            Ok(())
        } else {
            Err(Refusal::UnknownRoom)
        }
    }

    /// Refuses a join when the room holds its tenant's `max_participants_per_room`.
    pub async fn room_has_space(&self, room: &RoomRecord, present: usize) -> Result<(), Refusal> {
        let limits = self.limits_of(&room.tenant).await?;
        if present >= limits.max_participants_per_room as usize {
            return Err(Refusal::LimitReached(format!(
                "the room is full ({present} participants)"
            )));
        }
        Ok(())
    }

    /// A login token for an account.
    pub fn login_token(
        &self,
        user: &str,
        tenant: Option<&str>,
        name: &str,
        role: AccessRole,
    ) -> (String, AccessClaims) {
        let now = unix_now();
        self.tokens.issue(
            TokenRequest {
                user: user.into(),
                tenant: tenant.map(str::to_owned),
                name: name.into(),
                role,
                room: None,
                grants: Grants::of_role(role),
                not_before: now,
                expires: now + self.login_token_lifetime.as_secs(),
            },
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use kaskade_control::memory::MemoryControlPlane;

    fn enforced() -> AccessControl {
        let control = Arc::new(AnyControlPlane::Memory(MemoryControlPlane::default()));
        AccessControl::Enforced(Box::new(Enforcer {
            tokens: TokenAuthority::new(b"secret"),
            accounts: AccountDirectory::new(control.clone()),
            control,
            metrics_token: None,
            login_token_lifetime: Duration::from_secs(600),
            audit: None,
        }))
    }

    fn enforcer(access: &AccessControl) -> &Enforcer {
        match access {
            AccessControl::Enforced(e) => e,
            AccessControl::Open => unreachable!(),
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn creds(token: Option<&str>) -> JoinCredentials<'_> {
        JoinCredentials {
            token,
            password: None,
        }
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer  xyz "));
        assert_eq!(bearer(&headers), Some("xyz"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }

    #[tokio::test]
    async fn open_mode_grants_everything_without_a_ceiling() {
        let grant = AccessControl::Open
            .authorize_join(&room("r"), creds(None), 0)
            .await
            .unwrap();
        assert_eq!(grant, JoinGrant::default());
    }

    #[tokio::test]
    async fn hosts_open_rooms_participants_join_them_and_other_tenants_see_nothing() {
        let access = enforced();
        let e = enforcer(&access);
        let (host, _) = e.login_token("ada", Some("school"), "Ada", AccessRole::Host);
        let (pupil, _) = e.login_token("bob", Some("school"), "Bob", AccessRole::Participant);
        let (stranger, _) = e.login_token("eve", Some("other"), "Eve", AccessRole::Host);

        let no_token = access.authorize_join(&room("maths"), creds(None), 0).await;
        assert_eq!(no_token.unwrap_err().code, ErrorCode::Unauthorized);
        let forged = access
            .authorize_join(&room("maths"), creds(Some("x.y.z")), 0)
            .await;
        assert_eq!(forged.unwrap_err().code, ErrorCode::Unauthorized);
        // A participant cannot open a room.
        let early = access
            .authorize_join(&room("maths"), creds(Some(&pupil)), 0)
            .await;
        assert_eq!(early.unwrap_err().code, ErrorCode::UnknownRoom);

        let grant = access
            .authorize_join(&room("maths"), creds(Some(&host)), 0)
            .await
            .unwrap();
        assert_eq!(grant.ceiling, Some(Role::Host));
        assert_eq!(grant.name.as_deref(), Some("Ada"));
        let grant = access
            .authorize_join(&room("maths"), creds(Some(&pupil)), 0)
            .await
            .unwrap();
        assert_eq!(grant.ceiling, Some(Role::Speaker));
        assert_eq!(grant.user.as_deref(), Some("bob"));
        // Another tenant's host neither joins nor takes over the name.
        let other = access
            .authorize_join(&room("maths"), creds(Some(&stranger)), 0)
            .await;
        assert_eq!(other.unwrap_err().code, ErrorCode::UnknownRoom);
    }

    #[tokio::test]
    async fn a_room_scoped_guest_token_reaches_its_room_only() {
        let access = enforced();
        let e = enforcer(&access);
        let (host, _) = e.login_token("ada", Some("school"), "Ada", AccessRole::Host);
        access
            .authorize_join(&room("maths"), creds(Some(&host)), 0)
            .await
            .unwrap();
        let now = unix_now();
        let (guest, _) = e.tokens.issue(
            TokenRequest {
                user: "guest-1".into(),
                tenant: Some("school".into()),
                name: "Guest".into(),
                role: AccessRole::Guest,
                room: Some("maths".into()),
                grants: Grants::of_role(AccessRole::Guest),
                not_before: now,
                expires: now + 60,
            },
            now,
        );
        let grant = access
            .authorize_join(&room("maths"), creds(Some(&guest)), 0)
            .await
            .unwrap();
        assert_eq!(grant.ceiling, Some(Role::Audience));
        assert_eq!(grant.name, None, "guests choose their own name");
        let elsewhere = access
            .authorize_join(&room("physics"), creds(Some(&guest)), 0)
            .await;
        assert_eq!(elsewhere.unwrap_err().code, ErrorCode::Unauthorized);
    }
}
