//! Durable records: the small key-value store behind accounts, tenants, rooms' protection settings
//! and other state that must outlive a node (unlike registrations and room shares, which die with
//! a lease). Keys are `/`-separated paths chosen by the callers (`accounts/…`, `rooms/…`); every
//! write can be conditional on the record's version, so read-modify-write cycles from several
//! nodes do not lose updates.
//!
//! Owns: [`Record`], [`Expect`], the size limits, and the one place keys, prefixes and values are
//! validated ([`check_record_key`], [`check_record_prefix`], [`check_record_value`]), shared by
//! every backend so they refuse the same input with [`ControlError::Invalid`].

use crate::ControlError;

/// Longest key accepted, in bytes.
pub const MAX_RECORD_KEY_LEN: usize = 512;
/// Largest value accepted, in bytes.
pub const MAX_RECORD_VALUE_LEN: usize = 64 * 1024;

/// One stored record. `version` changes on every write of the key (etcd: its mod revision).
/// Versions are never 0 and never reused within one store: a key deleted and written again
/// gets a version it never had before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
}

/// The condition a write or delete is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there (or nothing).
    Any,
    /// Only if the key does not exist.
    Absent,
    /// Only if the key exists with this version.
    Version(u64),
}

impl Expect {
    /// Whether a key whose current version is `current` (`None`: absent) meets this condition.
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        }
    }

    /// The [`ControlError::Conflict`] for a write or delete of `key` refused under this
    /// condition, given the version found (`None`: absent).
    pub fn conflict(self, key: &str, found: Option<u64>) -> ControlError {
        let expected = match self {
            Expect::Any => "anything".to_string(),
            Expect::Absent => "no record".to_string(),
            Expect::Version(v) => format!("version {v}"),
        };
        let found = match found {
            Some(v) => format!("version {v}"),
            None => "no record".to_string(),
        };
        ControlError::Conflict(format!(
            "record {key:?}: expected {expected}, found {found}"
        ))
    }
}

/// Refuses a key that is not a clean relative path: empty, longer than [`MAX_RECORD_KEY_LEN`]
/// bytes, holding a NUL or another control character, starting or ending with `/`, or with an
/// empty, `.` or `..` segment.
pub fn check_record_key(key: &str) -> Result<(), ControlError> {
    if key.is_empty() {
        return Err(invalid("key", key, "is empty"));
    }
    check_path("key", key, key)
}

/// Refuses a prefix for [`list_records`](crate::ControlPlane::list_records) or
/// [`delete_records`](crate::ControlPlane::delete_records): the rules of [`check_record_key`],
/// except that the prefix may end with `/` and, when `allow_empty` (listing everything, never
/// deleting everything), may be empty.
pub fn check_record_prefix(prefix: &str, allow_empty: bool) -> Result<(), ControlError> {
    if prefix.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(invalid("prefix", prefix, "is empty"))
        };
    }
    let path = prefix.strip_suffix('/').unwrap_or(prefix);
    if path.is_empty() {
        return Err(invalid("prefix", prefix, "starts with '/'"));
    }
    check_path("prefix", prefix, path)
}

