//! `scm-sync` (and the first half of `pipeline`): fetch a repository, check out an exact
//! commit into its workspace, and tell what kind of model it holds.

use std::path::PathBuf;

use mlci_containers::kind;
use mlci_core::Outcome;
use mlci_server::{RunContext, StepFailure, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::steps::{fail, Commit, MlciSteps, RepoRef};

/// The parameters of `scm-sync` and `pipeline`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScmSyncParams {
    /// repository name
    pub(crate) repository: String,
    /// clone URL (registers the repository)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    /// branch
    #[schemars(extend("default" = "main"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) branch: Option<String>,
    /// commit sha (default: the branch head)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) commit: Option<Commit>,
    /// dataset folder on the mlci host
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<PathBuf>,
}

impl ScmSyncParams {
    pub(crate) fn repo_ref(&self) -> RepoRef<'_> {
        RepoRef {
            repository: &self.repository,
            url: self.url.as_deref(),
            branch: self.branch.as_deref(),
        }
    }
}

/// What `scm-sync` gives back.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct ScmSyncResult {
    /// the repository's name
    pub(crate) repository: String,
    /// the full sha checked out
    pub(crate) commit: String,
    /// the branch head fetched
    pub(crate) head: String,
    /// the checkout on the mlci host
    pub(crate) workspace: PathBuf,
    /// the model kind detected (`cnn/mlci`, …), null when none was recognised
    pub(crate) kind: Option<String>,
    /// the file the kind was recognised by, in the workspace
    pub(crate) model_file: Option<PathBuf>,
    /// the commit's subject line
    pub(crate) summary: String,
    /// the commit's author
    pub(crate) author: String,
}

impl MlciSteps {
    pub(crate) fn scm_sync(
        &self,
        params: &ScmSyncParams,
        ctx: &RunContext,
    ) -> Result<(StepOutput, ScmSyncResult), StepFailure> {
        let spec = self.repo(params.repo_ref()).map_err(fail)?;
        ctx.log(format!("fetching {} ({})", spec.display_url(), spec.branch));
        let fetched = self.scm.fetch(&spec).map_err(fail)?;
        self.remember(&spec);
        let commit = params
            .commit
            .as_ref()
            .map_or_else(|| fetched.head.clone(), |c| c.as_str().to_owned());
        let ws = self.scm.checkout(&spec, &commit).map_err(fail)?;
        let (kind, model_file) = match kind::detect(&ws.path) {
            Ok(d) => (Some(d.kind.to_string()), Some(d.file)),
            Err(e) => {
                ctx.log(format!("model kind: {e}"));
                (None, None)
            }
        };
        ctx.log(format!(
            "checked out {} ({}) into {}",
            ws.commit.sha,
            ws.commit.summary,
            ws.path.display()
        ));
        let result = ScmSyncResult {
            repository: spec.name,
            commit: ws.commit.sha,
            head: fetched.head,
            workspace: ws.path,
            kind,
            model_file,
            summary: ws.commit.summary,
            author: ws.commit.author,
        };
        Ok((StepOutput::new(&result, Outcome::Success), result))
    }
}
