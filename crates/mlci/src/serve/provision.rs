//! `provision`: decide the model kind of a workspace and name the image (on the Engine,
//! never pulled) and command that run it.

use std::path::PathBuf;

use mlci_containers::kind::{self, ImageTable};
use mlci_core::Outcome;
use mlci_server::{RunContext, StepFailure, StepOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::steps::{fail, Commit, MlciSteps, RepoRef};

/// The parameters of `provision`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvisionParams {
    /// repository name
    pub(crate) repository: String,
    /// commit sha (default: the branch head)
    pub(crate) commit: Option<Commit>,
    /// dataset folder on the mlci host (accepted for the classic job's parameters and unused: provision starts no environment)
    pub(crate) data: Option<PathBuf>,
}

/// What `provision` gives back.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct ProvisionResult {
    /// the model kind (`cnn/mlci`, `keras`, …)
    pub(crate) kind: String,
    /// the file the kind was recognised by
    pub(crate) file: PathBuf,
    /// the image that runs the kind (on the Engine, never pulled)
    pub(crate) image: String,
    /// that image's id (`sha256:…`)
    pub(crate) image_digest: String,
    /// the command that trains the model in that image
    pub(crate) command: Vec<String>,
}

impl MlciSteps {
    pub(crate) fn provision(
        &self,
        params: &ProvisionParams,
        ctx: &RunContext,
    ) -> Result<StepOutput, StepFailure> {
        let (_, ws) = self.workspace(RepoRef::named(&params.repository), params.commit.as_ref(), ctx)?;
        let detection = kind::detect(&ws.path).map_err(fail)?;
        let table = ImageTable::default();
        let runner = table.runner(detection.kind).ok_or_else(|| {
            fail(format!(
                "no image is configured for model kind {}",
                detection.kind
            ))
        })?;
        let engine = crate::env::engine().map_err(|e| fail(format!("{e:#}")))?;
        let image = if detection.kind.as_str() == "cnn/mlci" {
            crate::env::trainer_image(&engine).map_err(|e| fail(format!("{e:#}")))?
        } else {
            runner.image.clone()
        };
        let digest = engine.image_id(&image).map_err(fail)?.ok_or_else(|| {
            fail(format!(
                "image {image} for model kind {} is not on the Engine (nothing is pulled: build or load it)",
                detection.kind
            ))
        })?;
        ctx.log(format!(
            "model kind {} (from {}): image {image} ({digest})",
            detection.kind,
            detection.file.display()
        ));
        let result = ProvisionResult {
            kind: detection.kind.to_string(),
            command: runner.command_for(&detection),
            file: detection.file,
            image,
            image_digest: digest,
        };
        Ok(StepOutput::new(&result, Outcome::Success))
    }
}
