//! Rate limiting of keyframe requests (PLI/FIR) sent towards a publisher.
//!
//! Owns [`KeyframeRequestThrottle`]: every subscriber that needs a keyframe would otherwise ask
//! the publisher separately; the throttle lets one request through per interval and counts the
//! rest.

use std::time::{Duration, Instant};

/// Minimum spacing between keyframe requests the node sends for one source.
pub const DEFAULT_KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Lets at most one keyframe request through per `min_interval`.
#[derive(Debug, Clone)]
pub struct KeyframeRequestThrottle {
    min_interval: Duration,
    last_sent: Option<Instant>,
    suppressed: u64,
}

impl KeyframeRequestThrottle {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
            suppressed: 0,
        }
    }

    /// True if a request may be sent at `now` (and records it as sent); the first call is always
    /// true. A `now` earlier than the last send counts as no time elapsed.
    pub fn should_send(&mut self, now: Instant) -> bool {
        let allowed = self
            .last_sent
            .is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval);
        if allowed {
            self.last_sent = Some(now);
        } else {
            self.suppressed += 1;
        }
        allowed
    }

    /// How many requests were refused so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    pub fn min_interval(&self) -> Duration {
        self.min_interval
    }
}

impl Default for KeyframeRequestThrottle {
    fn default() -> Self {
        Self::new(DEFAULT_KEYFRAME_REQUEST_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_call_is_allowed() {
        let mut throttle = KeyframeRequestThrottle::default();
        assert!(throttle.should_send(Instant::now()));
        assert_eq!(throttle.suppressed(), 0);
    }

    #[test]
    fn at_most_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut throttle = KeyframeRequestThrottle::new(ms(500));
        assert!(throttle.should_send(t0));
        assert!(!throttle.should_send(t0));
        assert!(!throttle.should_send(t0 + ms(100)));
        assert!(!throttle.should_send(t0 + ms(499)));
        assert!(throttle.should_send(t0 + ms(500)));
        assert!(!throttle.should_send(t0 + ms(999)));
        assert!(throttle.should_send(t0 + ms(1200)));
        assert_eq!(throttle.suppressed(), 4);
    }

    #[test]
    fn interval_is_measured_from_the_last_send_not_the_last_call() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut throttle = KeyframeRequestThrottle::new(ms(500));
        assert!(throttle.should_send(t0));
        for step in 1..10 {
            let _ = throttle.should_send(t0 + ms(step * 40));
        }
        assert!(throttle.should_send(t0 + ms(500)));
    }

    #[test]
    fn time_going_backwards_is_suppressed() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut throttle = KeyframeRequestThrottle::new(Duration::from_millis(500));
        assert!(throttle.should_send(t0));
        assert!(!throttle.should_send(t0 - Duration::from_secs(5)));
        assert_eq!(throttle.suppressed(), 1);
    }

    #[test]
    fn zero_interval_always_allows() {
        let t0 = Instant::now();
        let mut throttle = KeyframeRequestThrottle::new(Duration::ZERO);
        assert!(throttle.should_send(t0));
        assert!(throttle.should_send(t0));
    }

    #[test]
    fn default_interval_is_500ms() {
        assert_eq!(
            DEFAULT_KEYFRAME_REQUEST_INTERVAL,
            Duration::from_millis(500)
        );
        assert_eq!(
            KeyframeRequestThrottle::default().min_interval(),
            DEFAULT_KEYFRAME_REQUEST_INTERVAL
        );
    }
}
