//! Lockout after repeated failed logins: the [`LockoutPolicy`] and an account's
//! [`LoginAttempts`] state. Pure: the time is always passed in (unix milliseconds), so the rules
//! are tested with a controlled clock and the state is stored with the account as plain numbers.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When an account locks and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failed logins that lock the account; 0 disables locking.
    pub max_failures: u32,
    /// How long a lock lasts. When it ends the count starts again from zero.
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lock_for: Duration::from_secs(15 * 60),
        }
    }
}

/// An account's recent failed logins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAttempts {
    /// Failed logins since the last success (or since the last lock ended).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Unix time (ms) until which logins are refused, if the account was locked.
    #[serde(default)]
    pub locked_until_ms: Option<u64>,
}

impl LoginAttempts {
    /// Whether logins are refused at `now_ms`.
    pub fn is_locked(&self, now_ms: u64) -> bool {
        self.locked_until_ms.is_some_and(|until| now_ms < until)
    }

    /// Records a failed login at `now_ms`; returns when the account is locked until, if this
    /// failure locked it (or it already was). A lock that has run out is forgotten first, so the
    /// account gets `max_failures` new tries.
    pub fn on_failure(&mut self, now_ms: u64, policy: &LockoutPolicy) -> Option<u64> {
        if self.is_locked(now_ms) {
            return self.locked_until_ms;
        }
        if self.locked_until_ms.is_some() {
            *self = Self::default();
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if policy.max_failures > 0 && self.consecutive_failures >= policy.max_failures {
            let lock_ms = u64::try_from(policy.lock_for.as_millis()).unwrap_or(u64::MAX);
            let until = now_ms.saturating_add(lock_ms);
            self.locked_until_ms = Some(until);
            return Some(until);
        }
        None
    }

    /// Records a successful login: failures and any lock are forgotten.
    pub fn on_success(&mut self) {
        *self = Self::default();
    }

    /// Whether there is anything to forget (saves a write after a clean login).
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const MINUTE_MS: u64 = 60_000;

    #[test]
    fn locks_after_max_failures_and_not_before() {
        let policy = LockoutPolicy::default();
        let mut attempts = LoginAttempts::default();
        for i in 0..4 {
            assert_eq!(attempts.on_failure(T0 + i, &policy), None);
            assert!(!attempts.is_locked(T0 + i));
        }
        let until = attempts.on_failure(T0 + 4, &policy);
        assert_eq!(until, Some(T0 + 4 + 15 * MINUTE_MS));
        assert!(attempts.is_locked(T0 + 5));
        assert!(attempts.is_locked(T0 + 4 + 15 * MINUTE_MS - 1));
        assert!(!attempts.is_locked(T0 + 4 + 15 * MINUTE_MS));
    }

    #[test]
    fn failures_while_locked_do_not_extend_the_lock() {
        let policy = LockoutPolicy::default();
        let mut attempts = LoginAttempts::default();
        for _ in 0..5 {
            attempts.on_failure(T0, &policy);
        }
        let until = T0 + 15 * MINUTE_MS;
        assert_eq!(attempts.on_failure(T0 + MINUTE_MS, &policy), Some(until));
        assert_eq!(attempts.locked_until_ms, Some(until));
        assert_eq!(attempts.consecutive_failures, 5);
    }

    #[test]
    fn an_expired_lock_gives_fresh_tries() {
        let policy = LockoutPolicy::default();
        let mut attempts = LoginAttempts::default();
        for _ in 0..5 {
            attempts.on_failure(T0, &policy);
        }
        let later = T0 + 16 * MINUTE_MS;
        assert!(!attempts.is_locked(later));
        assert_eq!(attempts.on_failure(later, &policy), None);
        assert_eq!(
            attempts,
            LoginAttempts {
                consecutive_failures: 1,
                locked_until_ms: None
            }
        );
    }

    #[test]
    fn success_resets_everything() {
        let policy = LockoutPolicy::default();
        let mut attempts = LoginAttempts::default();
        for _ in 0..3 {
            attempts.on_failure(T0, &policy);
        }
        assert!(!attempts.is_clean());
        attempts.on_success();
        assert!(attempts.is_clean());
        for _ in 0..4 {
            assert_eq!(attempts.on_failure(T0, &policy), None);
        }
    }

    #[test]
    fn zero_max_failures_never_locks() {
        let policy = LockoutPolicy {
            max_failures: 0,
            lock_for: Duration::from_secs(60),
        };
        let mut attempts = LoginAttempts::default();
        for _ in 0..100 {
            assert_eq!(attempts.on_failure(T0, &policy), None);
        }
        assert!(!attempts.is_locked(T0));
    }

    #[test]
    fn huge_lock_durations_saturate() {
        let policy = LockoutPolicy {
            max_failures: 1,
            lock_for: Duration::MAX,
        };
        let mut attempts = LoginAttempts::default();
        assert_eq!(attempts.on_failure(T0, &policy), Some(u64::MAX));
        assert!(attempts.is_locked(u64::MAX - 1));
    }

    #[test]
    fn attempts_round_trip_through_json() {
        let attempts = LoginAttempts {
            consecutive_failures: 2,
            locked_until_ms: Some(T0),
        };
        let json = serde_json::to_string(&attempts).expect("serialises");
        assert_eq!(
            serde_json::from_str::<LoginAttempts>(&json).expect("parses"),
            attempts
        );
        assert_eq!(
            serde_json::from_str::<LoginAttempts>("{}").expect("defaults"),
            LoginAttempts::default()
        );
    }
}
