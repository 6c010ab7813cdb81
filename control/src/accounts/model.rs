//! What is stored about tenants and accounts ([`Tenant`], [`Account`]), the role hierarchy
//! ([`AccountRole`]) and what each role may do. Stored as JSON records by
//! [`super::directory::AccountDirectory`].
//!
//! Roles, highest first: `operator` (the whole installation, belongs to no tenant) >
//! `tenant_admin` (one tenant's users and rooms) > `host` (creates and runs rooms) >
//! `participant`. Guests and audience members have no account: they join through room links.

use super::ids::{TenantId, UserId};
use super::lockout::LoginAttempts;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest display or tenant name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// An account's role. Ordered: `Operator > TenantAdmin > Host > Participant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountRole {
    Participant,
    Host,
    TenantAdmin,
    Operator,
}

impl AccountRole {
    /// Hosts and above open rooms.
    pub fn can_create_rooms(self) -> bool {
        self >= AccountRole::Host
    }

    /// Only operators create and delete tenants.
    pub fn can_manage_tenants(self) -> bool {
        self == AccountRole::Operator
    }

    /// Whether an account of this role may live in `tenant`: operators in none, every other
    /// role in exactly one.
    pub fn fits_tenant(self, tenant: Option<&TenantId>) -> bool {
        (self == AccountRole::Operator) == tenant.is_none()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountRole::Participant => "participant",
            AccountRole::Host => "host",
            AccountRole::TenantAdmin => "tenant_admin",
            AccountRole::Operator => "operator",
        }
    }
}

impl fmt::Display for AccountRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much one tenant may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLimits {
    pub max_rooms: u32,
    pub max_participants_per_room: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_rooms: 100,
            max_participants_per_room: 1000,
        }
    }
}

/// An organisation: its users, rooms and logs are kept apart from every other tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    /// Human-readable name ("City of Example").
    pub name: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub limits: TenantLimits,
}

/// A user's account. `Debug` leaves the password hash out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The tenant it belongs to; `None` only for operators.
    pub tenant: Option<TenantId>,
    pub user: UserId,
    pub display_name: String,
    pub role: AccountRole,
    /// Argon2id PHC string. Never log it.
    pub password_hash: String,
    #[serde(default)]
    pub attempts: LoginAttempts,
    pub created_at_ms: u64,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .field("attempts", &self.attempts)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

impl Account {
    pub fn can_create_rooms(&self) -> bool {
        self.role.can_create_rooms()
    }

    /// Operators manage every tenant's accounts; tenant admins their own tenant's.
    pub fn can_manage_users_of(&self, tenant: &TenantId) -> bool {
        match self.role {
            AccountRole::Operator => true,
            AccountRole::TenantAdmin => self.tenant.as_ref() == Some(tenant),
            AccountRole::Host | AccountRole::Participant => false,
        }
    }

    /// Whether this account may create (or promote someone to) an account of `role` in `tenant`
    /// (`None`: among the operators). Operators grant anything that fits; tenant admins grant
    /// roles up to their own, in their own tenant; nobody else grants anything.
    pub fn can_grant(&self, role: AccountRole, tenant: Option<&TenantId>) -> bool {
        if !role.fits_tenant(tenant) {
            return false;
        }
        match self.role {
            AccountRole::Operator => true,
            AccountRole::TenantAdmin => {
                role <= AccountRole::TenantAdmin
                    && tenant.is_some()
                    && self.tenant.as_ref() == tenant
            }
            AccountRole::Host | AccountRole::Participant => false,
        }
    }
}

/// Why a display or tenant name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("the name contains control characters")]
    ControlCharacter,
}

