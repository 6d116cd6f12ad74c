//! One trial in a box, whatever the box: the path the container and the Swarm executors
//! share. A model trial is prepared the same way ([`model_trial_spec`]: the spec written
//! into the trial folder, a non-root user, the dataset mounted read-only), runs in a
//! container or a Swarm task, ends in one of the same few ways ([`BoxEnd`], mapped once to
//! the tuner's failure classes by [`box_failure`]), and leaves the same final metrics
//! ([`model_trial_output`]). [`run_model_trial`] is the whole path with the box left open.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use mlci_core::{Control, Failure, FailureKind, StepMetrics, TrainingOutcome, TrialOutput, TrialRequest};

use crate::executor::StepCollector;
use crate::kind::{Framework, ModelKind};
use crate::{ContainerError, ContainerSpec, Mount, TrialLabels};

/// The uid and gid containers run as when mlci itself runs as root.
const NOBODY: u32 = 65534;

/// How a trial's box ended, in the terms every box shares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BoxEnd {
    /// mlci asked it to stop (a pruned trial) and it was: no failure, the output is what
    /// the trial reported until then.
    Stopped,
    /// It ran past the trial's timeout and was then `ended` (`killed`, `removed`).
    TimedOut { ended: &'static str },
    /// The trainer's process exited with `code`. `oom_known`: whether the Engine could tell
    /// an OOM kill (it cannot for a Swarm task on another node, where one reads as 137).
    Exited {
        code: i64,
        oom_killed: bool,
        oom_known: bool,
    },
    /// The box failed around the trainer, for a reason of its own (a Swarm task rejected,
    /// never placed, shut down from outside).
    Failed(Failure),
}

/// A box a trial ran in (a container, a Swarm service), once it ended.
pub(crate) trait TrialBox {
    /// `container 0123abcdef01`, `service 0123abcdef01`: how messages name it.
    fn name(&self) -> String;
    fn end(&self) -> BoxEnd;
    fn seconds(&self) -> f64;
}

/// The failure class of how `b` ended, or `None` for success (or a requested stop): the
/// one mapping of exit codes, OOM kills and timeouts for both executors.
pub(crate) fn box_failure(b: &impl TrialBox) -> Option<Failure> {
    match b.end() {
        BoxEnd::Stopped => None,
        BoxEnd::TimedOut { ended } => Some(timed_out(&b.name(), b.seconds(), ended)),
        BoxEnd::Exited {
            code,
            oom_killed,
            oom_known,
        } => classify_exit(code, oom_killed).map(|kind| {
            let why = match kind {
                FailureKind::OutOfMemory => "was killed for memory (OOMKilled)".to_owned(),
                FailureKind::Killed if oom_known => "was killed (SIGKILL, exit 137)".to_owned(),
                FailureKind::Killed => {
                    "was killed (SIGKILL, exit 137; on another node this may be the memory limit)".to_owned()
                }
                FailureKind::BadSpec => "rejected its input (exit 2)".to_owned(),
                _ => format!("exited with code {code}"),
            };
            Failure::new(kind, format!("{}: the trial {why}", b.name()))
        }),
        BoxEnd::Failed(failure) => Some(failure),
    }
}

/// The failure of a trial (`what`: `container 0123abcd`) that ran past its timeout
/// after `seconds` and was then `ended` (killed, removed).
pub(crate) fn timed_out(what: &str, seconds: f64, ended: &str) -> Failure {
    Failure::new(
        FailureKind::Timeout,
        format!("{what} ran past its timeout after {seconds:.0} s and was {ended}"),
    )
}

/// Map a container's exit to the tuner's failure classes: OOMKilled →
/// out of memory, 137 (SIGKILL from outside) → killed, 2 → bad spec (mlci's
/// bad-input code), other non-zero → crashed, 0 → none.
pub fn classify_exit(exit_code: i64, oom_killed: bool) -> Option<FailureKind> {
    match (exit_code, oom_killed) {
        (_, true) => Some(FailureKind::OutOfMemory),
        (0, false) => None,
        (137, false) => Some(FailureKind::Killed),
        (2, false) => Some(FailureKind::BadSpec),
        _ => Some(FailureKind::Crashed),
    }
}

/// A trial that could not be run or followed because of the Engine (or the host): a bad
/// mount or image is the spec's fault; an Engine gone away (a restart, an outage) is a
/// crash, worth a retry, named as the Engine's.
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

