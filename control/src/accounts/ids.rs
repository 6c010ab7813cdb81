//! The identifiers of accounts: [`TenantId`] (an organisation) and [`UserId`] (a login name
//! within a tenant, or among the operators). Both are validated on construction and on
//! deserialisation, and both end up in record keys, so neither can ever contain `/`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest tenant id, in characters (all ASCII).
pub const MAX_TENANT_ID_LEN: usize = 32;
/// Longest user id, in characters (all ASCII).
pub const MAX_USER_ID_LEN: usize = 64;

/// Why a string is not a valid [`TenantId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is longer than {MAX_TENANT_ID_LEN} characters")]
    TooLong,
    #[error("tenant id may only contain a-z, 0-9 and '-' (found {0:?})")]
    InvalidCharacter(char),
    #[error("tenant id must not start or end with '-'")]
    EdgeHyphen,
}

/// Why a string is not a valid [`UserId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id is empty")]
    Empty,
    #[error("user id is longer than {MAX_USER_ID_LEN} characters")]
    TooLong,
    #[error("user id may only contain A-Z, a-z, 0-9, '.', '_', '@' and '-' (found {0:?})")]
    InvalidCharacter(char),
    #[error("user id must not consist of dots only")]
    OnlyDots,
}

/// An organisation's id: 1–32 characters of `[a-z0-9-]`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, TenantIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(TenantIdError::InvalidCharacter(bad));
        }
        if id.len() > MAX_TENANT_ID_LEN {
            return Err(TenantIdError::TooLong);
        }
        if id.starts_with('-') || id.ends_with('-') {
            return Err(TenantIdError::EdgeHyphen);
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = TenantIdError;
    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl std::str::FromStr for TenantId {
    type Err = TenantIdError;
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::new(id)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's login name: 1–64 characters of `[A-Za-z0-9._@-]` (an e-mail address fits). Compared
/// exactly (case-sensitively). Ids made of dots only (`.`, `..`) are refused so that no key
/// segment ever looks like a path step, whatever a backend does with keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, UserIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(UserIdError::Empty);
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
        {
            return Err(UserIdError::InvalidCharacter(bad));
        }
        if id.len() > MAX_USER_ID_LEN {
            return Err(UserIdError::TooLong);
        }
        if id.chars().all(|c| c == '.') {
            return Err(UserIdError::OnlyDots);
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl TryFrom<&str> for UserId {
    type Error = UserIdError;
    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl std::str::FromStr for UserId {
    type Err = UserIdError;
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::new(id)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> Self {
        id.0
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_accept_lowercase_digits_and_inner_hyphens() {
        for ok in ["a", "city-of-x", "0", "a1-b2", &"x".repeat(32)] {
            assert_eq!(TenantId::new(ok).map(String::from), Ok(ok.to_string()));
        }
    }

    #[test]
    fn tenant_ids_refuse_bad_input() {
        assert_eq!(TenantId::new(""), Err(TenantIdError::Empty));
        assert_eq!(TenantId::new("x".repeat(33)), Err(TenantIdError::TooLong));
        assert_eq!(TenantId::new("-a"), Err(TenantIdError::EdgeHyphen));
        assert_eq!(TenantId::new("a-"), Err(TenantIdError::EdgeHyphen));
        assert_eq!(TenantId::new("-"), Err(TenantIdError::EdgeHyphen));
        assert_eq!(
            TenantId::new("City"),
            Err(TenantIdError::InvalidCharacter('C'))
        );
        assert_eq!(
            TenantId::new("a/b"),
            Err(TenantIdError::InvalidCharacter('/'))
        );
        assert_eq!(
            TenantId::new("a_b"),
            Err(TenantIdError::InvalidCharacter('_'))
        );
        assert_eq!(
            TenantId::new("stadt-\u{e4}"),
            Err(TenantIdError::InvalidCharacter('\u{e4}'))
        );
        assert_eq!(
            TenantId::new("a b"),
            Err(TenantIdError::InvalidCharacter(' '))
        );
    }

    #[test]
    fn user_ids_accept_mail_like_names() {
        for ok in [
            "alice",
            "Alice.Smith@example.org",
            "a_b-c",
            "0",
            &"u".repeat(64),
        ] {
            assert_eq!(UserId::new(ok).map(String::from), Ok(ok.to_string()));
        }
    }

    #[test]
    fn user_ids_refuse_bad_input() {
        assert_eq!(UserId::new(""), Err(UserIdError::Empty));
        assert_eq!(UserId::new("u".repeat(65)), Err(UserIdError::TooLong));
        assert_eq!(UserId::new("a/b"), Err(UserIdError::InvalidCharacter('/')));
        assert_eq!(UserId::new("a b"), Err(UserIdError::InvalidCharacter(' ')));
        assert_eq!(UserId::new("a:b"), Err(UserIdError::InvalidCharacter(':')));
        assert_eq!(
            UserId::new("j\u{f6}rg"),
            Err(UserIdError::InvalidCharacter('\u{f6}'))
        );
        assert_eq!(UserId::new("a\0"), Err(UserIdError::InvalidCharacter('\0')));
        assert_eq!(UserId::new("."), Err(UserIdError::OnlyDots));
        assert_eq!(UserId::new(".."), Err(UserIdError::OnlyDots));
        assert!(UserId::new(".a.").is_ok());
    }

    #[test]
    fn ids_validate_when_deserialised() {
        let tenant: TenantId = serde_json::from_str("\"city\"").expect("valid tenant");
        assert_eq!(tenant.as_str(), "city");
        assert_eq!(
            serde_json::to_string(&tenant).expect("serialises"),
            "\"city\""
        );
        assert!(serde_json::from_str::<TenantId>("\"a/b\"").is_err());
        assert!(serde_json::from_str::<TenantId>("\"\"").is_err());
        let user: UserId = serde_json::from_str("\"bob@x.org\"").expect("valid user");
        assert_eq!(user.to_string(), "bob@x.org");
        assert!(serde_json::from_str::<UserId>("\"../etc\"").is_err());
    }
}
