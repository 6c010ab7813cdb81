//! Access tokens: short-lived HS256 JWTs (the `jsonwebtoken` crate) that say who the bearer is
//! (user id, tenant, display name, account role) and what it may do (grants), optionally scoped
//! to one room and a time window. Login issues one for a tenant; a host's invite link carries one
//! scoped to a room. Every node of a mesh checks them with the mesh's shared secret.
//!
//! Time is passed in (unix seconds), so expiry is tested without sleeping. The audience claim
//! (`kaskade-access`) keeps a resume token from ever passing as an access token and vice versa.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kaskade_proto::RoomName;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `aud` of every access token.
pub const ACCESS_AUDIENCE: &str = "kaskade-access";
/// `iss` of every token a node issues.
pub const ISSUER: &str = "kaskade";
/// Lifetime of a login token unless configured otherwise.
pub const DEFAULT_LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Longest window an invite may cover.
pub const MAX_INVITE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Tokens longer than this are refused before decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The bearer's place in the hierarchy: operator (whole installation) > tenant admin > host >
/// participant > guest (invited into one room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    Guest,
    Participant,
    Host,
    TenantAdmin,
    Operator,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Send media (publish offer, WHIP).
    pub publish: bool,
    /// Receive media (WHEP, subscriptions).
    pub subscribe: bool,
    /// Host controls in a room (roles, mute, remove, settings, lobby).
    pub moderate: bool,
    /// Create rooms of the tenant.
    pub create_rooms: bool,
    /// Administer: the tenant (tenant admin) or the installation (operator).
    pub admin: bool,
}

