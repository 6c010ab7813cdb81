//! `RetransmissionBudget`: how much one subscriber leg may retransmit. Answering every NACK on a
//! congested link feeds the congestion (each loss adds a retransmission that is lost again), so a
//! leg earns retransmission bytes as a share of the media it forwards ([`RETRANSMISSION_SHARE`],
//! with a small burst allowance for isolated losses) and never resends one packet again within
//! [`RESEND_INTERVAL`] (a receiver re-asking before a round trip has passed). Pure; time passed in.

use std::time::{Duration, Instant};

/// Retransmitted bytes allowed per forwarded media byte.
pub const RETRANSMISSION_SHARE: f64 = 0.25;
/// Bytes that may be retransmitted at once after a quiet period (a few full packets).
pub const BURST_BYTES: f64 = 8.0 * 1200.0;
/// The same packet is not resent again sooner than this.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(100);
/// Recently resent sequence numbers remembered.
const RECENT: usize = 64;

/// The retransmission allowance of one subscriber leg.
#[derive(Debug, Clone)]
pub struct RetransmissionBudget {
    tokens: f64,
    recent: [(u16, Option<Instant>); RECENT],
    next: usize,
}

impl Default for RetransmissionBudget {
    fn default() -> Self {
        Self {
            tokens: BURST_BYTES,
            recent: [(0, None); RECENT],
            next: 0,
        }
    }
}

impl RetransmissionBudget {
    /// A media packet of `bytes` went to the leg.
    pub fn on_forwarded(&mut self, bytes: usize) {
        self.tokens = (self.tokens + bytes as f64 * RETRANSMISSION_SHARE).min(BURST_BYTES);
    }

    /// May output packet `seq` (`bytes` long) be resent now? Spends the allowance when it may.
    pub fn allow(&mut self, seq: u16, bytes: usize, now: Instant) -> bool {
        let resent_lately = self.recent.iter().any(|(s, at)| {
            *s == seq && at.is_some_and(|at| now.saturating_duration_since(at) < RESEND_INTERVAL)
        });
        if resent_lately || self.tokens < bytes as f64 {
            return false;
        }
        self.tokens -= bytes as f64;
        self.recent[self.next] = (seq, Some(now));
        self.next = (self.next + 1) % RECENT;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isolated_loss_is_resent_at_once() {
        let mut b = RetransmissionBudget::default();
        assert!(b.allow(7, 1200, Instant::now()));
    }

    #[test]
    fn the_same_packet_waits_a_resend_interval() {
        let t = Instant::now();
        let mut b = RetransmissionBudget::default();
        assert!(b.allow(7, 100, t));
        assert!(!b.allow(7, 100, t + Duration::from_millis(50)));
        assert!(b.allow(7, 100, t + RESEND_INTERVAL));
    }

    #[test]
    fn heavy_loss_is_held_to_a_share_of_the_media() {
        let t = Instant::now();
        let mut b = RetransmissionBudget::default();
        let mut resent = 0usize;
        // 1000 media packets of 1000 bytes, each NACKed: only about a quarter (plus the burst)
        // may come back.
        for seq in 0..1000u16 {
            b.on_forwarded(1000);
            if b.allow(seq, 1000, t) {
                resent += 1000;
            }
        }
        let limit = 1000.0 * 1000.0 * RETRANSMISSION_SHARE + BURST_BYTES;
        assert!(resent as f64 <= limit, "{resent} > {limit}");
        assert!(
            resent as f64 >= limit * 0.9,
            "{resent} is far below {limit}"
        );
    }
}
