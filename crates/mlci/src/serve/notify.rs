//! `notify`: mail the result of a finished `tune` run (SMTP, or the outbox by default).

use mlci_core::{ExperimentState, Outcome, RunRecord, RunStore, Store};
use mlci_server::{RunContext, StepFailure, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::steps::{fail, MlciSteps};

/// The parameters of `notify`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyParams {
    /// id of a finished tune run
    pub(crate) run: String,
}

/// The part of a finished `tune` run's result `notify` reads.
#[derive(Debug, Deserialize)]
struct TunedRun {
    experiment_id: String,
}

/// What `notify` gives back.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct NotifyResult {
    /// the experiment the mail is about
    pub(crate) experiment_id: String,
    /// `smtp` or `outbox`
    pub(crate) delivery: &'static str,
    /// the recipients
    pub(crate) to: Vec<String>,
    /// whether the experiment met its goal
    pub(crate) met: bool,
}

impl MlciSteps {
    pub(crate) fn notify(&self, params: &NotifyParams, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let run_id = params.run.as_str();
        let run: RunRecord = self
            .store
            .run(run_id)
            .map_err(fail)?
            .ok_or_else(|| fail(format!("run: no run {run_id}")))?;
        let tuned: TunedRun = run
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .ok_or_else(|| fail(format!("run: {run_id} is not a finished tune run")))?;
        let exp_id = tuned.experiment_id;
        let exp = self
            .store
            .experiment(&exp_id)
            .map_err(fail)?
            .ok_or_else(|| fail(format!("experiment {exp_id} is not in the store")))?;
        let trials = self.store.trials(&exp_id).map_err(fail)?;
        let report = self.cfg.layout().run_artifacts_dir(run_id).join("report.html");
        let notifier = crate::mail::notifier(&self.cfg).map_err(|e| fail(format!("{e:#}")))?;
        let delivery =
            crate::mail::notify(&notifier, &exp, &trials, &report).map_err(|e| fail(format!("{e:#}")))?;
        let delivery = match delivery {
            mlci_notify::Delivery::Outbox(_) => "outbox",
            _ => "smtp",
        };
        ctx.log(format!(
            "the result of experiment {exp_id} went to {:?} ({delivery})",
            self.cfg.mail.to
        ));
        let result = NotifyResult {
            experiment_id: exp_id,
            delivery,
            to: self.cfg.mail.to.clone(),
            met: exp.state == ExperimentState::Succeeded,
        };
        Ok(StepOutput::new(&result, Outcome::Success))
    }
}
