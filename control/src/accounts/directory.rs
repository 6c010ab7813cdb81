//! [`AccountDirectory`]: tenants and accounts kept as JSON records of the control plane
//! ([`ControlPlane::get_record`] and friends), and the login check with lockout.
//!
//! Key layout (tenant and user ids never contain `/`, see [`super::ids`]):
//!
//! | key                                     | value                                  |
//! |-----------------------------------------|----------------------------------------|
//! | `accounts/operators/{user}`             | an operator's [`Account`] (no tenant)  |
//! | `accounts/tenants/{tenant}`             | the [`Tenant`]                         |
//! | `accounts/tenants/{tenant}/users/{user}`| an [`Account`] of that tenant          |
//!
//! Everything a tenant owns lives under `accounts/tenants/{tenant}/`, so deleting the tenant
//! deletes it with one prefix delete. Listing tenants lists that whole subtree and keeps the
//! tenant records, which is fine for an operator's occasional overview.
//!
//! Every read-modify-write is conditional on the version read ([`Expect::Version`]) and retried
//! a few times on [`ControlError::Conflict`], so concurrent logins on several nodes count every
//! failure. Creation is conditional on absence ([`Expect::Absent`]): duplicates are refused.
//! An account created while its tenant is being deleted (or deleted and re-created) removes
//! itself again: after writing it the tenant is read once more and must be unchanged.
//!
//! The directory checks data, not permissions: callers decide who may call what, with
//! [`Account::can_manage_users_of`] and [`Account::can_grant`].

use super::ids::{TenantId, UserId};
use super::lockout::LockoutPolicy;
use super::model::{Account, AccountRole, NameError, Tenant, TenantLimits, normalize_name};
use super::password::{
    HashError, PasswordHashing, PasswordPolicy, PolicyViolation, verify_password_off_runtime,
};
use crate::ControlError;
use crate::ControlPlane;
use crate::records::{Expect, Record};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// How often a conditional update is tried before giving up on a record that keeps changing.
const MAX_UPDATE_TRIES: usize = 8;

const OPERATORS_PREFIX: &str = "accounts/operators/";
const TENANTS_PREFIX: &str = "accounts/tenants/";

fn tenant_key(tenant: &TenantId) -> String {
    format!("{TENANTS_PREFIX}{tenant}")
}

/// Everything the tenant owns, its accounts included (not its own record).
fn tenant_subtree_prefix(tenant: &TenantId) -> String {
    format!("{TENANTS_PREFIX}{tenant}/")
}

fn accounts_prefix(tenant: Option<&TenantId>) -> String {
    match tenant {
        None => OPERATORS_PREFIX.to_string(),
        Some(tenant) => format!("{TENANTS_PREFIX}{tenant}/users/"),
    }
}

fn account_key(tenant: Option<&TenantId>, user: &UserId) -> String {
    format!("{}{user}", accounts_prefix(tenant))
}

