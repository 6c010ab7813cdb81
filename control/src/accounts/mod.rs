//! Accounts and tenants (issue 7): operators, tenant admins, hosts and participants with
//! argon2id-hashed passwords, a password policy and lockout, stored as records of the control
//! plane (see [`crate::records`]).
//!
//! - [`ids`]: validated [`TenantId`] and [`UserId`];
//! - [`password`]: the [`PasswordPolicy`] and argon2id hashing;
//! - [`lockout`]: the [`LockoutPolicy`] and an account's [`LoginAttempts`];
//! - [`model`]: [`Tenant`], [`Account`] and the [`AccountRole`] hierarchy;
//! - [`directory`]: [`AccountDirectory`], which stores all of it through the control plane and
//!   checks logins (its module doc has the key layout).

pub mod directory;
pub mod ids;
pub mod lockout;
pub mod model;
pub mod password;

pub use directory::{AccountDirectory, DirectoryError, LoginError};
pub use ids::{TenantId, TenantIdError, UserId, UserIdError};
pub use lockout::{LockoutPolicy, LoginAttempts};
pub use model::{Account, AccountRole, NameError, Tenant, TenantLimits};
pub use password::{
    HashError, PasswordHashing, PasswordPolicy, PolicyViolation, hash_password, verify_password,
    verify_password_off_runtime,
};
