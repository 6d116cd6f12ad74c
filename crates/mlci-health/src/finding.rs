//! What one check of one environment found and did.

use std::time::{SystemTime, UNIX_EPOCH};

/// What one check of one environment found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub environment: String,
    /// What was found: `running`, `exited 137 (killed)`, `unhealthy`, `missing`, …
    pub observed: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to do (running, or done).
    None,
    Relaunched {
        container: String,
        restart: u32,
    },
    /// Relaunch due at this unix time (back-off).
    Waiting {
        until: f64,
    },
    /// Crash loop: not relaunched any more.
    GaveUp,
    /// Its command exited 2 (bad input): final, never relaunched.
    BadInput,
    /// Could not look or relaunch (Engine unreachable, image gone, …).
    Failed(String),
}

impl Finding {
    /// True when the environment is left unhealed (a crash loop, bad input or a failure).
    pub fn unhealed(&self) -> bool {
        matches!(self.action, Action::GaveUp | Action::BadInput | Action::Failed(_))
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.environment, self.observed)?;
        match &self.action {
            Action::None => Ok(()),
            Action::Relaunched { container, restart } => {
                write!(
                    f,
                    " -> relaunched as {} (restart {restart} in a row)",
                    short(container)
                )
            }
            Action::Waiting { until } => write!(f, " -> relaunch in {:.1} s (back-off)", until - now()),
            Action::GaveUp => write!(f, " -> crash loop: gave up (run `mlci env up` again to retry)"),
            Action::BadInput => write!(
                f,
                " -> bad input: not relaunched, no relaunch can fix it (fix it, then run `mlci env up` again)"
            ),
            Action::Failed(why) => write!(f, " -> NOT HEALED: {why}"),
        }
    }
}

pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
