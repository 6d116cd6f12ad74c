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
    /// the experiment (`mlci experiments show`)
    pub(crate) experiment_id: String,
    /// whether the goal was met (false without a goal)
    pub(crate) met: bool,
    /// the best trial's value of the objective
    pub(crate) accuracy: Option<f64>,
    /// the objective's metric
    pub(crate) metric: String,
    /// the objective's goal; null: none (an optimisation, `success` when its budget is spent)
    pub(crate) goal: Option<f64>,
    /// how many trials ran
    pub(crate) trials: usize,
    /// the chosen trial's number
    pub(crate) best_trial: Option<u32>,
    /// the chosen trial's parameters
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub(crate) best_params: Option<mlci_core::Params>,
    /// the experiment's state: `succeeded`, `budget_exhausted`, `failed`
    #[schemars(with = "String")]
    pub(crate) state: mlci_core::ExperimentState,
    /// the commit tuned
    pub(crate) commit: String,
    /// the operator's policy the run was held to
    pub(crate) policy: crate::config::PolicySection,
    /// what the policy lowered (`clamp`)
    pub(crate) lowered: Vec<String>,
    /// the chosen model's accuracy on the validation images it was selected on and on the
    /// test images never seen, each with its 95% interval (absent when not evaluated)
    #[schemars(with = "Option<serde_json::Value>")]
    pub(crate) evaluation: Option<mlci_core::Evaluation>,
}

impl MlciSteps {
    /// The operator's policy over what the repository's experiment asks for, applied
    /// before anything of it runs: refused, or the spec to run (the repository's file, or
    /// a lowered copy in the run's folder) and what was lowered.
    fn apply_policy(
        &self,
        experiment: PathBuf,
        ctx: &RunContext,
    ) -> Result<(PathBuf, Vec<String>), StepFailure> {
        let text = std::fs::read_to_string(&experiment)
            .map_err(|e| fail(format!("experiment: cannot read it: {}", e.kind())))?;
        let mut spec =
            mlci_core::ExperimentSpec::from_yaml(&text).map_err(|e| fail(format!("experiment: {e}")))?;
        let asked = spec.clone();
        let lowered = self.cfg.server.policy.apply(&mut spec).map_err(fail)?;
        if spec == asked {
            return Ok((experiment, lowered));
        }
        for l in &lowered {
            ctx.log(format!("policy: {l}"));
        }
        let dir = self.cfg.layout().run_dir(ctx.id());
        std::fs::create_dir_all(&dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("experiment.json");
        let json = serde_json::to_vec_pretty(&spec).map_err(fail)?;
        std::fs::write(&path, json).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        Ok((path, lowered))
    }

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
        let experiment = rel.file_in(&ws.path, "experiment")?;
        let (experiment, lowered) = self.apply_policy(experiment, ctx)?;
        let mut args: Vec<OsString> = vec!["tune".into(), experiment.into(), "--data".into(), data.into()];
        args.extend(["--report-dir".into(), ctx.artifacts_dir().as_os_str().to_owned()]);
        args.extend(["--git-commit".into(), ws.commit.sha.clone().into()]);
        if ctx.resumed() {
            args.push("--resume".into());
        }
        let child = self.run_mlci(&args, ctx)?;
        let Some(exp) = child.experiment() else {
            if ctx.cancelled() {
                return Ok(StepOutput {
                    result: serde_json::json!({}),
                    outcome: Outcome::Aborted,
                });
            }
            return Err(child.failure("tune"));
        };
        let id = exp.id.clone();
        // The best model, beside the report.
        if let Some(n) = exp.best_trial {
            let dir = self.cfg.layout().trial_dir(&id, n);
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
            met: exp.met,
            accuracy: exp.best_value,
            metric: exp.metric.clone(),
            goal: exp.goal,
            trials: exp.trials,
            best_trial: exp.best_trial,
            best_params: exp.best_params.clone(),
            state: exp.state,
            commit: ws.commit.sha,
            policy: self.cfg.server.policy.clone(),
            lowered,
            evaluation: exp.evaluation.as_deref().cloned(),
        };
        Ok(StepOutput::new(&result, outcome))
    }
}