/// Refuses a value longer than [`MAX_RECORD_VALUE_LEN`] bytes.
pub fn check_record_value(key: &str, value: &[u8]) -> Result<(), ControlError> {
    if value.len() > MAX_RECORD_VALUE_LEN {
        return Err(ControlError::Invalid(format!(
            "value of record {key:?} is {} bytes, more than {MAX_RECORD_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

/// The shared rules; `path` is `full` less an allowed trailing `/`.
fn check_path(what: &str, full: &str, path: &str) -> Result<(), ControlError> {
    if full.len() > MAX_RECORD_KEY_LEN {
        return Err(invalid(
            what,
            full,
            &format!("is {} bytes, more than {MAX_RECORD_KEY_LEN}", full.len()),
        ));
    }
    if full.contains('\0') {
        return Err(invalid(what, full, "contains NUL"));
    }
    if full.chars().any(char::is_control) {
        return Err(invalid(what, full, "contains a control character"));
    }
    if path.starts_with('/') {
        return Err(invalid(what, full, "starts with '/'"));
    }
    if path.ends_with('/') {
        return Err(invalid(what, full, "ends with '/'"));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(invalid(what, full, "has an empty path segment")),
            "." | ".." => {
                return Err(invalid(what, full, &format!("has a {segment:?} segment")));
            }
            _ => {}
        }
    }
    Ok(())
}

fn invalid(what: &str, value: &str, why: &str) -> ControlError {
    // Debug formatting escapes control characters, so the message stays one printable line;
    // a huge key is cut short.
    let shown: String = value.chars().take(80).collect();
    let ellipsis = if shown.len() < value.len() { "…" } else { "" };
    ControlError::Invalid(format!("record {what} {shown:?}{ellipsis} {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<(), ControlError>) -> String {
        match result {
            Err(ControlError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn clean_paths_are_keys() {
        for key in [
            "a",
            "accounts/alice",
            "tenants/t1/rooms/class-1",
            "x/.hidden/y",
            "a..b",
            "ünïcødé/ключ",
        ] {
            assert_eq!(check_record_key(key), Ok(()), "{key}");
        }
        assert_eq!(check_record_key(&"k".repeat(MAX_RECORD_KEY_LEN)), Ok(()));
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        let cases = [
            ("", "is empty"),
            ("/a", "starts with '/'"),
            ("a/", "ends with '/'"),
            ("a//b", "empty path segment"),
            ("a/./b", "\".\" segment"),
            ("..", "\"..\" segment"),
            ("a/..", "\"..\" segment"),
            ("a\0b", "NUL"),
            ("a\nb", "control character"),
            ("a\u{7f}b", "control character"),
            ("a\u{85}b", "control character"),
        ];
        for (key, why) in cases {
            let message = refused(check_record_key(key));
            assert!(message.contains(why), "{key:?}: {message}");
            assert!(
                !message.contains('\n') && !message.contains('\0'),
                "{message}"
            );
        }
        let long = "k".repeat(MAX_RECORD_KEY_LEN + 1);
        let message = refused(check_record_key(&long));
        assert!(message.contains("513 bytes"), "{message}");
        assert!(message.len() < 200, "long keys are cut short: {message}");
    }

    #[test]
    fn prefixes_may_end_with_a_slash_and_only_listing_may_be_empty() {
        assert_eq!(check_record_prefix("", true), Ok(()));
        refused(check_record_prefix("", false));
        for prefix in ["accounts/", "accounts", "acc", "tenants/t1/"] {
            assert_eq!(check_record_prefix(prefix, false), Ok(()), "{prefix}");
        }
        for prefix in ["/", "/a/", "a//", "a//b/", "./", "a/../", "a\u{1}/"] {
            refused(check_record_prefix(prefix, true));
        }
    }

    #[test]
    fn values_are_limited() {
        assert_eq!(
            check_record_value("k", &vec![0; MAX_RECORD_VALUE_LEN]),
            Ok(())
        );
        let message = refused(check_record_value("k", &vec![0; MAX_RECORD_VALUE_LEN + 1]));
        assert!(message.contains("\"k\""), "{message}");
    }

    #[test]
    fn expectations() {
        assert!(Expect::Any.holds(None) && Expect::Any.holds(Some(3)));
        assert!(Expect::Absent.holds(None) && !Expect::Absent.holds(Some(3)));
        assert!(Expect::Version(3).holds(Some(3)));
        assert!(!Expect::Version(3).holds(Some(4)) && !Expect::Version(3).holds(None));
        let ControlError::Conflict(message) = Expect::Version(3).conflict("a/b", Some(4)) else {
            panic!("not a conflict");
        };
        assert_eq!(
            message,
            "record \"a/b\": expected version 3, found version 4"
        );
    }
}
