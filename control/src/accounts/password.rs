//! Passwords: the [`PasswordPolicy`] a new password must meet, and argon2id hashing into PHC
//! strings ([`hash_password`], [`verify_password`], [`PasswordHashing`] for the parameters).
//! Neither passwords nor hashes are ever logged or printed by this module.

use super::ids::UserId;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};

/// Passwords so common that no policy should accept them (compared case-insensitively). Short
/// on purpose: most entries of the usual breach lists are already refused by the length rule, so
/// this keeps the frequent ones that are long enough to pass it.
const COMMON_PASSWORDS: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456123456",
    "111222333444",
    "password1234",
    "password12345",
    "passwordpassword",
    "passwort1234",
    "qwerty123456",
    "qwertyqwerty",
    "qwertyuiop12",
    "qwertyuiop123",
    "qwertzuiop123",
    "1q2w3e4r5t6y",
    "1qaz2wsx3edc",
    "abcdefghijkl",
    "abc123abc123",
    "iloveyou1234",
    "letmein12345",
    "welcome12345",
    "changeme1234",
    "administrator",
    "administrator1",
];

/// Shortest user id (or e-mail local part) the "must not contain the user id" rule looks for:
/// a one- or two-character id would otherwise forbid most passwords.
const MIN_USER_ID_LEN_CHECKED: usize = 3;

/// Why a password is refused. The messages are meant for the person choosing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("the password must be at least {min_chars} characters long")]
    TooShort { min_chars: usize },
    #[error("the password must be at most {max_bytes} bytes long")]
    TooLong { max_bytes: usize },
    #[error("the password must not be a single character repeated")]
    SingleRepeatedCharacter,
    #[error("the password must not contain the user name")]
    ContainsUserId,
    #[error("the password is one of the most commonly used passwords")]
    TooCommon,
}

/// The rules a new password must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values, not bytes).
    pub min_chars: usize,
    /// Most bytes (UTF-8), so hashing stays cheap and requests small.
    pub max_bytes: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: 12,
            max_bytes: 1024,
        }
    }
}

impl PasswordPolicy {
    /// Checks `password` for the account `user`; the first rule it breaks is returned.
    pub fn check(&self, password: &str, user: &UserId) -> Result<(), PolicyViolation> {
        if password.len() > self.max_bytes {
            return Err(PolicyViolation::TooLong {
                max_bytes: self.max_bytes,
            });
        }
        if password.chars().count() < self.min_chars {
            return Err(PolicyViolation::TooShort {
                min_chars: self.min_chars,
            });
        }
        let mut chars = password.chars();
        if let Some(first) = chars.next()
            && chars.all(|c| c == first)
        {
            return Err(PolicyViolation::SingleRepeatedCharacter);
        }
        let lowercase = password.to_lowercase();
        if user_id_parts(user).any(|part| lowercase.contains(&part)) {
            return Err(PolicyViolation::ContainsUserId);
        }
        if COMMON_PASSWORDS.contains(&lowercase.as_str()) {
            return Err(PolicyViolation::TooCommon);
        }
        Ok(())
    }
}

/// The lowercase strings a password must not contain for `user`: the whole id and, for a
/// mail-like id, its local part — each only if long enough to be meaningful.
fn user_id_parts(user: &UserId) -> impl Iterator<Item = String> {
    let whole = user.as_str().to_ascii_lowercase();
    let local = whole
        .split_once('@')
        .map(|(local, _)| local.to_string())
        .filter(|local| local.len() >= MIN_USER_ID_LEN_CHECKED);
    std::iter::once(whole)
        .filter(|whole| whole.len() >= MIN_USER_ID_LEN_CHECKED)
        .chain(local)
}

/// Why a password could not be hashed (the system's random source failed, or bad parameters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Argon2id with fixed cost parameters. The default is OWASP's recommendation (m = 19456 KiB,
/// t = 2, p = 1). Verification always uses the parameters recorded in the hash, so hashes made
/// under older parameters keep working.
#[derive(Debug, Clone, Default)]
pub struct PasswordHashing {
    params: Params,
}

impl PasswordHashing {
    /// Memory cost of the default parameters, in KiB.
    pub const MEMORY_KIB: u32 = 19_456;
    /// Iterations of the default parameters.
    pub const ITERATIONS: u32 = 2;
    /// Lanes of the default parameters.
    pub const PARALLELISM: u32 = 1;

    /// The smallest parameters argon2 accepts, for tests only: hashing with them takes
    /// microseconds, and nothing hashed with them must ever be stored.
    #[cfg(test)]
    pub(crate) fn cheap_for_tests() -> Self {
        let params = Params::new(Params::MIN_M_COST, 1, 1, None)
            .unwrap_or_else(|error| panic!("minimal argon2 parameters rejected: {error}"));
        Self { params }
    }

