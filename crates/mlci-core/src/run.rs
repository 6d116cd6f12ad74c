//! Runs: one background execution of a step (`scm-sync`, `train`, `tune`, `noop`, …)
//! requested over HTTP, by Jenkins or by the GitHub webhook. What the step service keeps in
//! the [`RunStore`](crate::RunStore) and answers with.
//!
//! Parameters and results are JSON *text* here: this crate does not interpret them (each
//! step does), and keeping them as text means they round-trip byte for byte.

use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Accepted, not started yet.
    Queued,
    Running,
    /// The step ran to its end (its [`Outcome`] says how the pipeline should take it).
    Succeeded,
    /// The step could not run to its end: bad input, a crash (`error` says why).
    Failed,
    /// Stopped on request (`DELETE`, or the service shutting down).
    Cancelled,
    /// The service restarted under it and it was not resumed.
    Interrupted,
}

impl RunState {
    /// Every state, in life order.
    pub const ALL: [RunState; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    /// The state named `s` (as [`RunState::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether the run has ended (nothing more will be logged).
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// What a finished run means for the pipeline (the build result it maps to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit 0, Jenkins `SUCCESS`.
    Success,
    /// Exit 3, Jenkins `UNSTABLE`: it ran, but the goal was not met.
    Unstable,
    /// Exit 1, Jenkins `FAILURE`.
    Failure,
    /// Cancelled (exit 1), Jenkins `ABORTED`.
    Aborted,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Self::Success, Self::Unstable, Self::Failure, Self::Aborted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Unstable => "unstable",
            Self::Failure => "failure",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The Jenkins build result (`SUCCESS`, `UNSTABLE`, `FAILURE`, `ABORTED`).
    pub fn jenkins_result(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Unstable => "UNSTABLE",
            Self::Failure => "FAILURE",
            Self::Aborted => "ABORTED",
        }
    }
}

/// A run to be created: what the caller asked for. The store gives it its id and numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub step: String,
    /// The step's parameters as JSON text (an object).
    pub params: String,
    /// Requests with the same key get the same run (`Idempotency-Key`, `github-<delivery>`).
    pub idempotency_key: Option<String>,
    /// Unix seconds.
    pub created_at: f64,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `r-000042`: [`RunRecord::seq`] with a prefix.
    pub id: String,
    /// 1-based, over all runs, in creation order (the Jenkins queue item number).
    pub seq: u64,
    pub step: String,
    /// 1-based, per step, in creation order (the Jenkins build number of the step's job).
    pub number: u64,
    pub state: RunState,
    /// Set when the run finishes.
    pub outcome: Option<Outcome>,
    /// The step's parameters as JSON text.
    pub params: String,
    /// The step's result as JSON text, once it has one.
    pub result: Option<String>,
    /// Why it failed or was interrupted, for people.
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    /// Unix seconds.
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
}

impl RunRecord {
    /// The id of the run with sequence number `seq`.
    pub fn id_for(seq: u64) -> String {
        format!("r-{seq:06}")
    }

    /// The sequence number in an id written by [`RunRecord::id_for`].
    pub fn seq_of(id: &str) -> Option<u64> {
        id.strip_prefix("r-")
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
    }
}

/// Which runs [`RunStore::runs`](crate::RunStore::runs) lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunFilter {
    pub step: Option<String>,
    /// Only runs in one of these states (all when empty).
    pub states: Vec<RunState>,
    /// Only finished runs with one of these outcomes (any run when empty).
    pub outcomes: Vec<Outcome>,
    /// At most this many; `None` for all.
    pub limit: Option<usize>,
    /// Oldest first instead of newest first (Jenkins' `firstBuild`).
    pub oldest_first: bool,
    /// Only runs whose build number is below this (Jenkins' `previousBuild`).
    pub number_below: Option<u64>,
    /// Only runs whose build number is above this (Jenkins' `nextBuild`).
    pub number_above: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_outcomes_round_trip_through_their_names() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(RunState::parse("done"), None);
    }

    #[test]
    fn ids_carry_the_sequence_number() {
        assert_eq!(RunRecord::id_for(42), "r-000042");
        assert_eq!(RunRecord::seq_of("r-000042"), Some(42));
        assert_eq!(RunRecord::seq_of("r-1234567"), Some(1_234_567));
        for bad in ["r-", "x-000001", "r-+1", "r-../1", "000001"] {
            assert_eq!(RunRecord::seq_of(bad), None, "{bad}");
        }
    }
}
