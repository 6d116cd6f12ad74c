//! Trials, experiments and their records: what the store keeps and the
//! reports show.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{EpochMetrics, ExperimentSpec, Params};

/// Metrics reported at one step (epoch) of a trial. Model trials report
/// `loss`, `accuracy`, `val_loss`, `val_accuracy`; command trials whatever
/// their output names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based step (epoch) number.
    pub step: usize,
    pub values: BTreeMap<String, f64>,
    /// Seconds the step took, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// The step value that counts the validation images of `val_accuracy` (for its interval).
pub const VAL_IMAGES: &str = "val_images";

impl From<&EpochMetrics> for StepMetrics {
    fn from(m: &EpochMetrics) -> Self {
        let mut values = BTreeMap::from([
            ("loss".to_owned(), m.loss),
            ("accuracy".to_owned(), m.accuracy),
            ("val_loss".to_owned(), m.val_loss),
            ("val_accuracy".to_owned(), m.val_accuracy),
            ("images_per_second".to_owned(), m.images_per_second),
        ]);
        if m.val_images > 0 {
            values.insert(VAL_IMAGES.to_owned(), m.val_images as f64);
        }
        Self {
            step: m.epoch,
            values,
            seconds: Some(m.seconds),
        }
    }
}

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Suggested and recorded, not started (or re-queued after a crash).
    Pending,
    Running,
    Completed,
    /// Stopped early by the pruner: a finished trial with a partial curve.
    Pruned,
    Failed,
    /// Stopped because the experiment ended (another trial met the goal) while it ran:
    /// a finished trial with a partial curve that nobody judged.
    Stopped,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Pruned => "pruned",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Pruned | Self::Failed | Self::Stopped
        )
    }
}

/// Why a trial failed. Decides whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The parameters make an impossible model: retrying cannot help.
    BadSpec,
    /// Killed by the kernel or the container runtime for memory.
    OutOfMemory,
    /// Exited with an error or a signal of its own.
    Crashed,
    /// Ran to the end without reporting the objective metric.
    NoMetrics,
    /// Killed from outside (SIGKILL, `docker kill`, a lost host).
    Killed,
    /// Ran past the trial timeout.
    Timeout,
}

impl FailureKind {
    /// Whether running the same trial again may succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Crashed | Self::Killed | Self::Timeout)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadSpec => "bad_spec",
            Self::OutOfMemory => "out_of_memory",
            Self::Crashed => "crashed",
            Self::NoMetrics => "no_metrics",
            Self::Killed => "killed",
            Self::Timeout => "timeout",
        }
    }
}

/// A classified failure with its message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Where a trial's result came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// Commit of the model repository, when the trial ran from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// `files=N sha256=…` over the dataset's file names and sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_fingerprint: Option<String>,
    pub seed: u64,
    pub mlci_version: String,
    /// Digest of the container image the trial ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

/// One trial of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// 1-based number within the experiment, in order of suggestion.
    pub number: u32,
    pub params: Params,
    pub state: TrialState,
    /// Runs of this trial so far (1 + retries).
    pub attempts: u32,
    /// The objective value (best over the trial's steps), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Step-by-step metrics (the learning curve).
    #[serde(default)]
    pub steps: Vec<StepMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Training seconds over all attempts.
    #[serde(default)]
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_count: Option<usize>,
    /// Folder with the trial's outputs (model, metrics, checkpoint, log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<String>,
    #[serde(default)]
    pub provenance: Provenance,
}

impl TrialRecord {
    pub fn new(number: u32, params: Params, provenance: Provenance) -> Self {
        Self {
            number,
            params,
            state: TrialState::Pending,
            attempts: 0,
            value: None,
            steps: Vec::new(),
            failure: None,
            seconds: 0.0,
            param_count: None,
            artifacts: None,
            provenance,
        }
    }

    /// The validation images its accuracies were measured on, when its steps say.
    pub fn val_images(&self) -> Option<u64> {
        self.steps
            .iter()
            .rev()
            .find_map(|s| s.values.get(VAL_IMAGES))
            .map(|&n| n as u64)
    }

    /// The objective's values step by step (absent steps skipped).
    pub fn curve(&self, metric: &str) -> Vec<(usize, f64)> {
        self.steps
            .iter()
            .filter_map(|s| s.values.get(metric).map(|v| (s.step, *v)))
            .collect()
    }
}

/// Where an experiment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentState {
    Running,
    /// A trial met the goal.
    Succeeded,
    /// The budget ran out without meeting the goal (or there was no goal).
    BudgetExhausted,
    /// Too many trials failed.
    Failed,
}

impl ExperimentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Failed => "failed",
        }
    }
}

/// An experiment as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    /// Unique id (`name-xxxxxx`).
    pub id: String,
    pub spec: ExperimentSpec,
    pub state: ExperimentState,
    /// Unix seconds.
    pub created_at: f64,
    pub updated_at: f64,
    /// The chosen trial, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_trial: Option<u32>,
    /// Why it ended, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Wall seconds the loop has run, summed over resumes.
    #[serde(default)]
    pub wall_seconds: f64,
    /// The chosen model measured when the experiment ended (validation and test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<crate::Evaluation>,
}

/// Something that happened in an experiment, for its log and report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: f64,
    /// `trial_started`, `trial_completed`, `trial_pruned`, `trial_failed`,
    /// `trial_retried`, `trial_requeued`, `goal_met`, `budget_exhausted`, `resumed`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
    pub message: String,
}
