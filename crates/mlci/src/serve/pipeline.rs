//! `pipeline`: what a push runs: sync the commit, then tune it.

use std::path::PathBuf;

use mlci_server::{RunContext, StepFailure, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::scm_sync::{ScmSyncParams, ScmSyncResult};
use super::steps::{fail, Commit, MlciSteps, RelPath, RepoRef};
use super::tune::TuneParams;

/// The parameters of `pipeline`: those of `scm-sync`, and the experiment to tune.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineParams {
    /// repository name
    pub(crate) repository: String,
    /// clone URL (registers the repository)
    pub(crate) url: Option<String>,
    /// branch
    #[schemars(extend("default" = "main"))]
    pub(crate) branch: Option<String>,
    /// commit sha (default: the branch head)
    pub(crate) commit: Option<Commit>,
    /// dataset folder on the mlci host
    pub(crate) data: Option<PathBuf>,
    /// experiment spec in the repository
    #[schemars(extend("default" = "experiment.yaml"))]
    pub(crate) experiment: Option<RelPath>,
}

impl PipelineParams {
    pub(crate) fn repo_ref(&self) -> RepoRef<'_> {
        RepoRef {
            repository: &self.repository,
            url: self.url.as_deref(),
            branch: self.branch.as_deref(),
        }
    }
}

/// What `pipeline` gives back: each stage's result.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PipelineResult {
    /// the `scm-sync` result
    pub(crate) scm: ScmSyncResult,
    /// the `tune` result
    pub(crate) tune: serde_json::Value,
}

impl MlciSteps {
    pub(crate) fn pipeline(
        &self,
        params: &PipelineParams,
        ctx: &RunContext,
    ) -> Result<StepOutput, StepFailure> {
        let sync = ScmSyncParams {
            repository: params.repository.clone(),
            url: params.url.clone(),
            branch: params.branch.clone(),
            commit: params.commit.clone(),
            data: params.data.clone(),
        };
        let (_, synced) = self.scm_sync(&sync, ctx)?;
        let tune = TuneParams {
            repository: params.repository.clone(),
            commit: Some(synced.commit.clone().try_into().map_err(fail)?),
            data: params.data.clone(),
            experiment: params.experiment.clone(),
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