/// The whole path of a model trial in a box: `cspec` (from [`model_trial_spec`], adjusted
/// by the executor) goes to `run_box` with a line callback that turns the trainer's epoch
/// lines into steps for `on_step`; how the box ended becomes a failure class or the
/// trial's output with its final metrics.
pub(crate) fn run_model_trial<B: TrialBox>(
    req: &TrialRequest,
    cspec: &ContainerSpec,
    image_digest: &str,
    on_step: &mut (dyn FnMut(&StepMetrics) -> Control + Send),
    run_box: impl FnOnce(&ContainerSpec, &mut dyn FnMut(&str) -> Control) -> Result<B, ContainerError>,
) -> Result<TrialOutput, Failure> {
    let mut steps = StepCollector::default();
    let ended = run_box(cspec, &mut |line| steps.line(line, on_step)).map_err(to_failure)?;
    if let Some(failure) = box_failure(&ended) {
        return Err(failure);
    }
    let stopped = ended.end() == BoxEnd::Stopped;
    model_trial_output(req, steps.steps, stopped, ended.seconds(), image_digest)
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

/// A model trial ready to run: its container (command, mounts, labels,
/// limits, user) with the spec written into the trial folder.
/// A token no other attempt has: the attempt, this process and the time.
fn lease_token(attempt: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{attempt}-{}-{nanos:x}", std::process::id())
}

pub(crate) fn model_trial_spec(
    req: &TrialRequest,
    executor: &str,
    image: &str,
    owner: &str,
) -> Result<ContainerSpec, Failure> {
    let (spec, splits) = req.model_trial(executor)?;
    let data = splits.dir;
    std::fs::create_dir_all(&req.workdir).map_err(|e| crashed("cannot create", &req.workdir, e))?;
    let spec_path = req.workdir.join("spec.json");
    let json = serde_json::to_string_pretty(spec)
        .map_err(|e| Failure::new(FailureKind::BadSpec, format!("cannot serialise the spec: {e}")))?;
    std::fs::write(&spec_path, json).map_err(|e| crashed("cannot write", &spec_path, e))?;
    // Fencing: this attempt's token, which the trainer checks before each checkpoint.
    // An earlier attempt still running somewhere (its host cut off, not dead) sees a
    // token that is not its own and stops without writing.
    let lease = lease_token(req.attempt);
    let lease_path = req.workdir.join(mlci_core::LEASE_FILE);
    std::fs::write(&lease_path, &lease).map_err(|e| crashed("cannot write", &lease_path, e))?;
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
    if let Some(split) = splits.val_split {
        command.extend(["--val-split".to_owned(), split.to_string()]);
    }
    // The trial's training images leave the test split out, as in-process trials do.
    if let Some(split) = splits.test_split {
        command.extend(["--test-split".to_owned(), split.to_string()]);
    }
    if req.resume {
        command.push("--resume".to_owned());
    }
    command.extend(["--lease".to_owned(), lease]);
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

/// The output of a model trial whose trainer ended: `metrics.json` from the
/// trial folder, or the steps seen so far when it was stopped.
pub(crate) fn model_trial_output(
    req: &TrialRequest,
    steps: Vec<StepMetrics>,
    stopped: bool,
    seconds: f64,
    image_digest: &str,
) -> Result<TrialOutput, Failure> {
    let output = TrialOutput {
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
    Ok(TrialOutput {
        image_digest: output.image_digest,
        ..TrialOutput::from_training(&trained)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ended(BoxEnd);

    impl TrialBox for Ended {
        fn name(&self) -> String {
            "box 0123".into()
        }
        fn end(&self) -> BoxEnd {
            self.0.clone()
        }
        fn seconds(&self) -> f64 {
            61.0
        }
    }

    fn failure(end: BoxEnd) -> Option<Failure> {
        box_failure(&Ended(end))
    }

    fn exited(code: i64, oom_killed: bool, oom_known: bool) -> BoxEnd {
        BoxEnd::Exited {
            code,
            oom_killed,
            oom_known,
        }
    }

    #[test]
    fn exit_codes_map_to_failure_classes() {
        assert_eq!(classify_exit(0, false), None);
        assert_eq!(classify_exit(137, false), Some(FailureKind::Killed));
        assert_eq!(classify_exit(137, true), Some(FailureKind::OutOfMemory));
        assert_eq!(classify_exit(2, false), Some(FailureKind::BadSpec));
        assert_eq!(classify_exit(1, false), Some(FailureKind::Crashed));
        assert_eq!(classify_exit(139, false), Some(FailureKind::Crashed));
    }

    #[test]
    fn every_box_end_has_one_failure_class() {
        let kind = |end| failure(end).map(|f| f.kind);
        assert_eq!(kind(BoxEnd::Stopped), None);
        assert_eq!(kind(exited(0, false, true)), None);
        assert_eq!(kind(exited(2, false, true)), Some(FailureKind::BadSpec));
        assert_eq!(kind(exited(1, false, true)), Some(FailureKind::Crashed));
        assert_eq!(kind(exited(137, false, true)), Some(FailureKind::Killed));
        assert_eq!(kind(exited(137, true, true)), Some(FailureKind::OutOfMemory));
        let timeout = failure(BoxEnd::TimedOut { ended: "removed" }).unwrap();
        assert_eq!(timeout.kind, FailureKind::Timeout);
        assert_eq!(
            timeout.message,
            "box 0123 ran past its timeout after 61 s and was removed"
        );
        let own = Failure::new(FailureKind::BadSpec, "no node");
        assert_eq!(failure(BoxEnd::Failed(own.clone())), Some(own));
    }

    #[test]
    fn messages_name_the_box_and_what_the_exit_may_mean() {
        let message = |end| failure(end).unwrap().message;
        assert_eq!(
            message(exited(3, false, true)),
            "box 0123: the trial exited with code 3"
        );
        assert_eq!(
            message(exited(137, false, true)),
            "box 0123: the trial was killed (SIGKILL, exit 137)"
        );
        assert!(message(exited(137, false, false)).contains("may be the memory limit"));
    }

    #[test]
    fn an_engine_gone_is_a_retryable_crash_naming_it_and_a_missing_mount_the_spec() {
        let gone = to_failure(ContainerError::Engine {
            what: "waiting for container 0123".into(),
            message: "connection reset".into(),
        });
        assert_eq!(gone.kind, FailureKind::Crashed);
        assert!(
            gone.kind.retryable() && gone.message.contains("docker engine"),
            "{gone:?}"
        );
        let missing = to_failure(ContainerError::MissingMount {
            path: "/nonexistent".into(),
            target: "/data".into(),
        });
        assert_eq!(missing.kind, FailureKind::BadSpec);
    }
}
