//! The in-process trial executor: mlci's candle trainer on a rayon pool of
//! the trial's own size, so parallel trials split the cores. Decoded
//! datasets are cached across trials (one decode per input size).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use mlci_core::{
    Control, EpochMetrics, Executor, Failure, FailureKind, StepMetrics, StopSignal, TrialOutput, TrialRequest,
};

use crate::{train, DataSource, Dataset, Observer, TrainError, TrainOptions};

type DataKey = (PathBuf, Option<u64>, Option<u64>, usize, u64);

/// Runs model trials in this process.
#[derive(Default)]
pub struct InProcessExecutor {
    cache: Mutex<HashMap<DataKey, Arc<Dataset>>>,
}

impl std::fmt::Debug for InProcessExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessExecutor").finish_non_exhaustive()
    }
}

impl InProcessExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The dataset at `size`, decoded once and shared by later trials.
    pub fn dataset(&self, source: &DataSource, size: usize) -> Result<Arc<Dataset>, TrainError> {
        let key = (
            source.dir.clone(),
            source.val_split.map(f64::to_bits),
            source.test_split.map(f64::to_bits),
            size,
            source.seed,
        );
        if let Some(d) = self.cache.lock().expect("dataset cache").get(&key) {
            return Ok(d.clone());
        }
        let data = Arc::new(Dataset::load(source, size)?);
        self.cache
            .lock()
            .expect("dataset cache")
            .insert(key, data.clone());
        Ok(data)
    }
}

struct StepObserver<'a> {
    on_step: &'a mut (dyn FnMut(&StepMetrics) -> Control + Send),
    /// The trial timeout, checked after every epoch.
    deadline: Option<std::time::Instant>,
    timed_out: bool,
    /// The experiment ended or was cancelled: stop between batches.
    stop: StopSignal,
}

impl Observer for StepObserver<'_> {
    fn epoch_done(&mut self, m: &EpochMetrics) -> Control {
        let control = (self.on_step)(&StepMetrics::from(m));
        if self.deadline.is_some_and(|d| std::time::Instant::now() > d) {
            self.timed_out = true;
            return Control::Stop;
        }
        control
    }

    fn should_stop(&mut self) -> bool {
        self.stop.is_set()
    }
}

/// Map a training error to the tuner's failure classes.
fn classify(e: TrainError) -> Failure {
    let kind = match &e {
        // Deterministic: the same parameters would fail the same way again.
        TrainError::Spec(_)
        | TrainError::Data(_)
        | TrainError::Diverged { .. }
        | TrainError::Resume { .. } => FailureKind::BadSpec,
        TrainError::StoppedBeforeFirstEpoch
        | TrainError::Model { .. }
        | TrainError::Image { .. }
        | TrainError::Io { .. }
        | TrainError::Candle(_) => FailureKind::Crashed,
        // Another attempt owns the folder: this one's end is nobody's result.
        TrainError::Superseded { .. } => FailureKind::Killed,
    };
    Failure::new(kind, e.to_string())
}

impl Executor for InProcessExecutor {
    fn run(
        &self,
        req: &TrialRequest,
        on_step: &mut (dyn FnMut(&StepMetrics) -> Control + Send),
    ) -> Result<TrialOutput, Failure> {
        let (spec, splits) = req.model_trial("in-process")?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(req.threads.max(1))
            .thread_name(move |i| format!("trial-{i}"))
            .build()
            .map_err(|e| Failure::new(FailureKind::Crashed, format!("cannot start a thread pool: {e}")))?;
        let source = DataSource::new(&splits, spec.training.seed);
        let opts = TrainOptions {
            out_dir: req.workdir.clone(),
            resume: req.resume,
            include_load_seconds: false,
            lease: None,
        };
        // The timeout is checked between epochs (a trial is never cut mid-epoch).
        let deadline = req
            .timeout_seconds
            .map(|t| std::time::Instant::now() + std::time::Duration::from_secs_f64(t));
        let result = pool.install(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let data = self.dataset(&source, spec.input_size)?;
                let mut observer = StepObserver {
                    on_step,
                    deadline,
                    timed_out: false,
                    stop: req.stop.clone(),
                };
                let outcome = train(spec, &data, &opts, &mut observer)?;
                Ok::<_, TrainError>((outcome, observer.timed_out))
            }))
        });
        let outcome = match result {
            Ok(Ok((_, true))) => {
                return Err(Failure::new(
                    FailureKind::Timeout,
                    format!(
                        "stopped after the {:.0} s trial timeout",
                        req.timeout_seconds.unwrap_or_default()
                    ),
                ))
            }
            Ok(Ok((outcome, false))) => outcome,
            // Stopped before any epoch finished: nothing to report, not a failure.
            Ok(Err(TrainError::StoppedBeforeFirstEpoch)) => {
                return Ok(TrialOutput {
                    stopped: true,
                    ..TrialOutput::default()
                })
            }
            Ok(Err(e)) => return Err(classify(e)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(Failure::new(
                    FailureKind::Crashed,
                    format!("training panicked: {msg}"),
                ));
            }
        };
        Ok(TrialOutput::from_training(&outcome))
    }
}
