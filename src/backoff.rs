//! Exponential backoff for everything mtuvisor retries: dockerd restarts,
//! Docker API reconnects, enforcement restarts. One rule for all of them:
//! the delay doubles up to a cap, and an attempt that ran for the stable
//! period resets it (a dockerd that ran an hour and then died is restarted
//! at once, not after the cap).

use std::time::Duration;

/// Exponential backoff, optionally with jitter (±25 %) so that many
/// sidecars do not reconnect to a restarted dockerd in lockstep.
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
    /// A run at least this long resets the delay.
    stable: Duration,
}

impl Backoff {
    /// `first`, doubling to `max`; reset after a run of `stable`.
    pub fn new(first: Duration, max: Duration, stable: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
            jitter: false,
            stable,
        }
    }

    pub fn with_jitter(self) -> Backoff {
        Backoff {
            jitter: true,
            ..self
        }
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay before the next attempt, when the last one failed at once.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if !self.jitter {
            return base;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = (nanos % 500) as f64 / 1000.0 - 0.25;
        base.mul_f64(1.0 + jitter)
    }

    /// The delay before the next attempt after one that ran for `ran`: a
    /// stable run starts the backoff over.
    pub fn after_run(&mut self, ran: Duration) -> Duration {
        if ran >= self.stable {
            self.reset();
        }
        self.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(30),
            Duration::from_secs(60),
        );
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.after_run(Duration::from_secs(59)), Duration::from_secs(2));
        assert_eq!(b.after_run(Duration::from_secs(60)), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut b = Backoff::new(
            Duration::from_secs(4),
            Duration::from_secs(4),
            Duration::from_secs(60),
        )
        .with_jitter();
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(3) && d <= Duration::from_secs(5),
                "{d:?}"
            );
        }
    }
}
