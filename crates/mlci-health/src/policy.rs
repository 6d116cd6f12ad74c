//! How the watcher treats deaths: the interval, the back-off and the crash-loop limit.

use std::time::Duration;

/// How the watcher treats deaths.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Time between full reconciles (the classic cron: a minute).
    pub interval: Duration,
    /// Back-off before the second relaunch in a row; doubled for each further one.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Relaunches in a row after which the watcher gives up (crash loop).
    pub crash_loop_limit: u32,
    /// A container that ran this long before dying starts a new count.
    pub stable_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            crash_loop_limit: 5,
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// Back-off before relaunch number `n` in a row (1-based): none for the
    /// first, then `initial`, `2 * initial`, … capped at `max`.
    pub fn backoff(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let factor = 2f64.powi((n - 2).min(30) as i32);
        self.backoff_initial.mul_f64(factor).min(self.backoff_max)
    }
}