/// Why an administrative operation of the directory failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    #[error("there is no tenant {0}")]
    UnknownTenant(TenantId),
    #[error("account {0} already exists")]
    AccountExists(UserId),
    #[error("there is no account {0}")]
    UnknownAccount(UserId),
    /// Operators belong to no tenant, every other role to exactly one.
    #[error("role {role} does not fit {}", if *.in_tenant { "an account of a tenant" } else { "an account without tenant" })]
    RoleDoesNotFitTenant { role: AccountRole, in_tenant: bool },
    #[error("password refused: {0}")]
    PasswordPolicy(#[from] PolicyViolation),
    #[error("name refused: {0}")]
    InvalidName(#[from] NameError),
    #[error(transparent)]
    Hashing(#[from] HashError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Why a login failed. Says nothing about whether the account exists, except that an existing
/// account is locked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Unknown tenant, unknown user or wrong password.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// Too many failed logins: no password is accepted before `until_ms` (unix ms).
    #[error("account locked after repeated failed logins")]
    Locked { until_ms: u64 },
    /// The store could not be read or written; try again later.
    #[error("account directory unavailable: {0}")]
    Unavailable(ControlError),
}

/// Tenants and accounts over a [`ControlPlane`]'s records.
pub struct AccountDirectory<C> {
    control: Arc<C>,
    password_policy: PasswordPolicy,
    lockout_policy: LockoutPolicy,
    hashing: PasswordHashing,
    /// Verified instead of a real hash when the account does not exist.
    dummy_hash: String,
}

impl<C> Clone for AccountDirectory<C> {
    fn clone(&self) -> Self {
        Self {
            control: Arc::clone(&self.control),
            password_policy: self.password_policy.clone(),
            lockout_policy: self.lockout_policy,
            hashing: self.hashing.clone(),
            dummy_hash: self.dummy_hash.clone(),
        }
    }
}

impl<C: ControlPlane> AccountDirectory<C> {
    /// A directory with the default password and lockout policies.
    pub fn new(control: Arc<C>) -> Self {
        Self::with_policies(control, PasswordPolicy::default(), LockoutPolicy::default())
    }

    pub fn with_policies(
        control: Arc<C>,
        password_policy: PasswordPolicy,
        lockout_policy: LockoutPolicy,
    ) -> Self {
        let hashing = PasswordHashing::default();
        Self {
            control,
            password_policy,
            lockout_policy,
            dummy_hash: hashing.dummy_hash(),
            hashing,
        }
    }

    /// Hashes with `hashing` instead (tests: cheap parameters).
    #[cfg(test)]
    pub(crate) fn with_hashing(mut self, hashing: PasswordHashing) -> Self {
        self.dummy_hash = hashing.dummy_hash();
        self.hashing = hashing;
        self
    }

    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.password_policy
    }

    pub fn lockout_policy(&self) -> &LockoutPolicy {
        &self.lockout_policy
    }

    // ---- tenants ----

    /// Creates tenant `id` named `name`; refused if it exists.
    pub async fn create_tenant(
        &self,
        id: TenantId,
        name: &str,
        limits: TenantLimits,
        now_ms: u64,
    ) -> Result<Tenant, DirectoryError> {
        let tenant = Tenant {
            name: normalize_name(name)?,
            id,
            created_at_ms: now_ms,
            limits,
        };
        let key = tenant_key(&tenant.id);
        match self
            .control
            .put_record(&key, encode(&key, &tenant)?, Expect::Absent)
            .await
        {
            Ok(_) => Ok(tenant),
            Err(ControlError::Conflict(_)) => Err(DirectoryError::TenantExists(tenant.id)),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, DirectoryError> {
        Ok(self.read_tenant(id).await?.map(|(tenant, _)| tenant))
    }

    /// Every tenant, ordered by id.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, DirectoryError> {
        let records = self.control.list_records(TENANTS_PREFIX).await?;
        records
            .iter()
            .filter(|record| {
                record
                    .key
                    .strip_prefix(TENANTS_PREFIX)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .map(|record| {
                let tenant: Tenant = decode(record)?;
                if tenant_key(&tenant.id) != record.key {
                    return Err(misplaced(&record.key));
                }
                Ok(tenant)
            })
            .collect()
    }

    /// Deletes tenant `id` and everything under it (its accounts first of all). True if the
    /// tenant existed; leftovers under its prefix are removed either way.
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<bool, DirectoryError> {
        // The record first: from then on no new account passes the tenant check.
        let existed = self
            .control
            .delete_record(&tenant_key(id), Expect::Any)
            .await?;
        self.control
            .delete_records(&tenant_subtree_prefix(id))
            .await?;
        Ok(existed)
    }

    // ---- accounts ----

    /// Creates an account: operators with `tenant: None`, every other role in an existing
    /// tenant. Refused if the user exists there, or the password breaks the policy.
    pub async fn create_account(
        &self,
        tenant: Option<&TenantId>,
        user: UserId,
        display_name: &str,
        role: AccountRole,
        password: &str,
        now_ms: u64,
    ) -> Result<Account, DirectoryError> {
        if !role.fits_tenant(tenant) {
            return Err(DirectoryError::RoleDoesNotFitTenant {
                role,
                in_tenant: tenant.is_some(),
            });
        }
        let display_name = normalize_name(display_name)?;
        self.password_policy.check(password, &user)?;
        let tenant_version = match tenant {
            None => None,
            Some(tenant) => match self.read_tenant(tenant).await? {
                Some((_, version)) => Some(version),
                None => return Err(DirectoryError::UnknownTenant(tenant.clone())),
            },
        };
        let key = account_key(tenant, &user);
        // Checked before hashing, which is the expensive part; the write below decides.
        if self.control.get_record(&key).await?.is_some() {
            return Err(DirectoryError::AccountExists(user));
        }
        let account = Account {
            tenant: tenant.cloned(),
            password_hash: self.hashing.hash_off_runtime(password).await?,
            user,
            display_name,
            role,
            attempts: Default::default(),
            created_at_ms: now_ms,
        };
        match self
            .control
            .put_record(&key, encode(&key, &account)?, Expect::Absent)
            .await
        {
            Ok(_) => {}
            Err(ControlError::Conflict(_)) => {
                return Err(DirectoryError::AccountExists(account.user));
            }
            Err(error) => return Err(error.into()),
        }
        if let (Some(tenant), Some(tenant_version)) = (tenant, tenant_version) {
            let now = self.read_tenant(tenant).await?.map(|(_, version)| version);
            if now != Some(tenant_version) {
                // Deleted (or replaced) meanwhile: the account must not outlive it.
                self.control.delete_record(&key, Expect::Any).await?;
                return Err(DirectoryError::UnknownTenant(tenant.clone()));
            }
        }
        Ok(account)
    }

    pub async fn get_account(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
    ) -> Result<Option<Account>, DirectoryError> {
        Ok(self
            .read_account(tenant, user)
            .await?
            .map(|(account, _)| account))
    }

    /// Deletes an account; true if it existed.
    pub async fn delete_account(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
    ) -> Result<bool, DirectoryError> {
        Ok(self
            .control
            .delete_record(&account_key(tenant, user), Expect::Any)
            .await?)
    }

    /// The accounts of `tenant` (`None`: the operators), ordered by user id.
    pub async fn list_accounts(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<Account>, DirectoryError> {
        if let Some(tenant) = tenant
            && self.read_tenant(tenant).await?.is_none()
        {
            return Err(DirectoryError::UnknownTenant(tenant.clone()));
        }
        let records = self.control.list_records(&accounts_prefix(tenant)).await?;
        records
            .iter()
            .map(|record| {
                let account: Account = decode(record)?;
                if account_key(account.tenant.as_ref(), &account.user) != record.key {
                    return Err(misplaced(&record.key));
                }
                Ok(account)
            })
            .collect()
    }

    /// Replaces an account's password (checked against the policy) and lifts any lock.
    pub async fn set_password(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
        password: &str,
    ) -> Result<(), DirectoryError> {
        self.password_policy.check(password, user)?;
        let password_hash = self.hashing.hash_off_runtime(password).await?;
        self.update_account(tenant, user, |account| {
            account.password_hash = password_hash.clone();
            account.attempts.on_success();
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Gives an account another role within its tenant (an operator stays without tenant, a
    /// tenant's account stays in it).
    pub async fn set_role(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
        role: AccountRole,
    ) -> Result<Account, DirectoryError> {
        if !role.fits_tenant(tenant) {
            return Err(DirectoryError::RoleDoesNotFitTenant {
                role,
                in_tenant: tenant.is_some(),
            });
        }
        self.update_account(tenant, user, |account| {
            account.role = role;
            Ok(())
        })
        .await
    }

    /// Lifts a lock and forgets failed logins (an administrator's action).
    pub async fn unlock(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
    ) -> Result<Account, DirectoryError> {
        self.update_account(tenant, user, |account| {
            account.attempts.on_success();
            Ok(())
        })
        .await
    }

    // ---- login ----

    /// Checks `password` for `user` of `tenant` (`None`: an operator) at `now_ms`, records the
    /// outcome (failures count towards the lock, a success clears them) and returns the
    /// account. A locked account refuses every password, the right one included.
    pub async fn login(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
        password: &str,
        now_ms: u64,
    ) -> Result<Account, LoginError> {
        let found = self
            .read_login_account(tenant, user)
            .await
            .map_err(LoginError::Unavailable)?;
        let Some((mut account, mut version)) = found else {
            // As slow as a wrong password, so the answer's timing does not tell.
            verify_password_off_runtime(password, &self.dummy_hash).await;
            return Err(LoginError::InvalidCredentials);
        };
        if let Some(until_ms) = locked_until(&account, now_ms) {
            return Err(LoginError::Locked { until_ms });
        }
        let verified_hash = account.password_hash.clone();
        let password_ok = verify_password_off_runtime(password, &verified_hash).await;
        let key = account_key(tenant, user);
        for _ in 0..MAX_UPDATE_TRIES {
            let mut updated = account.clone();
            let locked_now = if password_ok {
                updated.attempts.on_success();
                None
            } else {
                updated.attempts.on_failure(now_ms, &self.lockout_policy)
            };
            let outcome = match locked_now {
                _ if password_ok => Ok(updated.clone()),
                Some(until_ms) => Err(LoginError::Locked { until_ms }),
                None => Err(LoginError::InvalidCredentials),
            };
            if updated == account {
                return outcome;
            }
            let value = encode(&key, &updated).map_err(LoginError::Unavailable)?;
            match self
                .control
                .put_record(&key, value, Expect::Version(version))
                .await
            {
                Ok(_) => return outcome,
                Err(ControlError::Conflict(_)) => {}
                Err(error) => return Err(LoginError::Unavailable(error)),
            }
            // Changed meanwhile (another login, an administrator): decide again on the new state.
            let Some((current, current_version)) = self
                .read_account(tenant, user)
                .await
                .map_err(login_unavailable)?
            else {
                return Err(LoginError::InvalidCredentials);
            };
            if let Some(until_ms) = locked_until(&current, now_ms) {
                return Err(LoginError::Locked { until_ms });
            }
            if current.password_hash != verified_hash {
                // The password was changed: the one checked is no longer the account's.
                return Err(LoginError::InvalidCredentials);
            }
            (account, version) = (current, current_version);
        }
        Err(LoginError::Unavailable(ControlError::Conflict(format!(
            "login attempts of {key:?} kept changing"
        ))))
    }

    // ---- helpers ----

    /// The account to check a login against, or `None` when its tenant or itself is missing.
    async fn read_login_account(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
    ) -> Result<Option<(Account, u64)>, ControlError> {
        if let Some(tenant) = tenant
            && self
                .control
                .get_record(&tenant_key(tenant))
                .await?
                .is_none()
        {
            return Ok(None);
        }
        self.read_account(tenant, user)
            .await
            .map_err(|error| match error {
                DirectoryError::Control(error) => error,
                other => ControlError::Malformed(other.to_string()),
            })
    }

    async fn read_tenant(&self, id: &TenantId) -> Result<Option<(Tenant, u64)>, DirectoryError> {
        let Some(record) = self.control.get_record(&tenant_key(id)).await? else {
            return Ok(None);
        };
        let tenant: Tenant = decode(&record)?;
        if tenant.id != *id {
            return Err(misplaced(&record.key));
        }
        Ok(Some((tenant, record.version)))
    }

    async fn read_account(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
    ) -> Result<Option<(Account, u64)>, DirectoryError> {
        let Some(record) = self.control.get_record(&account_key(tenant, user)).await? else {
            return Ok(None);
        };
        let account: Account = decode(&record)?;
        if account.tenant.as_ref() != tenant || account.user != *user {
            return Err(misplaced(&record.key));
        }
        Ok(Some((account, record.version)))
    }

    /// Applies `change` to the stored account and writes it back under its version, re-reading
    /// and re-applying on a conflict.
    async fn update_account(
        &self,
        tenant: Option<&TenantId>,
        user: &UserId,
        mut change: impl FnMut(&mut Account) -> Result<(), DirectoryError>,
    ) -> Result<Account, DirectoryError> {
        let key = account_key(tenant, user);
        for _ in 0..MAX_UPDATE_TRIES {
            let Some((account, version)) = self.read_account(tenant, user).await? else {
                return Err(DirectoryError::UnknownAccount(user.clone()));
            };
            let mut updated = account.clone();
            change(&mut updated)?;
            if updated == account {
                return Ok(updated);
            }
            match self
                .control
                .put_record(&key, encode(&key, &updated)?, Expect::Version(version))
                .await
            {
                Ok(_) => return Ok(updated),
                Err(ControlError::Conflict(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(ControlError::Conflict(format!("account {key:?} kept changing")).into())
    }
}

fn locked_until(account: &Account, now_ms: u64) -> Option<u64> {
    account
        .attempts
        .locked_until_ms
        .filter(|_| account.attempts.is_locked(now_ms))
}

fn login_unavailable(error: DirectoryError) -> LoginError {
    LoginError::Unavailable(match error {
        DirectoryError::Control(error) => error,
        other => ControlError::Malformed(other.to_string()),
    })
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, ControlError> {
    serde_json::to_vec(value)
        .map_err(|error| ControlError::Invalid(format!("record {key:?} not encodable: {error}")))
}

fn decode<T: DeserializeOwned>(record: &Record) -> Result<T, DirectoryError> {
    serde_json::from_slice(&record.value).map_err(|error| {
        ControlError::Malformed(format!("record {:?}: {error}", record.key)).into()
    })
}

/// A record whose content names another key than the one it is stored under.
fn misplaced(key: &str) -> DirectoryError {
    ControlError::Malformed(format!("record {key:?} does not match its key")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryControlPlane;

    const T0: u64 = 1_700_000_000_000;
    const GOOD_PASSWORD: &str = "correct horse battery";
    const OTHER_PASSWORD: &str = "staple gun 42 elephant";

    fn directory() -> AccountDirectory<MemoryControlPlane> {
        AccountDirectory::new(Arc::new(MemoryControlPlane::default()))
            .with_hashing(PasswordHashing::cheap_for_tests())
    }

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).expect("valid tenant id")
    }

    fn user(id: &str) -> UserId {
        UserId::new(id).expect("valid user id")
    }

    async fn with_tenant_admin(
        dir: &AccountDirectory<MemoryControlPlane>,
        tenant_id: &str,
        admin: &str,
    ) -> TenantId {
        let id = tenant(tenant_id);
        dir.create_tenant(id.clone(), "A Tenant", TenantLimits::default(), T0)
            .await
            .expect("tenant created");
        dir.create_account(
            Some(&id),
            user(admin),
            "The Admin",
            AccountRole::TenantAdmin,
            GOOD_PASSWORD,
            T0,
        )
        .await
        .expect("admin created");
        id
    }

    #[tokio::test]
    async fn tenant_and_admin_are_created_and_log_in() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let tenant = dir.get_tenant(&city).await.expect("reads").expect("exists");
        assert_eq!(tenant.name, "A Tenant");
        assert_eq!(tenant.limits, TenantLimits::default());
        let account = dir
            .login(Some(&city), &user("admin"), GOOD_PASSWORD, T0 + 1)
            .await
            .expect("logs in");
        assert_eq!(account.role, AccountRole::TenantAdmin);
        assert_eq!(account.tenant, Some(city.clone()));
        assert!(account.password_hash.starts_with("$argon2id$"));
        let listed = dir.list_accounts(Some(&city)).await.expect("lists");
        assert_eq!(listed, vec![account]);
        assert_eq!(dir.list_tenants().await.expect("lists"), vec![tenant]);
    }

    #[tokio::test]
    async fn duplicate_tenants_and_accounts_are_refused() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        assert_eq!(
            dir.create_tenant(city.clone(), "Again", TenantLimits::default(), T0)
                .await,
            Err(DirectoryError::TenantExists(city.clone()))
        );
        assert_eq!(
            dir.create_account(
                Some(&city),
                user("admin"),
                "Impostor",
                AccountRole::Host,
                OTHER_PASSWORD,
                T0
            )
            .await,
            Err(DirectoryError::AccountExists(user("admin")))
        );
        let admin = dir
            .get_account(Some(&city), &user("admin"))
            .await
            .expect("reads")
            .expect("exists");
        assert_eq!(admin.display_name, "The Admin", "the original is untouched");
    }

    #[tokio::test]
    async fn same_user_id_in_two_tenants_are_two_accounts() {
        let dir = directory();
        let a = with_tenant_admin(&dir, "a", "alex").await;
        let b = tenant("b");
        dir.create_tenant(b.clone(), "B", TenantLimits::default(), T0)
            .await
            .expect("tenant b");
        // A user of tenant a cannot log in as tenant b...
        assert_eq!(
            dir.login(Some(&b), &user("alex"), GOOD_PASSWORD, T0).await,
            Err(LoginError::InvalidCredentials)
        );
        // ...nor as an operator...
        assert_eq!(
            dir.login(None, &user("alex"), GOOD_PASSWORD, T0).await,
            Err(LoginError::InvalidCredentials)
        );
        // ...and a namesake in b has its own password.
        dir.create_account(
            Some(&b),
            user("alex"),
            "Other Alex",
            AccountRole::Participant,
            OTHER_PASSWORD,
            T0,
        )
        .await
        .expect("namesake created");
        assert_eq!(
            dir.login(Some(&b), &user("alex"), GOOD_PASSWORD, T0).await,
            Err(LoginError::InvalidCredentials)
        );
        let in_b = dir
            .login(Some(&b), &user("alex"), OTHER_PASSWORD, T0)
            .await
            .expect("logs in to b");
        assert_eq!(in_b.tenant, Some(b));
        let in_a = dir
            .login(Some(&a), &user("alex"), GOOD_PASSWORD, T0)
            .await
            .expect("logs in to a");
        assert_eq!(in_a.role, AccountRole::TenantAdmin);
    }

    #[tokio::test]
    async fn unknown_tenant_and_unknown_user_look_like_a_wrong_password() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        for (tenant, name) in [
            (Some(tenant("nowhere")), "admin"),
            (Some(city.clone()), "nobody"),
            (None, "nobody"),
        ] {
            assert_eq!(
                dir.login(tenant.as_ref(), &user(name), GOOD_PASSWORD, T0)
                    .await,
                Err(LoginError::InvalidCredentials)
            );
        }
        assert_eq!(
            dir.login(Some(&city), &user("admin"), OTHER_PASSWORD, T0)
                .await,
            Err(LoginError::InvalidCredentials)
        );
        // Logins for unknown users leave nothing behind.
        assert_eq!(dir.list_accounts(None).await.expect("lists"), vec![]);
        assert_eq!(
            dir.list_accounts(Some(&city)).await.expect("lists").len(),
            1
        );
    }

    #[tokio::test]
    async fn five_failures_lock_until_the_lock_time_has_passed() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let admin = user("admin");
        for i in 0..4 {
            assert_eq!(
                dir.login(Some(&city), &admin, OTHER_PASSWORD, T0 + i).await,
                Err(LoginError::InvalidCredentials)
            );
        }
        let until_ms = T0 + 4 + 15 * 60 * 1000;
        assert_eq!(
            dir.login(Some(&city), &admin, OTHER_PASSWORD, T0 + 4).await,
            Err(LoginError::Locked { until_ms })
        );
        // Even the right password is refused while locked, and the lock is not extended.
        assert_eq!(
            dir.login(Some(&city), &admin, GOOD_PASSWORD, T0 + 5).await,
            Err(LoginError::Locked { until_ms })
        );
        assert_eq!(
            dir.login(Some(&city), &admin, GOOD_PASSWORD, until_ms - 1)
                .await,
            Err(LoginError::Locked { until_ms })
        );
        // Once it has run out the right password works and clears the record.
        let account = dir
            .login(Some(&city), &admin, GOOD_PASSWORD, until_ms)
            .await
            .expect("logs in after the lock");
        assert!(account.attempts.is_clean());
        let stored = dir
            .get_account(Some(&city), &admin)
            .await
            .expect("reads")
            .expect("exists");
        assert!(stored.attempts.is_clean());
    }

    #[tokio::test]
    async fn a_success_resets_the_failure_count() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let admin = user("admin");
        for _ in 0..4 {
            let _ = dir.login(Some(&city), &admin, OTHER_PASSWORD, T0).await;
        }
        dir.login(Some(&city), &admin, GOOD_PASSWORD, T0)
            .await
            .expect("logs in");
        for _ in 0..4 {
            assert_eq!(
                dir.login(Some(&city), &admin, OTHER_PASSWORD, T0).await,
                Err(LoginError::InvalidCredentials)
            );
        }
    }

    #[tokio::test]
    async fn set_password_and_unlock_lift_a_lock() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let admin = user("admin");
        for _ in 0..5 {
            let _ = dir.login(Some(&city), &admin, OTHER_PASSWORD, T0).await;
        }
        dir.unlock(Some(&city), &admin).await.expect("unlocks");
        dir.login(Some(&city), &admin, GOOD_PASSWORD, T0)
            .await
            .expect("logs in after unlock");
        for _ in 0..5 {
            let _ = dir.login(Some(&city), &admin, OTHER_PASSWORD, T0).await;
        }
        dir.set_password(Some(&city), &admin, "a brand new secret")
            .await
            .expect("password set");
        assert_eq!(
            dir.login(Some(&city), &admin, GOOD_PASSWORD, T0).await,
            Err(LoginError::InvalidCredentials)
        );
        dir.login(Some(&city), &admin, "a brand new secret", T0)
            .await
            .expect("logs in with the new password");
        assert_eq!(
            dir.set_password(Some(&city), &admin, "short").await,
            Err(DirectoryError::PasswordPolicy(PolicyViolation::TooShort {
                min_chars: 12
            }))
        );
        assert_eq!(
            dir.set_password(Some(&city), &user("nobody"), "a brand new secret")
                .await,
            Err(DirectoryError::UnknownAccount(user("nobody")))
        );
    }

    #[tokio::test]
    async fn deleting_a_tenant_deletes_its_accounts() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let county = with_tenant_admin(&dir, "county", "admin").await;
        dir.create_account(
            Some(&city),
            user("host"),
            "Host",
            AccountRole::Host,
            OTHER_PASSWORD,
            T0,
        )
        .await
        .expect("host created");
        assert!(dir.delete_tenant(&city).await.expect("deletes"));
        assert_eq!(dir.get_tenant(&city).await.expect("reads"), None);
        assert_eq!(
            dir.list_accounts(Some(&city)).await,
            Err(DirectoryError::UnknownTenant(city.clone()))
        );
        assert_eq!(
            dir.login(Some(&city), &user("admin"), GOOD_PASSWORD, T0)
                .await,
            Err(LoginError::InvalidCredentials)
        );
        // Re-creating the id starts empty.
        dir.create_tenant(city.clone(), "New City", TenantLimits::default(), T0)
            .await
            .expect("re-created");
        assert_eq!(dir.list_accounts(Some(&city)).await.expect("lists"), vec![]);
        // The other tenant is untouched.
        assert_eq!(
            dir.list_accounts(Some(&county)).await.expect("lists").len(),
            1
        );
        assert!(
            !dir.delete_tenant(&tenant("nowhere"))
                .await
                .expect("deletes")
        );
    }

    #[tokio::test]
    async fn operators_live_without_tenant_and_others_need_one() {
        let dir = directory();
        let root = dir
            .create_account(
                None,
                user("root"),
                "Operator",
                AccountRole::Operator,
                GOOD_PASSWORD,
                T0,
            )
            .await
            .expect("operator created");
        assert_eq!(root.tenant, None);
        assert_eq!(dir.list_accounts(None).await.expect("lists"), vec![root]);
        dir.login(None, &user("root"), GOOD_PASSWORD, T0)
            .await
            .expect("operator logs in");
        assert_eq!(
            dir.create_account(
                None,
                user("host"),
                "Host",
                AccountRole::Host,
                GOOD_PASSWORD,
                T0
            )
            .await,
            Err(DirectoryError::RoleDoesNotFitTenant {
                role: AccountRole::Host,
                in_tenant: false
            })
        );
        let city = with_tenant_admin(&dir, "city", "admin").await;
        assert_eq!(
            dir.create_account(
                Some(&city),
                user("op2"),
                "Operator",
                AccountRole::Operator,
                GOOD_PASSWORD,
                T0
            )
            .await,
            Err(DirectoryError::RoleDoesNotFitTenant {
                role: AccountRole::Operator,
                in_tenant: true
            })
        );
        assert_eq!(
            dir.create_account(
                Some(&tenant("nowhere")),
                user("host"),
                "Host",
                AccountRole::Host,
                GOOD_PASSWORD,
                T0
            )
            .await,
            Err(DirectoryError::UnknownTenant(tenant("nowhere")))
        );
        // Tenant listings do not include the operators, nor accounts.
        assert_eq!(dir.list_tenants().await.expect("lists").len(), 1);
    }

    #[tokio::test]
    async fn policy_violations_and_bad_names_are_surfaced() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let cases = [
            ("short", PolicyViolation::TooShort { min_chars: 12 }),
            ("zzzzzzzzzzzzzzzz", PolicyViolation::SingleRepeatedCharacter),
            ("i-am-bob.builder-ok", PolicyViolation::ContainsUserId),
            ("Password1234", PolicyViolation::TooCommon),
        ];
        for (password, violation) in cases {
            let refused = dir
                .create_account(
                    Some(&city),
                    user("bob.builder"),
                    "Bob",
                    AccountRole::Host,
                    password,
                    T0,
                )
                .await;
            assert_eq!(refused, Err(DirectoryError::PasswordPolicy(violation)));
        }
        let refused = dir
            .create_account(
                Some(&city),
                user("bob"),
                "Bob",
                AccountRole::Host,
                "short",
                T0,
            )
            .await
            .expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "password refused: the password must be at least 12 characters long"
        );
        assert_eq!(
            dir.create_account(
                Some(&city),
                user("bob"),
                "  ",
                AccountRole::Host,
                GOOD_PASSWORD,
                T0
            )
            .await,
            Err(DirectoryError::InvalidName(NameError::Empty))
        );
        assert_eq!(
            dir.list_accounts(Some(&city)).await.expect("lists").len(),
            1
        );
    }

    #[tokio::test]
    async fn roles_change_within_their_scope() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let demoted = dir
            .set_role(Some(&city), &user("admin"), AccountRole::Host)
            .await
            .expect("role set");
        assert_eq!(demoted.role, AccountRole::Host);
        assert_eq!(
            dir.set_role(Some(&city), &user("admin"), AccountRole::Operator)
                .await,
            Err(DirectoryError::RoleDoesNotFitTenant {
                role: AccountRole::Operator,
                in_tenant: true
            })
        );
        assert_eq!(
            dir.set_role(Some(&city), &user("nobody"), AccountRole::Host)
                .await,
            Err(DirectoryError::UnknownAccount(user("nobody")))
        );
        assert!(
            dir.delete_account(Some(&city), &user("admin"))
                .await
                .expect("deletes")
        );
        assert!(
            !dir.delete_account(Some(&city), &user("admin"))
                .await
                .expect("deletes")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_failed_logins_are_all_counted() {
        let dir = directory();
        let city = with_tenant_admin(&dir, "city", "admin").await;
        let logins = (0..5).map(|_| {
            let (dir, city) = (dir.clone(), city.clone());
            tokio::spawn(async move {
                dir.login(Some(&city), &user("admin"), OTHER_PASSWORD, T0)
                    .await
            })
        });
        for login in logins.collect::<Vec<_>>() {
            let outcome = login.await.expect("login task");
            assert!(
                matches!(
                    outcome,
                    Err(LoginError::InvalidCredentials | LoginError::Locked { .. })
                ),
                "{outcome:?}"
            );
        }
        assert!(matches!(
            dir.login(Some(&city), &user("admin"), GOOD_PASSWORD, T0)
                .await,
            Err(LoginError::Locked { .. })
        ));
    }

    #[tokio::test]
    async fn the_default_directory_hashes_with_production_parameters() {
        let dir = AccountDirectory::new(Arc::new(MemoryControlPlane::default()));
        assert!(
            dir.dummy_hash
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
        );
    }
}
