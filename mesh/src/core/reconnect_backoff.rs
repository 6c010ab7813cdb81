//! Delays between attempts to re-dial a dropped relay link.
//!
//! Owns [`ReconnectBackoff`]: exponential backoff with jitter. The base delay starts at
//! [`DEFAULT_INITIAL_BACKOFF`], doubles with every failure and is capped at
//! [`DEFAULT_MAX_BACKOFF`]; each delay handed out is the base delay scaled by a factor in
//! `[0.8, 1.2)` derived from a random `u32` the caller supplies (the crate has no random number
//! generator, and tests can pass fixed values). Jitter is applied after the cap, so the delays of
//! many nodes re-dialling at once stay spread out; a capped delay can therefore reach just under
//! 1.2 × the cap.
//!
//! Usage: call [`ReconnectBackoff::next_delay`] after the link drops and after every failed dial,
//! and wait that long before the next dial. Call [`ReconnectBackoff::reset`] only once a new
//! connection has proved stable — deciding that is the caller's job; a connection that has been
//! up for [`DEFAULT_STABLE_AFTER`] is a reasonable rule. Resetting as soon as the handshake
//! succeeds would let a peer that accepts and then immediately drops the link be re-dialled every
//! 100 ms forever.

use std::time::Duration;

/// Base delay before the first re-dial.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Largest base delay (before jitter).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Suggested uptime after which a connection counts as stable and the caller should
/// [`ReconnectBackoff::reset`]. Not used by the backoff itself.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(1);

/// Exponential re-dial backoff with caller-supplied jitter.
#[derive(Debug, Clone)]
pub struct ReconnectBackoff {
    initial: Duration,
    max: Duration,
    /// Delays handed out since construction or the last reset.
    failures: u32,
}

impl ReconnectBackoff {
    /// A backoff whose base delay starts at `initial`, doubles per failure and stops growing at
    /// `max` (an `initial` above `max` is capped to `max`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay to wait before the next dial, and records one more failure. `random` is any
    /// uniformly distributed `u32`; it scales the base delay by `0.8 + 0.4 × random / 2^32`
    /// (so `0` gives 80 %, `1 << 31` exactly 100 %, `u32::MAX` just under 120 %).
    pub fn next_delay(&mut self, random: u32) -> Duration {
        let delay = jittered(self.base_delay(), random);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Back to the initial delay. Call once a connection has been up long enough to count as
    /// stable (see the module documentation).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The base (un-jittered) delay the next [`Self::next_delay`] will use.
    pub fn base_delay(&self) -> Duration {
        1u32.checked_shl(self.failures)
            .and_then(|factor| self.initial.checked_mul(factor))
            .map_or(self.max, |delay| delay.min(self.max))
    }

    /// How many delays were handed out since construction or the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self::new(DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF)
    }
}

/// `base × (4·2^32 + 2·random) / (5·2^32)`, i.e. `base × [0.8, 1.2)`, in integer nanoseconds.
fn jittered(base: Duration, random: u32) -> Duration {
    let numerator = (4u128 << 32) + 2 * u128::from(random);
    let nanos = base.as_nanos().saturating_mul(numerator) / (5u128 << 32);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let subsec_nanos = (nanos % 1_000_000_000) as u32;
    Duration::new(secs, subsec_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MID: u32 = 1 << 31;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_100ms_up_to_5s() {
        let mut backoff = ReconnectBackoff::default();
        let delays: Vec<_> = (0..9).map(|_| backoff.next_delay(MID)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(ms)
        );
        assert_eq!(backoff.failures(), 9);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for failures in 0..10 {
            let mut backoff = ReconnectBackoff::default();
            for _ in 0..failures {
                backoff.next_delay(MID);
            }
            let base = backoff.base_delay();
            for random in [0, 1, 12_345, MID - 1, MID, MID + 1, u32::MAX - 1, u32::MAX] {
                let delay = backoff.clone().next_delay(random);
                assert!(delay >= base * 4 / 5, "{delay:?} < 0.8 × {base:?}");
                assert!(delay < base * 6 / 5, "{delay:?} >= 1.2 × {base:?}");
            }
        }
    }

    #[test]
    fn jitter_extremes() {
        assert_eq!(ReconnectBackoff::default().next_delay(0), ms(80));
        assert_eq!(ReconnectBackoff::default().next_delay(MID), ms(100));
        let highest = ReconnectBackoff::default().next_delay(u32::MAX);
        assert!(highest < ms(120) && highest > ms(120) - Duration::from_micros(1));
        // At the cap, jitter still spreads delays on both sides of it.
        let mut capped = ReconnectBackoff::default();
        for _ in 0..20 {
            capped.next_delay(MID);
        }
        assert_eq!(capped.clone().next_delay(0), ms(4000));
        assert!(capped.clone().next_delay(u32::MAX) > ms(5999));
    }

    #[test]
    fn jitter_is_monotonic_in_random() {
        let backoff = ReconnectBackoff::default();
        let mut previous = Duration::ZERO;
        for random in (0..=u32::MAX).step_by(1 << 24) {
            let delay = backoff.clone().next_delay(random);
            assert!(delay >= previous);
            previous = delay;
        }
    }

    #[test]
    fn reset_returns_to_the_initial_delay() {
        let mut backoff = ReconnectBackoff::default();
        for _ in 0..5 {
            backoff.next_delay(MID);
        }
        assert_eq!(backoff.base_delay(), ms(3200));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.next_delay(MID), ms(100));
        assert_eq!(backoff.next_delay(MID), ms(200));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut backoff = ReconnectBackoff::default();
        for _ in 0..1000 {
            assert!(backoff.next_delay(u32::MAX) < ms(6000));
        }
        assert_eq!(backoff.base_delay(), ms(5000));
        let mut backoff = ReconnectBackoff {
            failures: u32::MAX,
            ..ReconnectBackoff::default()
        };
        assert_eq!(backoff.next_delay(MID), ms(5000));
        assert_eq!(backoff.failures(), u32::MAX);
        let mut huge = ReconnectBackoff::new(Duration::MAX, Duration::MAX);
        assert!(huge.next_delay(u32::MAX) > Duration::ZERO);
    }

    #[test]
    fn custom_bounds() {
        let mut backoff = ReconnectBackoff::new(ms(10), ms(50));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay(MID)).collect();
        assert_eq!(delays, [10, 20, 40, 50, 50].map(ms));
        // An initial delay above the cap is capped.
        let mut backoff = ReconnectBackoff::new(ms(10_000), ms(50));
        assert_eq!(backoff.next_delay(MID), ms(50));
        let mut backoff = ReconnectBackoff::new(Duration::ZERO, ms(50));
        assert_eq!(backoff.next_delay(u32::MAX), Duration::ZERO);
    }
}
