//! Owns: deadline-bounded polling of an observable condition (the harness never sleeps to
//! synchronise; it re-checks a probe until it holds or the deadline passes).

use std::time::{Duration, Instant};

/// How often [`poll_until`] re-runs its probe.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Runs `probe` until it returns `Ok`, at most for `timeout`. `Err(observation)` means "not yet";
/// the last observation is part of the timeout error so a failure says what was seen.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(last) => {
                if Instant::now() >= deadline {
                    anyhow::bail!(
                        "timed out after {:.1} s waiting for {what}; last observation: {last}",
                        timeout.as_secs_f64()
                    );
                }
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_probe_holds() {
        let mut n = 0;
        let v = poll_until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 { Ok(n) } else { Err(format!("n={n}")) }
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn times_out_with_the_last_observation() {
        let e = poll_until::<()>("never", Duration::from_millis(120), || {
            Err("still no".into())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("never") && e.contains("still no"), "{e}");
    }
}
