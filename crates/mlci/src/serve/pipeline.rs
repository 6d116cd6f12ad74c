//! `pipeline`: what a push runs: sync the commit, then tune it.

use mlci_server::{RunContext, StepFailure, StepOutput};
use serde::Serialize;

use super::scm_sync::{ScmSyncParams, ScmSyncResult};
use super::steps::MlciSteps;
use super::tune::TuneParams;

/// What `pipeline` gives back: each stage's result.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct PipelineResult {
    pub(crate) scm: ScmSyncResult,
    pub(crate) tune: serde_json::Value,
}

impl MlciSteps {
    pub(crate) fn pipeline(&self, params: &ScmSyncParams, ctx: &RunContext) -> Result<StepOutput, StepFailure> {
        let (_, synced) = self.scm_sync(params, ctx)?;
        let tune = TuneParams {
            repository: params.repository.clone(),
            commit: Some(
                synced
                    .commit
                    .clone()
                    .try_into()
                    .map_err(super::steps::fail)?,
            ),
            data: params.data.clone(),
            experiment: None,
        };
        let tuned = self.tune(&tune, ctx)?;
        Ok(StepOutput::new(
            &PipelineResult {
                scm: synced,
                tune: tuned.result,
            },
            tuned.outcome,
        ))
    }
}
