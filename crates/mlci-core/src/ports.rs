//! The traits adapters implement: where trials run and where experiments
//! are kept. The tuner depends on these, never on the adapters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::{
    EnvironmentRecord, Event, ExperimentRecord, Failure, ModelSpec, Params, Restart, StepMetrics, TrialRecord,
};

/// What an observer tells a running trial after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop now (pruned or cancelled).
    Stop,
}

/// Tells a running trial to stop from outside its step callback: set when the experiment
/// ends (another trial met the goal) or is cancelled. Executors check it between batches or
/// every fraction of a second, so a trial stops within seconds, mid-epoch, keeping its last
/// checkpoint. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    own: Arc<AtomicBool>,
    /// A flag shared by every trial of a run (the cancel flag set by SIGTERM).
    shared: Option<Arc<AtomicBool>>,
}

impl StopSignal {
    /// A signal that is set by [`stop`](Self::stop) or when `shared` is set.
    pub fn new(shared: Option<Arc<AtomicBool>>) -> Self {
        Self {
            own: Arc::default(),
            shared,
        }
    }

    pub fn stop(&self) {
        self.own.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.own.load(Ordering::SeqCst) || self.shared.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// A dataset folder and how its images are split. Trials train on `train` and are judged
/// on `validation`; the `test` images (a `test/` folder, or `test_split` of the training
/// images, chosen by file name hash) are never given to a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSplits {
    pub dir: PathBuf,
    /// Hold out this fraction of each class for validation when there is no `validation/`.
    pub val_split: Option<f64>,
    /// Hold out this fraction of each class's training images as the test split.
    pub test_split: Option<f64>,
}

impl DataSplits {
    /// `dir` with its own folders' splits (no fractions).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            val_split: None,
            test_split: None,
        }
    }
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
    /// The dataset and its splits, for model trials.
    pub dataset: Option<DataSplits>,
    /// Threads this trial may use (the cores split between parallel trials).
    pub threads: usize,
    /// Continue from the checkpoint in `workdir` if there is one.
    pub resume: bool,
    /// Seconds before the trial is killed.
    pub timeout_seconds: Option<f64>,
    /// Set when the trial must stop now (see [`StopSignal`]); the run then ends with
    /// `stopped`, like a [`Control::Stop`].
    pub stop: StopSignal,
}

impl TrialRequest {
    /// The model spec and dataset of a model trial; a `bad_spec` failure naming
    /// `executor` for anything else.
    pub fn model_trial(&self, executor: &str) -> Result<(&ModelSpec, DataSplits), Failure> {
        let TrialWork::Model(spec) = &self.work else {
            return Err(Failure::new(
                crate::FailureKind::BadSpec,
                format!("the {executor} executor runs model trials only"),
            ));
        };
        let Some(data) = self.dataset.clone() else {
            return Err(Failure::new(
                crate::FailureKind::BadSpec,
                "no dataset given for a model trial",
            ));
        };
        Ok((spec, data))
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

impl TrialOutput {
    /// The output of a finished training run of mlci's own trainer: its epochs as steps,
    /// its best epoch's metrics as final values.
    pub fn from_training(trained: &crate::TrainingOutcome) -> Self {
        let b = &trained.best;
        TrialOutput {
            steps: trained.history.iter().map(StepMetrics::from).collect(),
            final_values: [
                ("val_accuracy", b.val_accuracy),
                ("val_loss", b.val_loss),
                ("accuracy", b.accuracy),
                ("loss", b.loss),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            param_count: Some(trained.param_count),
            stopped: trained.stop_reason == crate::StopReason::Stopped,
            seconds: trained.total_seconds,
            image_digest: None,
        }
    }
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

/// Where registered environments and their restart history are kept (the
/// health watcher's memory across its own restarts). Durable like [`Store`].
pub trait EnvironmentStore: Send + Sync {
    /// Insert or replace an environment (keyed by `spec.name`); its history is kept.
    fn put_environment(&self, env: &EnvironmentRecord) -> Result<(), StoreError>;
    fn environment(&self, name: &str) -> Result<Option<EnvironmentRecord>, StoreError>;
    /// All environments by name.
    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError>;
    /// Forget an environment and its history; false if there was none.
    fn delete_environment(&self, name: &str) -> Result<bool, StoreError>;
    fn add_restart(&self, restart: &Restart) -> Result<(), StoreError>;
    /// An environment's restart history, oldest first.
    fn restarts(&self, name: &str) -> Result<Vec<Restart>, StoreError>;
}

/// Where the step service keeps its runs and their logs. Durable like [`Store`]: a run or
/// log line reported before a crash is there after it.
pub trait RunStore: Send + Sync {
    /// Create a run, giving it the next id, queue number and build number of its step; or,
    /// when a run with the same idempotency key exists, return that one instead. Atomic: of
    /// two concurrent calls with one key, one creates and the other gets its run. The flag
    /// is true when this call created the run.
    fn create_run(&self, run: &crate::NewRun) -> Result<(crate::RunRecord, bool), StoreError>;
    /// Replace a run's state, outcome, result, error and times (found by `id`).
    fn update_run(&self, run: &crate::RunRecord) -> Result<(), StoreError>;
    fn run(&self, id: &str) -> Result<Option<crate::RunRecord>, StoreError>;
    /// The run of `step` with build number `number`.
    fn run_by_number(&self, step: &str, number: u64) -> Result<Option<crate::RunRecord>, StoreError>;
    /// Runs matching `filter`, newest first.
    fn runs(&self, filter: &crate::RunFilter) -> Result<Vec<crate::RunRecord>, StoreError>;
    /// How many runs there are of each (step, state), for metrics. The default lists
    /// every run; a store should count them in place.
    fn run_counts(&self) -> Result<Vec<(String, crate::RunState, u64)>, StoreError> {
        let mut counts: std::collections::BTreeMap<(String, &'static str), (crate::RunState, u64)> =
            std::collections::BTreeMap::new();
        for run in self.runs(&crate::RunFilter::default())? {
            counts
                .entry((run.step, run.state.as_str()))
                .or_insert((run.state, 0))
                .1 += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((step, _), (state, n))| (step, state, n))
            .collect())
    }
    /// Remove finished runs with their logs (retention); an unfinished or unknown id is
    /// left alone. Returns the runs removed and the log bytes they held.
    fn delete_runs(&self, ids: &[String]) -> Result<(u64, u64), StoreError>;
    /// Append to a run's log; returns the log's new length in bytes.
    fn append_log(&self, id: &str, bytes: &[u8]) -> Result<u64, StoreError>;
    /// Up to `max` bytes of a run's log from byte `offset` (empty past the end).
    fn read_log(&self, id: &str, offset: u64, max: usize) -> Result<Vec<u8>, StoreError>;
    /// The length of a run's log in bytes.
    fn log_len(&self, id: &str) -> Result<u64, StoreError>;
    /// Whether the store answers (for readiness checks).
    fn ping(&self) -> Result<(), StoreError>;
}
