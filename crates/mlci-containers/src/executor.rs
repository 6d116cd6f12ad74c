//! The container executor: each model trial runs `mlci train` in the trainer
//! image, the trial folder mounted at `/work` and the dataset read-only at
//! `/data`; epochs come back as the trainer's stdout JSON lines.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mlci_core::{
    Control, EpochMetrics, Executor, Failure, FailureKind, StepMetrics, TrainingOutcome, TrialOutput,
    TrialRequest,
};

use crate::engine::short;
use crate::kind::{Framework, ModelKind};
use crate::{ContainerError, ContainerSpec, Engine, Mount, TrialLabels};

/// The uid and gid containers run as when mlci itself runs as root.
const NOBODY: u32 = 65534;

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
        let image_digest = engine.image_id(image)?.ok_or_else(|| ContainerError::Engine {
            what: format!("image {image}"),
            message: "not present on the Engine (build it from docker/Dockerfile.scratch; nothing is pulled)"
                .into(),
        })?;
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

pub(crate) fn to_failure(e: ContainerError) -> Failure {
    let kind = match &e {
        ContainerError::MissingMount { .. } | ContainerError::Build { .. } => FailureKind::BadSpec,
        // The Engine may come back (a restart): worth a retry.
        ContainerError::Unreachable { .. } | ContainerError::Engine { .. } | ContainerError::Io { .. } => {
            FailureKind::Crashed
        }
    };
    Failure::new(kind, e.to_string())
}

pub(crate) fn crashed(what: &str, path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::Crashed, format!("{what} {}: {e}", path.display()))
}

/// Hand `dir` (recursively) to `uid:gid`, so a non-root container can write it.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else if !kind.is_symlink() {
            std::os::unix::fs::chown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// The non-root user for a trial folder: its owner, or nobody (given the
/// folder) when the folder belongs to root.
pub fn container_user(workdir: &Path) -> Result<(u32, u32), Failure> {
    let meta = std::fs::metadata(workdir).map_err(|e| crashed("cannot stat", workdir, e))?;
    if meta.uid() != 0 {
        return Ok((meta.uid(), meta.gid()));
    }
    chown_tree(workdir, NOBODY, NOBODY).map_err(|e| crashed("cannot hand over", workdir, e))?;
    Ok((NOBODY, NOBODY))
}

/// The dataset must be readable by the container's user (it is mounted, not copied).
pub fn check_readable(data: &Path, uid: u32) -> Result<(), Failure> {
    let meta = std::fs::metadata(data)
        .map_err(|e| Failure::new(FailureKind::BadSpec, format!("dataset {}: {e}", data.display())))?;
    if meta.uid() != uid && meta.mode() & 0o005 != 0o005 {
        return Err(Failure::new(
            FailureKind::BadSpec,
            format!(
                "dataset {} (mode {:o}) is not readable by the container user {uid}; make it world-readable",
                data.display(),
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
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

/// A model trial ready to run: its container (command, mounts, labels,
/// limits, user) with the spec written into the trial folder. Shared by the
/// container and the swarm executors.
pub(crate) fn model_trial_spec(
    req: &TrialRequest,
    executor: &str,
    image: &str,
    owner: &str,
) -> Result<ContainerSpec, Failure> {
    let (spec, data, val_split) = req.model_trial(executor)?;
    std::fs::create_dir_all(&req.workdir).map_err(|e| crashed("cannot create", &req.workdir, e))?;
    let spec_path = req.workdir.join("spec.json");
    let json = serde_json::to_string_pretty(spec)
        .map_err(|e| Failure::new(FailureKind::BadSpec, format!("cannot serialise the spec: {e}")))?;
    std::fs::write(&spec_path, json).map_err(|e| crashed("cannot write", &spec_path, e))?;
    let (uid, gid) = container_user(&req.workdir)?;
    check_readable(&data, uid)?;

    let threads = req.threads.max(1);
    let mut command: Vec<String> = [
        "/mlci",
        "train",
        "--data",
        "/data",
        "--out",
        "/work",
        "--spec",
        "/work/spec.json",
        "--threads",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    command.push(threads.to_string());
    if let Some(split) = val_split {
        command.extend(["--val-split".to_owned(), split.to_string()]);
    }
    if req.resume {
        command.push("--resume".to_owned());
    }
    let mut cspec = ContainerSpec::new(image.to_owned(), command);
    cspec.env = vec![
        // mlci's config wants a data folder even for `train`; nothing is kept there.
        ("MLCI_DATA_DIR".into(), "/tmp/mlci".into()),
        ("MLCI_LOG".into(), "info".into()),
    ];
    cspec.labels = TrialLabels {
        experiment: req.experiment.clone(),
        trial: req.trial.to_string(),
        kind: ModelKind::Cnn {
            framework: Framework::Mlci,
        }
        .to_string(),
        owner: owner.to_owned(),
        ..TrialLabels::default()
    };
    cspec.mounts = vec![Mount::rw(&req.workdir, "/work"), Mount::ro(&data, "/data")];
    cspec.cpus = Some(threads as f64);
    cspec.user = format!("{uid}:{gid}");
    cspec.timeout = req.timeout_seconds.map(Duration::from_secs_f64);
    cspec.log_file = Some(req.workdir.join("trial.log"));
    Ok(cspec)
}

/// Collects the trainer's epoch lines into steps and hands each to the tuner.
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

/// The output of a model trial whose trainer ended: `metrics.json` from the
/// trial folder, or the steps seen so far when it was stopped.
pub(crate) fn model_trial_output(
    req: &TrialRequest,
    steps: Vec<StepMetrics>,
    stopped: bool,
    seconds: f64,
    image_digest: &str,
) -> Result<TrialOutput, Failure> {
    let mut output = TrialOutput {
        steps,
        stopped,
        seconds,
        image_digest: Some(image_digest.to_owned()),
        ..TrialOutput::default()
    };
    if stopped {
        return Ok(output);
    }
    let metrics = req.workdir.join("metrics.json");
    let text = std::fs::read_to_string(&metrics).map_err(|e| {
        Failure::new(
            FailureKind::NoMetrics,
            format!(
                "the trainer exited 0 but {} is unreadable: {e}",
                metrics.display()
            ),
        )
    })?;
    let trained: TrainingOutcome = serde_json::from_str(&text)
        .map_err(|e| Failure::new(FailureKind::NoMetrics, format!("{}: {e}", metrics.display())))?;
    let b = &trained.best;
    output.steps = trained.history.iter().map(StepMetrics::from).collect();
    output.final_values = [
        ("val_accuracy", b.val_accuracy),
        ("val_loss", b.val_loss),
        ("accuracy", b.accuracy),
        ("loss", b.loss),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    output.param_count = Some(trained.param_count);
    output.stopped = trained.stop_reason == mlci_core::StopReason::Stopped;
    output.seconds = trained.total_seconds;
    Ok(output)
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
        let mut steps = StepCollector::default();
        let trial = req.trial;
        let outcome = self
            .engine
            .run_trial(
                &cspec,
                &mut |id| tracing::info!(trial, container = short(id), "trial container running"),
                &mut |line| steps.line(line, on_step),
            )
            .map_err(to_failure)?;
        if let Some(failure) = outcome.failure() {
            return Err(failure);
        }
        model_trial_output(
            req,
            steps.steps,
            outcome.stopped,
            outcome.seconds,
            &self.image_digest,
        )
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
