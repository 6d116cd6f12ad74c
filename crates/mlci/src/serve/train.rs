//! `train`: one training run of the repository's model spec (`mlci train` as a child),
//! its model published as the run's artifacts, `unstable` when the goal was not met.

use std::ffi::OsString;
use std::path::PathBuf;

use mlci_containers::kind;
use mlci_core::Outcome;
use mlci_server::{RunContext, StepFailure, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::steps::{fail, Commit, Goal, MlciSteps, RelPath, RepoRef};
use crate::exit::Exit;

/// The goal of `train` runs that do not give one.
const DEFAULT_GOAL: f64 = 0.8;

/// The parameters of `train`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainParams {
    /// repository name
    pub(crate) repository: String,
    /// commit sha (default: the branch head)
    pub(crate) commit: Option<Commit>,
    /// dataset folder on the mlci host
    pub(crate) data: Option<PathBuf>,
    /// model spec in the repository (default: the detected one)
    pub(crate) spec: Option<RelPath>,
    /// validation accuracy goal
    #[schemars(extend("default" = DEFAULT_GOAL))]
    pub(crate) goal: Option<Goal>,
}

/// What `train` gives back.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct TrainResult {
    /// the best validation accuracy
    pub(crate) accuracy: f64,
    /// the goal it was held to
    pub(crate) goal: f64,
    /// whether `accuracy` reached `goal`
    pub(crate) met: bool,
    /// the epoch of the best validation accuracy (its weights are the model)
    pub(crate) best_epoch: usize,
    /// the model's trainable parameters
    pub(crate) param_count: usize,
    /// seconds the training took
    pub(crate) seconds: f64,
}

impl MlciSteps {
    pub(crate) fn train(&self, params: &TrainParams, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let data = self
            .data(params.data.as_deref(), &params.repository)
            .map_err(fail)?;
        let (_, ws) = self.workspace(RepoRef::named(&params.repository), params.commit.as_ref(), ctx)?;
        let spec = match &params.spec {
            Some(rel) => rel.file_in(&ws.path, "spec")?,
            None => {
                let detected = kind::detect(&ws.path).map_err(fail)?.file;
                RelPath::try_from(detected.display().to_string())
                    .map_err(fail)?
                    .file_in(&ws.path, "spec")?
            }
        };
        let goal = params.goal.map_or(DEFAULT_GOAL, f64::from);
        let out = self.cfg.layout().run_dir(ctx.id()).join("train");
        let mut args: Vec<OsString> = vec!["train".into(), "--data".into(), data.into(), "--out".into()];
        args.push(out.clone().into());
        args.extend(["--spec".into(), spec.into()]);
        if ctx.resumed() {
            args.push("--resume".into());
        }
        let child = self.run_mlci(&args, ctx)?;
        if ctx.cancelled() {
            return Ok(StepOutput {
                result: serde_json::json!({}),
                outcome: Outcome::Aborted,
            });
        }
        if child.exit != Exit::Success {
            return Err(child.failure("train"));
        }
        let result = child
            .result()
            .ok_or_else(|| fail("mlci train printed no result"))?;
        let accuracy = result.val_accuracy;
        for name in ["model.safetensors", "model.json", "metrics.json"] {
            std::fs::copy(out.join(name), ctx.artifacts_dir().join(name))
                .map_err(|e| fail(format!("cannot publish {}: {e}", out.join(name).display())))?;
        }
        let met = accuracy >= goal;
        let result = TrainResult {
            accuracy,
            goal,
            met,
            best_epoch: result.best_epoch,
            param_count: result.param_count,
            seconds: result.total_seconds,
        };
        Ok(StepOutput::new(
            &result,
            if met { Outcome::Success } else { Outcome::Unstable },
        ))
    }
}