/// Checks a display or tenant name and returns it without surrounding whitespace.
pub fn normalize_name(name: &str) -> Result<String, NameError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).expect("valid tenant id")
    }

    fn account(tenant: Option<TenantId>, role: AccountRole) -> Account {
        Account {
            tenant,
            user: UserId::new("someone").expect("valid user id"),
            display_name: "Someone".into(),
            role,
            password_hash: "$argon2id$v=19$secret-looking".into(),
            attempts: LoginAttempts::default(),
            created_at_ms: 1,
        }
    }

    #[test]
    fn roles_are_ordered_from_operator_down() {
        use AccountRole::*;
        assert!(Operator > TenantAdmin && TenantAdmin > Host && Host > Participant);
        assert!(Operator.can_create_rooms() && TenantAdmin.can_create_rooms());
        assert!(Host.can_create_rooms() && !Participant.can_create_rooms());
        assert!(Operator.can_manage_tenants() && !TenantAdmin.can_manage_tenants());
    }

    #[test]
    fn roles_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&AccountRole::TenantAdmin).expect("serialises"),
            "\"tenant_admin\""
        );
        assert_eq!(AccountRole::TenantAdmin.to_string(), "tenant_admin");
    }

    #[test]
    fn only_operators_live_outside_tenants() {
        let city = tenant("city");
        assert!(AccountRole::Operator.fits_tenant(None));
        assert!(!AccountRole::Operator.fits_tenant(Some(&city)));
        assert!(AccountRole::Host.fits_tenant(Some(&city)));
        assert!(!AccountRole::TenantAdmin.fits_tenant(None));
    }

    #[test]
    fn tenant_admins_manage_only_their_own_tenant() {
        let (city, county) = (tenant("city"), tenant("county"));
        let admin = account(Some(city.clone()), AccountRole::TenantAdmin);
        assert!(admin.can_manage_users_of(&city));
        assert!(!admin.can_manage_users_of(&county));
        assert!(admin.can_grant(AccountRole::Host, Some(&city)));
        assert!(admin.can_grant(AccountRole::TenantAdmin, Some(&city)));
        assert!(!admin.can_grant(AccountRole::Host, Some(&county)));
        assert!(!admin.can_grant(AccountRole::Operator, None));
        let host = account(Some(city.clone()), AccountRole::Host);
        assert!(!host.can_manage_users_of(&city));
        assert!(!host.can_grant(AccountRole::Participant, Some(&city)));
        let operator = account(None, AccountRole::Operator);
        assert!(operator.can_manage_users_of(&county));
        assert!(operator.can_grant(AccountRole::Operator, None));
        assert!(operator.can_grant(AccountRole::TenantAdmin, Some(&county)));
        assert!(!operator.can_grant(AccountRole::Host, None));
    }

    #[test]
    fn debug_redacts_the_password_hash() {
        let printed = format!("{:?}", account(None, AccountRole::Operator));
        assert!(!printed.contains("argon2id"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn account_and_tenant_round_trip_through_json() {
        let stored = account(Some(tenant("city")), AccountRole::Host);
        let json = serde_json::to_vec(&stored).expect("serialises");
        assert_eq!(
            serde_json::from_slice::<Account>(&json).expect("parses"),
            stored
        );
        let city = Tenant {
            id: tenant("city"),
            name: "City".into(),
            created_at_ms: 5,
            limits: TenantLimits::default(),
        };
        let json = serde_json::to_vec(&city).expect("serialises");
        assert_eq!(
            serde_json::from_slice::<Tenant>(&json).expect("parses"),
            city
        );
        assert!(
            serde_json::from_str::<Tenant>(r#"{"id":"Bad/Id","name":"x","created_at_ms":1}"#)
                .is_err()
        );
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(normalize_name("  Alice Smith "), Ok("Alice Smith".into()));
        assert_eq!(normalize_name("   "), Err(NameError::Empty));
        assert_eq!(normalize_name("a\nb"), Err(NameError::ControlCharacter));
        assert_eq!(
            normalize_name(&"x".repeat(MAX_NAME_CHARS + 1)),
            Err(NameError::TooLong)
        );
    }
}
