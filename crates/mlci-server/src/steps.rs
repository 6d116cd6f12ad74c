//! The seam between the service and the work: [`Steps`], which the binary implements
//! (scm-sync, provision, train, tune, notify, …), and what a running step gets
//! ([`RunContext`]). The built-in [`NoopSteps`] serves tests and benchmarks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlci_core::{Outcome, RunRecord, RunStore};
use serde_json::Value;

/// The type of a step parameter: how a Jenkins form field (always text) becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Number,
    Bool,
}

/// One parameter a step takes (shown to Jenkins as a parameter definition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
    /// The default, as text (`None`: required or absent).
    pub default: Option<&'static str>,
    pub description: &'static str,
}

/// Bad input to a step, naming the field (answered as `400 {"error", "field"}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    pub field: String,
    pub message: String,
}

impl ParamError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a step gives back when it ran to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The step's result (a JSON object): business outcomes live here.
    pub result: Value,
    /// How the pipeline should take it (`unstable` when a goal was not met).
    pub outcome: Outcome,
}

/// Why a step could not run to its end (the run becomes `failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepFailure(pub String);

/// The steps the service runs. Implemented by the binary; every method may be called from
/// several threads at once. `run` is called on a blocking thread, never on the async
/// executor, and may take hours.
pub trait Steps: Send + Sync + 'static {
    /// The step names (`scm-sync`, `train`, …); also the Jenkins job names. Called on the
    /// async executor: must be cheap and must not block (as must `parameters`).
    fn names(&self) -> Vec<String>;

    /// The parameters `step` takes, for Jenkins' parameter definitions and for turning form
    /// fields into typed JSON. Parameters not listed are passed on as strings.
    fn parameters(&self, _step: &str) -> Vec<ParamDef> {
        Vec::new()
    }

    /// Check `params` (a JSON object) before a run is created; an error names the field
    /// (answered 400). Called on a blocking thread; should be quick (the request waits).
    fn validate(&self, step: &str, params: &Value) -> Result<(), ParamError>;

    /// Run `step` to its end (or until `ctx.cancelled()`).
    fn run(&self, step: &str, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure>;

    /// Whether `run`, left `queued` or `running` by a previous process, should run again
    /// (with [`RunContext::resumed`] true) instead of being marked `interrupted`. Tuning
    /// runs resume their experiment.
    fn resumable(&self, _run: &RunRecord) -> bool {
        false
    }
}

/// What a running step gets: its id, a log, a cancel flag and an artifacts folder.
#[derive(Clone)]
pub struct RunContext {
    pub(crate) id: String,
    pub(crate) store: Arc<dyn RunStore>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) by_user: Arc<AtomicBool>,
    pub(crate) artifacts: PathBuf,
    pub(crate) resumed: bool,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("id", &self.id)
            .field("cancelled", &self.cancelled())
            .field("artifacts", &self.artifacts)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    /// The run's id (`r-000042`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Append one line to the run's log (readable at once through the API). A store
    /// failure is logged, not returned: losing a log line must not fail the step.
    pub fn log(&self, line: impl AsRef<str>) {
        let mut text = line.as_ref().to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        self.write_log(text.as_bytes());
    }

    /// Append raw bytes (e.g. a child process's output) to the run's log.
    pub fn write_log(&self, bytes: &[u8]) {
        if let Err(e) = self.store.append_log(&self.id, bytes) {
            tracing::warn!(run = %self.id, error = %e, "could not append to the run's log");
        }
    }

    /// The cancel flag: set by `DELETE /api/v1/runs/{id}` and when the service shuts down.
    pub fn cancel_flag(&self) -> &Arc<AtomicBool> {
        &self.cancel
    }

    /// Whether the run should stop (checkpoint first where that makes sense).
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Whether a person cancelled the run (DELETE, a Jenkins stop), rather than the service
    /// shutting down (after which a resumable run resumes at the next start).
    pub fn cancelled_by_user(&self) -> bool {
        self.by_user.load(Ordering::SeqCst)
    }

    /// The run's artifacts folder (exists): files put here are served by
    /// `/api/v1/runs/{id}/artifacts`.
    pub fn artifacts_dir(&self) -> &Path {
        &self.artifacts
    }

    /// True when this run was started by a previous process and is being resumed.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}

/// The `noop` step's parameters.
pub fn noop_parameters() -> Vec<ParamDef> {
    vec![ParamDef {
        name: "sleep_ms",
        kind: ParamKind::Integer,
        default: Some("0"),
        description: "milliseconds to sleep (cancellable)",
    }]
}

/// Check the `noop` step's parameters: `sleep_ms`, a non-negative integer (default 0).
pub fn validate_noop(params: &Value) -> Result<u64, ParamError> {
    match params.get("sleep_ms") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| ParamError::new("sleep_ms", "must be a non-negative integer (milliseconds)")),
    }
}

/// The `noop` step: logs, sleeps `sleep_ms` (stopping early when cancelled), returns `{}`.
pub fn run_noop(params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
    let sleep_ms = validate_noop(params).map_err(|e| StepFailure(e.to_string()))?;
    ctx.log(format!("noop: sleeping {sleep_ms} ms"));
    let until = Instant::now() + Duration::from_millis(sleep_ms);
    while Instant::now() < until {
        if ctx.cancelled() {
            ctx.log("noop: cancelled");
            return Ok(StepOutput {
                result: Value::Object(Default::default()),
                outcome: Outcome::Aborted,
            });
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(10)));
    }
    ctx.log("noop: done");
    Ok(StepOutput {
        result: Value::Object(Default::default()),
        outcome: Outcome::Success,
    })
}

/// [`Steps`] with only the built-in `noop` step (for tests and the benchmark).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSteps;

impl Steps for NoopSteps {
    fn names(&self) -> Vec<String> {
        vec!["noop".to_owned()]
    }

    fn parameters(&self, step: &str) -> Vec<ParamDef> {
        if step == "noop" {
            noop_parameters()
        } else {
            Vec::new()
        }
    }

    fn validate(&self, _step: &str, params: &Value) -> Result<(), ParamError> {
        validate_noop(params).map(|_| ())
    }

    fn run(&self, _step: &str, params: &Value, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        run_noop(params, ctx)
    }
}