    fn hasher(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes `password` under a fresh random salt into a PHC string (`$argon2id$v=19$…`).
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        self.hasher()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|error| HashError(error.to_string()))
    }

    /// [`hash`](Self::hash) on a blocking-task thread, so the async runtime's workers are not
    /// held for the tens of milliseconds (and 19 MiB) argon2 takes.
    pub async fn hash_off_runtime(&self, password: &str) -> Result<String, HashError> {
        let (hashing, password) = (self.clone(), password.to_owned());
        tokio::task::spawn_blocking(move || hashing.hash(&password))
            .await
            .unwrap_or_else(|error| Err(HashError(format!("hashing task failed: {error}"))))
    }

    /// A well-formed hash with these parameters that no password matches. Verifying against it
    /// costs as much as verifying a real hash, so a login for an account that does not exist
    /// takes as long as one with a wrong password.
    pub fn dummy_hash(&self) -> String {
        format!(
            "$argon2id$v=19$m={},t={},p={}$a2Fza2FkZS1ub3QtYS11c2Vy$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
        )
    }
}

/// Hashes `password` with argon2id under the default (OWASP) parameters and a random salt.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    PasswordHashing::default().hash(password)
}

/// Whether `password` matches the PHC string `phc` (argon2id, or any argon2 variant the string
/// names, with its recorded parameters). The comparison is constant-time; a malformed `phc`
/// matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// [`verify_password`] on a blocking-task thread (see [`PasswordHashing::hash_off_runtime`]);
/// false if that task fails.
pub async fn verify_password_off_runtime(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::new(id).expect("valid user id")
    }

    #[test]
    fn policy_accepts_a_reasonable_password() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check("correct horse battery", &user("alice")),
            Ok(())
        );
        assert_eq!(policy.check("Grüße-aus-Köln-7", &user("bob")), Ok(()));
    }

    #[test]
    fn policy_refuses_short_passwords_counting_characters_not_bytes() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check("short-pw-11", &user("alice")),
            Err(PolicyViolation::TooShort { min_chars: 12 })
        );
        assert_eq!(
            policy.check("", &user("alice")),
            Err(PolicyViolation::TooShort { min_chars: 12 })
        );
        // 11 characters but 22 bytes.
        assert_eq!(
            policy.check("äöüäöüäöüäx", &user("alice")),
            Err(PolicyViolation::TooShort { min_chars: 12 })
        );
    }

    #[test]
    fn policy_refuses_overlong_passwords() {
        let policy = PasswordPolicy::default();
        let long = "ab".repeat(513);
        assert_eq!(
            policy.check(&long, &user("alice")),
            Err(PolicyViolation::TooLong { max_bytes: 1024 })
        );
        assert_eq!(policy.check(&"ab".repeat(512), &user("alice")), Ok(()));
    }

    #[test]
    fn policy_refuses_one_repeated_character() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check("aaaaaaaaaaaaaaaa", &user("alice")),
            Err(PolicyViolation::SingleRepeatedCharacter)
        );
    }

    #[test]
    fn policy_refuses_passwords_containing_the_user_id() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check("my-ALICE-password", &user("Alice")),
            Err(PolicyViolation::ContainsUserId)
        );
        assert_eq!(
            policy.check("hello-alice.smith-2024", &user("alice.smith@city.example")),
            Err(PolicyViolation::ContainsUserId)
        );
        // Ids too short to matter are not looked for.
        assert_eq!(policy.check("a long enough secret", &user("a")), Ok(()));
    }

    #[test]
    fn policy_refuses_common_passwords_case_insensitively() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check("Password1234", &user("alice")),
            Err(PolicyViolation::TooCommon)
        );
        assert_eq!(
            policy.check("QWERTY123456", &user("alice")),
            Err(PolicyViolation::TooCommon)
        );
    }

    #[test]
    fn violations_explain_themselves() {
        assert_eq!(
            PolicyViolation::TooShort { min_chars: 12 }.to_string(),
            "the password must be at least 12 characters long"
        );
    }

    #[test]
    fn production_parameters_hash_to_an_argon2id_phc_string_that_verifies() {
        let hash = hash_password("correct horse battery").expect("hashes");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected hash format"
        );
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
    }

    #[test]
    fn hashes_are_salted() {
        let hashing = PasswordHashing::cheap_for_tests();
        let first = hashing.hash("same password here").expect("hashes");
        let second = hashing.hash("same password here").expect("hashes");
        assert_ne!(first, second);
        assert!(verify_password("same password here", &first));
        assert!(verify_password("same password here", &second));
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        assert!(!verify_password("anything", ""));
        assert!(!verify_password("anything", "not a phc string"));
        assert!(!verify_password("", "$argon2id$v=19$m=8,t=1,p=1$$"));
    }

    #[test]
    fn dummy_hash_is_well_formed_and_matches_nothing() {
        for hashing in [
            PasswordHashing::default(),
            PasswordHashing::cheap_for_tests(),
        ] {
            let dummy = hashing.dummy_hash();
            let parsed = PasswordHash::new(&dummy).expect("dummy hash parses");
            assert_eq!(parsed.algorithm.as_str(), "argon2id");
            assert!(parsed.salt.is_some() && parsed.hash.is_some());
        }
        let cheap = PasswordHashing::cheap_for_tests();
        assert!(!verify_password("", &cheap.dummy_hash()));
        assert!(!verify_password("kaskade-not-a-user", &cheap.dummy_hash()));
    }

    #[test]
    fn default_parameters_are_owasps() {
        let params = PasswordHashing::default().params;
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (
                PasswordHashing::MEMORY_KIB,
                PasswordHashing::ITERATIONS,
                PasswordHashing::PARALLELISM
            )
        );
    }
}
