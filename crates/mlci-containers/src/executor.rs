//! The container executor: each model trial runs `mlci train` in the trainer
//! image, the trial folder mounted at `/work` and the dataset read-only at
//! `/data`; epochs come back as the trainer's stdout JSON lines.

use std::sync::Arc;

use mlci_core::{Control, EpochMetrics, Executor, Failure, StepMetrics, TrialOutput, TrialRequest};

use crate::engine::short;
use crate::trial::{model_trial_spec, run_model_trial, to_failure};
use crate::{ContainerError, Engine};

/// Runs model trials in containers of the trainer image.
#[derive(Debug)]
pub struct ContainerExecutor {
    engine: Arc<Engine>,
    image: String,
    image_digest: String,
    owner: String,
    /// Memory limit per trial container.
    pub memory_bytes: Option<u64>,
    /// Give trial containers a network (off by default).
    pub network: bool,
}

impl ContainerExecutor {
    /// An executor for `image`, which must exist on the Engine (build it
    /// first with [`Engine::build_image`]); `owner` goes into every
    /// container's `mlci.owner` label.
    pub fn new(engine: Arc<Engine>, image: &str, owner: &str) -> Result<Self, ContainerError> {
        let image_digest = engine.require_image(image, "build it from docker/Dockerfile.scratch")?;
        Ok(Self {
            engine,
            image: image.to_owned(),
            image_digest,
            owner: owner.to_owned(),
            memory_bytes: None,
            network: false,
        })
    }

    /// The id (`sha256:…`) of the image trials run in, recorded in provenance.
    pub fn image_digest(&self) -> &str {
        &self.image_digest
    }
}

/// An epoch line of the trainer's stdout (`{"event":"epoch",…}`), if this is one.
/// An event line this mlci cannot read (an unknown kind, a newer protocol
/// version, a malformed epoch) is logged and skipped, never misread.
pub fn parse_epoch(line: &str) -> Option<EpochMetrics> {
    match mlci_core::protocol::parse_line(line) {
        Ok(Some(mlci_core::protocol::Event::Epoch(e))) => Some(e.metrics),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!("skipping a line of the trainer's output: {e}");
            None
        }
    }
}

/// Collects the trainer's epoch lines into steps and hands each to the tuner (for both
/// executors, through [`run_model_trial`]).
#[derive(Debug, Default)]
pub(crate) struct StepCollector {
    pub(crate) steps: Vec<StepMetrics>,
}

impl StepCollector {
    /// One stdout line: an epoch becomes a step (a resumed epoch replaces the later ones).
    pub(crate) fn line(
        &mut self,
        line: &str,
        on_step: &mut (dyn FnMut(&StepMetrics) -> Control + Send),
    ) -> Control {
        match parse_epoch(line) {
            Some(m) => {
                let step = StepMetrics::from(&m);
                self.steps.retain(|s| s.step < step.step);
                self.steps.push(step.clone());
                on_step(&step)
            }
            None => Control::Continue,
        }
    }
}

impl Executor for ContainerExecutor {
    fn run(
        &self,
        req: &TrialRequest,
        on_step: &mut (dyn FnMut(&StepMetrics) -> Control + Send),
    ) -> Result<TrialOutput, Failure> {
        let mut cspec = model_trial_spec(req, "container", &self.image, &self.owner)?;
        // An earlier attempt's container may still be there (the Engine connection broke
        // while it ran, so it could not be removed): it must not write beside this one.
        let trial_label = req.trial.to_string();
        for left in self.engine.leftovers(&self.owner).map_err(to_failure)? {
            if left.labels.get("mlci.trial") == Some(&trial_label) {
                tracing::warn!(
                    trial = req.trial,
                    container = short(&left.id),
                    "removing an earlier attempt's container"
                );
                self.engine.remove_container(&left.id).map_err(to_failure)?;
            }
        }
        cspec.memory_bytes = self.memory_bytes;
        cspec.network = self.network;
        let trial = req.trial;
        run_model_trial(req, &cspec, &self.image_digest, on_step, |cspec, on_line| {
            self.engine.run_trial(
                cspec,
                &req.stop,
                &mut |id| tracing::info!(trial, container = short(id), "trial container running"),
                on_line,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_lines_parse_and_others_do_not() {
        let line = r#"{"event":"epoch","epoch":2,"epochs":5,"loss":0.5,"accuracy":0.7,"val_loss":0.6,"val_accuracy":0.65,"seconds":1.5,"train_images":100,"images_per_second":66.7}"#;
        let m = parse_epoch(line).unwrap();
        assert_eq!(m.epoch, 2);
        assert_eq!(m.val_accuracy, 0.65);
        assert!(parse_epoch(r#"{"event":"result","best_epoch":2}"#).is_none());
        assert!(parse_epoch("INFO training").is_none());
        let newer = line.replace(r#""event":"epoch","#, r#""event":"epoch","v":2,"#);
        assert!(
            parse_epoch(&newer).is_none(),
            "a newer protocol version is not misread"
        );
    }
}
