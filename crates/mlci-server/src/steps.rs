//! The seam between the service and the work: [`Steps`], which the binary implements
//! (scm-sync, provision, train, tune, notify, …), and what a running step gets
//! ([`RunContext`]). The built-in [`NoopSteps`] serves tests and benchmarks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlci_core::{Outcome, RunStore};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::params::RawParams;

/// The type of a step parameter: how a Jenkins form field (always text) becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Number,
    Bool,
}

/// One parameter a step takes (shown to Jenkins as a parameter definition), derived from
/// the step's params struct by [`param_definitions`](crate::param_definitions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDef {
    pub name: String,
    pub kind: ParamKind,
    /// The default, as text (`None`: required or absent).
    pub default: Option<String>,
    pub description: String,
    /// Whether a run needs it.
    pub required: bool,
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

impl StepOutput {
    /// A result built from any serialisable value (a step's own result struct).
    pub fn new(result: &impl serde::Serialize, outcome: Outcome) -> Self {
        Self {
            result: serde_json::to_value(result).unwrap_or(Value::Null),
            outcome,
        }
    }
}

/// Why a step could not run to its end (the run becomes `failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepFailure(pub String);

/// A closed set of steps, each with its own params struct: usually declared with
/// [`step_set!`](crate::step_set), which derives all of this from the structs.
pub trait StepSet: Sized + Send + Sync + 'static {
    /// The step names, in the order jobs are listed (also the Jenkins job names).
    fn names() -> Vec<&'static str>;
    /// Parse `step`'s parameters at the edge; unknown fields are refused and the error
    /// names the field.
    fn parse(step: &str, raw: &RawParams) -> Result<Self, ParamError>;
    /// This step's name.
    fn name(&self) -> &'static str;
    /// `step`'s parameter definitions (Jenkins; typing form fields; the docs table).
    fn definitions(step: &str) -> Vec<ParamDef>;
    /// `step`'s parameters as a JSON Schema (the OpenAPI document).
    fn schema(step: &str) -> Option<Value>;
}

/// The steps the service runs, on parameters already parsed into [`Steps::Step`].
/// Implemented by the binary; every method may be called from several threads at once.
pub trait Steps: Send + Sync + 'static {
    /// The step set: one variant, one params struct per step.
    type Step: StepSet;

    /// Check what only the host can tell (a known repository, an existing dataset) before
    /// a run is created; an error names the field (answered 400). Called on a blocking
    /// thread; should be quick (the request waits).
    fn check(&self, _step: &Self::Step) -> Result<(), ParamError> {
        Ok(())
    }

    /// Run `step` to its end (or until `ctx.cancelled()`), on a blocking thread, never on
    /// the async executor; may take hours.
    fn run(&self, step: &Self::Step, ctx: &RunContext) -> Result<StepOutput, StepFailure>;

    /// Whether `step`, left `queued` or `running` by a previous process, should run again
    /// (with [`RunContext::resumed`] true) instead of being marked `interrupted`. Tuning
    /// runs resume their experiment.
    fn resumable(&self, _step: &Self::Step) -> bool {
        false
    }
}

/// [`Steps`] with its step type erased, as the service holds it: parameters are parsed
/// here, at the edge, and the parsed step is what is checked and what runs.
pub(crate) trait DynSteps: Send + Sync {
    fn names(&self) -> Vec<String>;
    fn definitions(&self, step: &str) -> Vec<ParamDef>;
    fn schema(&self, step: &str) -> Option<Value>;
    /// Parse and check (before a run is created).
    fn accept(&self, step: &str, raw: &RawParams) -> Result<(), ParamError>;
    /// Parse the stored parameters again (the same function, so the same step) and run.
    fn run(&self, step: &str, raw: &RawParams, ctx: &RunContext) -> Result<StepOutput, StepFailure>;
    fn resumable(&self, step: &str, raw: &RawParams) -> bool;
}

/// The erasure of a typed [`Steps`].
pub(crate) struct Erased<S>(pub Arc<S>);

impl<S: Steps> DynSteps for Erased<S> {
    fn names(&self) -> Vec<String> {
        S::Step::names().into_iter().map(str::to_owned).collect()
    }

    fn definitions(&self, step: &str) -> Vec<ParamDef> {
        S::Step::definitions(step)
    }

    fn schema(&self, step: &str) -> Option<Value> {
        S::Step::schema(step)
    }

    fn accept(&self, step: &str, raw: &RawParams) -> Result<(), ParamError> {
        self.0.check(&S::Step::parse(step, raw)?)
    }

    fn run(&self, step: &str, raw: &RawParams, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let step = S::Step::parse(step, raw).map_err(|e| StepFailure(format!("parameter {e}")))?;
        self.0.run(&step, ctx)
    }

    fn resumable(&self, step: &str, raw: &RawParams) -> bool {
        S::Step::parse(step, raw).is_ok_and(|s| self.0.resumable(&s))
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
    /// Woken at each append (log followers wait on it).
    pub(crate) log_signal: Arc<tokio::sync::watch::Sender<u64>>,
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
        self.log_signal.send_modify(|n| *n = n.wrapping_add(1));
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {
    /// milliseconds to sleep (cancellable)
    #[serde(default)]
    pub sleep_ms: u64,
}

/// The `noop` step: logs, sleeps `sleep_ms` (stopping early when cancelled), returns `{}`.
pub fn run_noop(params: &NoopParams, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
    let sleep_ms = params.sleep_ms;
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

crate::step_set! {
    /// The built-in step set: `noop` only (tests and benchmarks).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum NoopStep {
        Noop(NoopParams) = "noop",
    }
}

/// [`Steps`] with only the built-in `noop` step (for tests and the benchmark).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSteps;

impl Steps for NoopSteps {
    type Step = NoopStep;

    fn run(&self, step: &NoopStep, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let NoopStep::Noop(params) = step;
        run_noop(params, ctx)
    }
}