impl Grants {
    /// What an account of `role` may do in its tenant.
    pub fn of_role(role: AccessRole) -> Self {
        match role {
            AccessRole::Guest => Self {
                subscribe: true,
                ..Self::default()
            },
            AccessRole::Participant => Self {
                publish: true,
                subscribe: true,
                ..Self::default()
            },
            AccessRole::Host => Self {
                publish: true,
                subscribe: true,
                moderate: true,
                create_rooms: true,
                admin: false,
            },
            AccessRole::TenantAdmin | AccessRole::Operator => Self {
                publish: true,
                subscribe: true,
                moderate: true,
                create_rooms: true,
                admin: true,
            },
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// User id; for a guest, `guest-` and a random suffix.
    pub sub: String,
    /// The tenant; `None` only for operators (who may act in every tenant).
    pub tenant: Option<String>,
    /// Display name.
    pub name: String,
    pub role: AccessRole,
    /// The one room the token is good for (invites); `None`: every room of the tenant.
    pub room: Option<String>,
    pub grants: Grants,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Token id, for audit records.
    pub jti: String,
}

impl AccessClaims {
    /// Whether the token lets its bearer into `room` of tenant `room_tenant`.
    pub fn covers_room(&self, room: &RoomName, room_tenant: &str) -> bool {
        let tenant_ok = match (&self.role, &self.tenant) {
            (AccessRole::Operator, _) => true,
            (_, Some(t)) => t == room_tenant,
            (_, None) => false,
        };
        tenant_ok && self.room.as_deref().is_none_or(|r| r == room.as_str())
    }

    /// Whether the token administers `tenant` (its tenant admin, or an operator).
    pub fn administers(&self, tenant: &str) -> bool {
        self.grants.admin
            && (self.role == AccessRole::Operator || self.tenant.as_deref() == Some(tenant))
    }

    pub fn is_operator(&self) -> bool {
        self.role == AccessRole::Operator && self.grants.admin
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no access token")]
    Missing,
    #[error("access token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("access token has expired")]
    Expired,
    #[error("access token is not valid yet")]
    NotYetValid,
    #[error("access token is invalid")]
    Invalid,
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub user: String,
    pub tenant: Option<String>,
    pub name: String,
    pub role: AccessRole,
    pub room: Option<String>,
    pub grants: Grants,
    /// Valid from (unix seconds).
    pub not_before: u64,
    /// Valid until (unix seconds).
    pub expires: u64,
}

/// Issues and checks access tokens with one key.
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenAuthority {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A signed token for `request`, issued at `now` (unix seconds).
    pub fn issue(&self, request: TokenRequest, now: u64) -> (String, AccessClaims) {
        let claims = AccessClaims {
            iss: ISSUER.into(),
            aud: ACCESS_AUDIENCE.into(),
            sub: request.user,
            tenant: request.tenant,
            name: request.name,
            role: request.role,
            room: request.room,
            grants: request.grants,
            iat: now,
            nbf: request.not_before,
            exp: request.expires,
            jti: format!("{:016x}", rand::random::<u64>()),
        };
        // HS256 over serde_json-serialisable claims cannot fail.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default();
        (token, claims)
    }

    /// Checks signature, issuer, audience and time window at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<AccessClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[ACCESS_AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        // Time is checked below against the given clock, not the library's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if now < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if claims.role != AccessRole::Operator && claims.tenant.is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// The current time in unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn request(role: AccessRole, tenant: Option<&str>, room: Option<&str>) -> TokenRequest {
        TokenRequest {
            user: "ada".into(),
            tenant: tenant.map(str::to_owned),
            name: "Ada".into(),
            role,
            room: room.map(str::to_owned),
            grants: Grants::of_role(role),
            not_before: NOW,
            expires: NOW + 600,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn a_token_verifies_inside_its_window_only() {
        let authority = TokenAuthority::new(b"mesh secret");
        let (token, issued) = authority.issue(request(AccessRole::Host, Some("school"), None), NOW);
        assert_eq!(authority.verify(&token, NOW + 1), Ok(issued.clone()));
        assert_eq!(
            authority.verify(&token, NOW + 600),
            Err(TokenError::Expired)
        );
        assert_eq!(
            authority.verify(&token, NOW - 1),
            Err(TokenError::NotYetValid)
        );
        assert!(issued.grants.moderate && issued.grants.create_rooms && !issued.grants.admin);
    }

    #[test]
    fn forged_foreign_and_garbage_tokens_are_refused() {
        let authority = TokenAuthority::new(b"mesh secret");
        let (foreign, _) = TokenAuthority::new(b"another mesh")
            .issue(request(AccessRole::Operator, None, None), NOW);
        assert_eq!(authority.verify(&foreign, NOW), Err(TokenError::Invalid));
        assert_eq!(authority.verify("", NOW), Err(TokenError::Missing));
        assert_eq!(authority.verify("a.b.c", NOW), Err(TokenError::Invalid));
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(authority.verify(&long, NOW), Err(TokenError::TooLong));
        // A resume token (other audience, same secret) is not an access token.
        let resume = crate::cluster::resume::ResumeKeys::new(b"mesh secret").issue(
            &room("class"),
            &kaskade_proto::ParticipantId("p01".into()),
            "Ada",
            None,
        );
        assert_eq!(authority.verify(&resume, NOW), Err(TokenError::Invalid));
        // A tenant user's token must name its tenant.
        let (no_tenant, _) = authority.issue(request(AccessRole::Host, None, None), NOW);
        assert_eq!(authority.verify(&no_tenant, NOW), Err(TokenError::Invalid));
    }

    #[test]
    fn rooms_are_covered_by_tenant_and_by_scope() {
        let authority = TokenAuthority::new(b"k");
        let verify = |r: TokenRequest| {
            let (t, _) = authority.issue(r, NOW);
            authority.verify(&t, NOW).unwrap()
        };
        let host = verify(request(AccessRole::Host, Some("school"), None));
        assert!(host.covers_room(&room("maths"), "school"));
        assert!(!host.covers_room(&room("maths"), "other-school"));
        let guest = verify(request(AccessRole::Guest, Some("school"), Some("maths")));
        assert!(guest.covers_room(&room("maths"), "school"));
        assert!(!guest.covers_room(&room("physics"), "school"));
        assert!(!guest.grants.publish && guest.grants.subscribe);
        let operator = verify(request(AccessRole::Operator, None, None));
        assert!(operator.covers_room(&room("maths"), "any"));
        assert!(operator.is_operator() && operator.administers("school"));
        let admin = verify(request(AccessRole::TenantAdmin, Some("school"), None));
        assert!(admin.administers("school") && !admin.administers("other"));
        assert!(!host.administers("school"));
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(AccessRole::Operator > AccessRole::TenantAdmin);
        assert!(AccessRole::TenantAdmin > AccessRole::Host);
        assert!(AccessRole::Host > AccessRole::Participant);
        assert!(AccessRole::Participant > AccessRole::Guest);
    }
}
