//! Abuse limits at the HTTP edge: logins and joins per client address and per user, and
//! signalling messages per WebSocket session, as keyed GCRA limiters (the `governor` crate). A
//! refused request gets 429 (HTTP) or a `rate_limited` error (signalling) with the wait; nothing
//! else changes. Addresses are used as keys only, never logged. Stale keys are dropped by
//! [`RateLimits::forget_idle`], which the node calls periodically.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, NoOpMiddleware>;
/// One session's own limiter.
pub type SessionLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;

/// How many of each, per minute (0 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub logins_per_address: u32,
    pub joins_per_address: u32,
    pub joins_per_user: u32,
    /// Signalling messages per session and second.
    pub messages_per_session_second: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        // Generous per address: a school's pupils may all come through one NAT address.
        Self {
            logins_per_address: 60,
            joins_per_address: 1200,
            joins_per_user: 60,
            messages_per_session_second: 50,
        }
    }
}

impl RateSettings {
    /// No limits at all (benchmarks drive hundreds of joins a second from one address).
    pub fn off() -> Self {
        Self {
            logins_per_address: 0,
            joins_per_address: 0,
            joins_per_user: 0,
            messages_per_session_second: 0,
        }
    }
}

/// `n` per minute with a burst of half of that (at least 1); `None` for 0.
fn per_minute(n: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(n)?;
    let burst = NonZeroU32::new((n / 2).max(1))?;
    Some(Quota::per_minute(rate).allow_burst(burst))
}

fn keyed<K: Hash + Eq + Clone>(n: u32) -> Option<Keyed<K>> {
    per_minute(n).map(RateLimiter::keyed)
}

/// What was refused and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

fn check<K: Hash + Eq + Clone>(limiter: &Option<Keyed<K>>, key: &K) -> Result<(), Limited> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| Limited {
        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
    })
}

/// The node's limiters.
pub struct RateLimits {
    settings: RateSettings,
    logins: Option<Keyed<IpAddr>>,
    joins: Option<Keyed<IpAddr>>,
    user_joins: Option<Keyed<String>>,
}

impl RateLimits {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            settings,
            logins: keyed(settings.logins_per_address),
            joins: keyed(settings.joins_per_address),
            user_joins: keyed(settings.joins_per_user),
        }
    }

    pub fn login(&self, from: IpAddr) -> Result<(), Limited> {
        check(&self.logins, &from)
    }

    /// A join (WebSocket join, WHIP or WHEP request) from `from`.
    pub fn join(&self, from: IpAddr) -> Result<(), Limited> {
        check(&self.joins, &from)
    }

    /// A join by an authenticated user (`tenant/user`).
    pub fn user_join(&self, user: &str) -> Result<(), Limited> {
        check(&self.user_joins, &user.to_owned())
    }

    /// A limiter for one signalling session, if messages are limited.
    pub fn session(&self) -> Option<SessionLimiter> {
        let rate = NonZeroU32::new(self.settings.messages_per_session_second)?;
        let burst = NonZeroU32::new(rate.get().saturating_mul(2))?;
        Some(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    }

    /// Drops the state of keys that are back to a full allowance.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.logins {
            l.retain_recent();
        }
        if let Some(l) = &self.joins {
            l.retain_recent();
        }
        if let Some(l) = &self.user_joins {
            l.retain_recent();
        }
    }
}

/// Checks one message of a session against its limiter.
pub fn session_message(limiter: &Option<SessionLimiter>) -> Result<(), Limited> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check().map_err(|not_until| Limited {
        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_address_waits_and_others_do_not() {
        let limits = RateLimits::new(RateSettings {
            logins_per_address: 8,
            ..RateSettings::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // A burst of half the per-minute rate.
        for _ in 0..4 {
            assert!(limits.login(a).is_ok());
        }
        let limited = limits.login(a).unwrap_err();
        assert!(limited.retry_after > Duration::from_secs(1));
        assert!(limited.retry_after <= Duration::from_secs(8));
        assert!(limits.login(b).is_ok(), "another address is not affected");
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = RateLimits::new(RateSettings::off());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..1000 {
            assert!(limits.join(a).is_ok());
            assert!(limits.user_join("t/u").is_ok());
        }
        assert!(limits.session().is_none());
        assert!(session_message(&limits.session()).is_ok());
    }

    #[test]
    fn a_session_may_burst_twice_its_rate() {
        let limits = RateLimits::new(RateSettings {
            messages_per_session_second: 5,
            ..RateSettings::default()
        });
        let session = limits.session();
        for _ in 0..10 {
            assert!(session_message(&session).is_ok());
        }
        assert!(session_message(&session).is_err());
    }
}
