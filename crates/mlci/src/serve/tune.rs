//! `tune` (and the second half of `pipeline`): run the repository's experiment
//! (`mlci tune` as a child, resumed after a restart of the service), publish the report
//! and the best model, `unstable` when the goal was not met.

use std::ffi::OsString;
use std::path::PathBuf;

use mlci_core::Outcome;
use mlci_server::{RunContext, StepFailure, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::steps::{fail, Commit, MlciSteps, RelPath, RepoRef};
use crate::exit::Exit;

/// The parameters of `tune`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TuneParams {
    /// repository name
    pub(crate) repository: String,
    /// commit sha (default: the branch head)
    pub(crate) commit: Option<Commit>,
    /// dataset folder on the mlci host
    pub(crate) data: Option<PathBuf>,
    /// experiment spec in the repository
    #[schemars(extend("default" = "experiment.yaml"))]
    pub(crate) experiment: Option<RelPath>,
}

/// What `tune` gives back.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct TuneResult {
    pub(crate) experiment_id: String,
    /// whether the goal was met
    pub(crate) met: serde_json::Value,
    /// the best trial's value of the objective
    pub(crate) accuracy: serde_json::Value,
    pub(crate) metric: serde_json::Value,
    pub(crate) goal: serde_json::Value,
    /// how many trials ran
    pub(crate) trials: serde_json::Value,
    pub(crate) best_trial: serde_json::Value,
    pub(crate) best_params: serde_json::Value,
    pub(crate) state: serde_json::Value,
    /// the commit tuned
    pub(crate) commit: String,
}

impl MlciSteps {
    pub(crate) fn tune(&self, params: &TuneParams, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let repo = &params.repository;
        let data = self.data(params.data.as_deref(), repo).map_err(fail)?;
        let (_, ws) = self.workspace(RepoRef::named(&params.repository), params.commit.as_ref(), ctx)?;
        let rel = match &params.experiment {
            Some(rel) => rel.clone(),
            None => RelPath::try_from(
                self.configured(repo)
                    .and_then(|r| r.experiment.clone())
                    .unwrap_or_else(|| "experiment.yaml".into()),
            )
            .map_err(|e| fail(format!("experiment: {e}")))?,
        };
        let experiment = rel.under(&ws.path);
        if !experiment.is_file() {
            return Err(fail(format!(
                "experiment: {} is not a file in the repository at this commit",
                rel.as_str()
            )));
        }
        let mut args: Vec<OsString> = vec!["tune".into(), experiment.into(), "--data".into(), data.into()];
        args.extend(["--report-dir".into(), ctx.artifacts_dir().as_os_str().to_owned()]);
        args.extend(["--git-commit".into(), ws.commit.sha.clone().into()]);
        if ctx.resumed() {
            args.push("--resume".into());
        }
        let child = self.run_mlci(&args, ctx)?;
        let Some(exp) = child.last_event("experiment") else {
            if ctx.cancelled() {
                return Ok(StepOutput {
                    result: serde_json::json!({}),
                    outcome: Outcome::Aborted,
                });
            }
            return Err(child.failure("tune"));
        };
        let id = exp["id"].as_str().unwrap_or_default().to_owned();
        // The best model, beside the report.
        if let Some(n) = exp["best_trial"].as_u64() {
            let dir = self.cfg.layout().trial_dir(&id, n as u32);
            for (from, to) in [
                ("model.safetensors", "best-model.safetensors"),
                ("model.json", "best-model.json"),
            ] {
                if let Err(e) = std::fs::copy(dir.join(from), ctx.artifacts_dir().join(to)) {
                    ctx.log(format!("could not publish {}: {e}", dir.join(from).display()));
                }
            }
        }
        let outcome = match child.exit {
            Exit::Success => Outcome::Success,
            Exit::GoalNotMet => Outcome::Unstable,
            _ if ctx.cancelled() => Outcome::Aborted,
            _ => Outcome::Failure,
        };
        let result = TuneResult {
            experiment_id: id,
            met: exp["met"].clone(),
            accuracy: exp["best_value"].clone(),
            metric: exp["metric"].clone(),
            goal: exp["goal"].clone(),
            trials: exp["trials"].clone(),
            best_trial: exp["best_trial"].clone(),
            best_params: exp["best_params"].clone(),
            state: exp["state"].clone(),
            commit: ws.commit.sha,
        };
        Ok(StepOutput::new(&result, outcome))
    }
}
