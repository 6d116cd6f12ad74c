//! The traits adapters implement: where trials run and where experiments
//! are kept. The tuner depends on these, never on the adapters.

use std::path::PathBuf;

use crate::{Event, ExperimentRecord, Failure, ModelSpec, Params, StepMetrics, TrialRecord};

/// What an observer tells a running trial after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop now (pruned or cancelled).
    Stop,
}

/// What one trial should run.
#[derive(Debug, Clone)]
pub enum TrialWork {
    /// Train this mlci model spec (parameters already applied).
    Model(ModelSpec),
    /// Run this argv (placeholders already substituted).
    Command(Vec<String>),
}

/// One run (attempt) of a trial.
#[derive(Debug, Clone)]
pub struct TrialRequest {
    pub experiment: String,
    pub trial: u32,
    pub attempt: u32,
    pub params: Params,
    pub work: TrialWork,
    /// The trial's own folder: outputs, checkpoint, log.
    pub workdir: PathBuf,
    /// Dataset folder and validation split, for model trials.
    pub dataset: Option<(PathBuf, Option<f64>)>,
    /// Threads this trial may use (the cores split between parallel trials).
    pub threads: usize,
    /// Continue from the checkpoint in `workdir` if there is one.
    pub resume: bool,
    /// Seconds before the trial is killed.
    pub timeout_seconds: Option<f64>,
}

impl TrialRequest {
    /// The model spec and dataset (folder, validation split) of a model
    /// trial; a `bad_spec` failure naming `executor` for anything else.
    pub fn model_trial(&self, executor: &str) -> Result<(&ModelSpec, PathBuf, Option<f64>), Failure> {
        let TrialWork::Model(spec) = &self.work else {
            return Err(Failure::new(
                crate::FailureKind::BadSpec,
                format!("the {executor} executor runs model trials only"),
            ));
        };
        let Some((dir, val_split)) = self.dataset.clone() else {
            return Err(Failure::new(
                crate::FailureKind::BadSpec,
                "no dataset given for a model trial",
            ));
        };
        Ok((spec, dir, val_split))
    }
}

/// A finished run of a trial.
#[derive(Debug, Clone, Default)]
pub struct TrialOutput {
    /// Every step reported, in order (including steps before a resume).
    pub steps: Vec<StepMetrics>,
    /// Final metrics (e.g. from `metrics.json`), when the trial gives them.
    pub final_values: std::collections::BTreeMap<String, f64>,
    pub param_count: Option<usize>,
    /// True when the observer stopped it.
    pub stopped: bool,
    pub seconds: f64,
    /// Digest of the container image, for container trials.
    pub image_digest: Option<String>,
}

/// Runs trials. Implementations block until the trial ends; the tuner calls
/// them from worker threads. `on_step` is called after every step; when it
/// returns [`Control::Stop`] the run must end soon after with `stopped`.
pub trait Executor: Send + Sync {
    fn run(
        &self,
        request: &TrialRequest,
        on_step: &mut (dyn FnMut(&StepMetrics) -> Control + Send),
    ) -> Result<TrialOutput, Failure>;
}

/// A storage failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Where experiments, trials, steps and events are kept. Every write is
/// durable when the call returns (a crash right after loses nothing).
pub trait Store: Send + Sync {
    fn create_experiment(&self, experiment: &ExperimentRecord) -> Result<(), StoreError>;
    fn update_experiment(&self, experiment: &ExperimentRecord) -> Result<(), StoreError>;
    fn experiment(&self, id: &str) -> Result<Option<ExperimentRecord>, StoreError>;
    /// All experiments, newest first.
    fn experiments(&self) -> Result<Vec<ExperimentRecord>, StoreError>;
    /// Insert or replace a trial's record (its steps are kept separately).
    fn upsert_trial(&self, experiment: &str, trial: &TrialRecord) -> Result<(), StoreError>;
    /// Record one step of a trial; a step recorded again (after a resume) replaces it.
    fn record_step(&self, experiment: &str, trial: u32, step: &StepMetrics) -> Result<(), StoreError>;
    /// Forget a trial's steps after `step` (a resume from an earlier checkpoint).
    fn truncate_steps(&self, experiment: &str, trial: u32, after_step: usize) -> Result<(), StoreError>;
    /// Trials in number order, each with its steps.
    fn trials(&self, experiment: &str) -> Result<Vec<TrialRecord>, StoreError>;
    fn add_event(&self, experiment: &str, event: &Event) -> Result<(), StoreError>;
    fn events(&self, experiment: &str) -> Result<Vec<Event>, StoreError>;
}
