//! Trials as Docker Swarm services, for more hosts than one: each trial is
//! one service (`replicas: 1`, restart condition `none`) with the trial
//! container's command, mounts, labels, user and limits, plus CPU and memory
//! reservations and placement constraints, so Swarm's scheduler picks a node
//! with room for it. The task's output comes back through the tasks' logs
//! API (answered by the manager for any node), its end is read from the task
//! state, and the service is always removed.
//!
//! Bind mounts name paths on the node that runs the task: the trial folder
//! and the dataset must exist at the same path on every node that may run
//! trials (a shared file system), and the trainer image must be on every node
//! (nothing is pulled from a registry unless the tag names one).
//!
//! `service` maps a trial container to a service, `manager` is the Engine's side (nodes,
//! services, the isolated network), `follow` watches one service's task to its end (and
//! notices when its node is lost), `registry` publishes the trainer image for every node,
//! `probe` asks every node what it sees before the first trial.

mod follow;
mod manager;
mod probe;
mod registry;
mod service;

pub use self::probe::NodeProbe;
pub use self::registry::check_registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mlci_core::{Control, Executor, Failure, FailureKind, StepMetrics, TrialOutput, TrialRequest};

use self::manager::ensure_isolated_network;
use crate::engine::short;
use crate::trial::{box_failure, model_trial_spec, run_model_trial, BoxEnd, TrialBox};
use crate::{ContainerError, Engine};

/// The internal (no route out) swarm-scoped bridge network trials without a
/// network are attached to: Swarm cannot attach a service to `none`.
pub const ISOLATED_NETWORK: &str = "mlci-isolated";

/// How often the task's state is read while it waits or runs.
const POLL: Duration = Duration::from_millis(250);

/// Whether a task in `state` has ended: it will not run (again).
fn task_ended(state: bollard::models::TaskState) -> bool {
    use bollard::models::TaskState as S;
    matches!(
        state,
        S::COMPLETE | S::FAILED | S::REJECTED | S::SHUTDOWN | S::ORPHANED | S::REMOVE
    )
}

/// Where a trial's service may be placed and how long it may wait for a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Swarm placement constraints, e.g. `node.labels.mlci.trainer == true`
    /// or `node.hostname != ci-master`.
    pub constraints: Vec<String>,
    /// A task that no node can take because of its constraints (or platform)
    /// fails after this long (a node may still be joining).
    pub placement_grace: Duration,
    /// A task waiting for a node with free CPU and memory (the swarm is full)
    /// fails after this long, as a timeout (retryable).
    pub queue_timeout: Duration,
    /// A running task whose node Swarm reports as not ready (down: its heartbeats
    /// stopped) for this long is lost: its service is removed and the trial fails as
    /// killed (retried elsewhere, from its checkpoint).
    pub node_lost_grace: Duration,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            constraints: Vec::new(),
            placement_grace: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(3600),
            node_lost_grace: Duration::from_secs(5),
        }
    }
}

/// One node of the swarm, as the manager sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmNode {
    pub id: String,
    pub hostname: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
}

impl SwarmNode {
    /// Whether Swarm may place new tasks on it.
    pub fn schedulable(&self) -> bool {
        self.state == "ready" && self.availability == "active"
    }
}

/// How a trial's task ended (or why it never ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// Exited 0.
    Complete,
    /// Exited non-zero.
    Failed,
    /// The node refused it (image or mount source missing, …).
    Rejected,
    /// Shut down from outside: node drained or lost, service removed by someone else.
    Shutdown,
    /// No node satisfies its constraints, past the placement grace.
    Unplaced,
    /// Waited for free resources past the queue timeout.
    Queued,
    /// Stopped by mlci (a requested stop or the trial timeout): the service was removed.
    Removed,
    /// Its node stopped answering (Engine or host dead, network cut) while it ran:
    /// the service was removed.
    NodeLost,
}

/// How a trial's service ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOutcome {
    pub service_id: String,
    /// The task, once Swarm made one.
    pub task_id: Option<String>,
    /// The node it was placed on, if any.
    pub node_id: Option<String>,
    /// That node's hostname, once read.
    pub node: Option<String>,
    pub end: TaskEnd,
    /// The container's exit code, when it ran.
    pub exit_code: Option<i64>,
    /// Only known when the task ran on the manager's own node.
    pub oom_killed: bool,
    /// Swarm's last status message and error of the task.
    pub message: String,
    /// The line callback asked it to stop, and the service was removed.
    pub stopped: bool,
    pub timed_out: bool,
    pub seconds: f64,
}

impl ServiceOutcome {
    /// The failure class of this end, or `None` for success (or a requested stop).
    pub fn failure(&self) -> Option<Failure> {
        box_failure(self)
    }
}

/// A Swarm task ends like a container (an exit, a timeout, a stop), or in ways of its own:
/// rejected by its node, never placed, shut down from outside.
impl TrialBox for ServiceOutcome {
    fn name(&self) -> String {
        format!("service {}", short(&self.service_id))
    }

    fn end(&self) -> BoxEnd {
        if self.stopped {
            return BoxEnd::Stopped;
        }
        if self.timed_out {
            return BoxEnd::TimedOut { ended: "removed" };
        }
        let name = self.name();
        let why = if self.message.is_empty() {
            String::new()
        } else {
            format!(": {}", self.message)
        };
        let failed = |kind, message: String| BoxEnd::Failed(Failure::new(kind, message));
        match self.end {
            TaskEnd::Complete | TaskEnd::Failed => BoxEnd::Exited {
                code: self
                    .exit_code
                    .unwrap_or(if self.end == TaskEnd::Complete { 0 } else { -1 }),
                oom_killed: self.oom_killed,
                // OOMKilled is only read when the task ran on the manager's own node.
                oom_known: false,
            },
            TaskEnd::Rejected => {
                let lower = self.message.to_lowercase();
                let kind = if [
                    "no such image",
                    "bind source path does not exist",
                    "invalid mount",
                ]
                .iter()
                .any(|m| lower.contains(m))
                {
                    FailureKind::BadSpec
                } else {
                    FailureKind::Crashed
                };
                failed(
                    kind,
                    format!(
                        "{name}: the node rejected the task{why} (the trainer image and the trial and \
                         dataset paths must exist on every node that may run trials)"
                    ),
                )
            }
            TaskEnd::Shutdown => failed(
                FailureKind::Killed,
                format!("{name}: the task was shut down from outside (node drained or lost?){why}"),
            ),
            TaskEnd::Unplaced => failed(
                FailureKind::BadSpec,
                format!(
                    "{name}: no swarm node can run the trial{why} (check trial.swarm.constraints \
                     against the nodes' labels)"
                ),
            ),
            TaskEnd::Queued => failed(
                FailureKind::Timeout,
                format!(
                    "{name}: waited {:.0} s for a node with free CPU and memory{why}",
                    self.seconds
                ),
            ),
            TaskEnd::Removed => failed(
                FailureKind::Killed,
                format!("{name} was removed before its task ended"),
            ),
            TaskEnd::NodeLost => failed(
                FailureKind::Killed,
                format!("{name}: the node running the trial was lost{why}"),
            ),
        }
    }

    fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// Runs model trials as Docker Swarm services of the trainer image, one
/// service per trial; the Engine must be a swarm manager.
#[derive(Debug)]
pub struct SwarmExecutor {
    engine: Arc<Engine>,
    image: String,
    image_digest: String,
    owner: String,
    /// Cores reserved and limited per trial (and the trainer's `--threads`,
    /// rounded up). `None`: the tuner's share of this host's cores.
    pub cpus: Option<f64>,
    /// Memory reserved and limited per trial.
    pub memory_bytes: Option<u64>,
    /// Give trials a network (off by default: an internal network with no route out).
    pub network: bool,
    /// Placement constraints and how long a task may wait for a node.
    pub placement: Placement,
}

impl SwarmExecutor {
    /// An executor for `image` on the swarm managed by `engine`. The image
    /// must exist on the manager (and on every node that may run trials:
    /// nothing is pulled); `owner` goes into every service's `mlci.owner` label.
    pub fn new(engine: Arc<Engine>, image: &str, owner: &str) -> Result<Self, ContainerError> {
        let nodes = engine.swarm_nodes()?;
        tracing::info!(
            nodes = nodes.len(),
            schedulable = nodes.iter().filter(|n| n.schedulable()).count(),
            "swarm executor"
        );
        // Made once here, before parallel trials could race to create it twice
        // (older Engines allow two networks of one name).
        engine.block_on(ensure_isolated_network(engine.docker()))?;
        let image_digest = engine.require_image(
            image,
            "build it from docker/Dockerfile.scratch and load it on every swarm node",
        )?;
        Ok(Self {
            engine,
            image: image.to_owned(),
            image_digest,
            owner: owner.to_owned(),
            cpus: None,
            memory_bytes: None,
            network: false,
            placement: Placement::default(),
        })
    }

    /// The id (`sha256:…`) of the image on the manager, recorded in provenance.
    pub fn image_digest(&self) -> &str {
        &self.image_digest
    }

    /// The image reference services run: the local tag, or after [`Self::publish_to`]
    /// the registry's reference by digest.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Push the trainer image to `registry` (content-tagged, as built) and run every
    /// trial from its reference by digest, so each node pulls the manager's bits.
    pub fn publish_to(&mut self, registry: &str) -> Result<&str, ContainerError> {
        let reference = self.engine.publish_image(&self.image, registry)?;
        tracing::info!(image = %self.image, reference = %reference, "trainer image published");
        self.image = reference;
        Ok(&self.image)
    }

    /// Ask every node the trials may be placed on (the placement constraints) whether
    /// it sees `files` (paths on this host, where trials will read and write) with the
    /// same size and SHA-256 at the same path, by running the trainer image's
    /// `mlci probe-files` there once, as the trials' user. Also pulls the image on
    /// each node. The answer names each node; an error only when Swarm itself failed.
    pub fn probe_storage(
        &self,
        files: &[SharedFile],
        timeout: Duration,
    ) -> Result<Vec<NodeProbe>, ContainerError> {
        let mut command = vec!["/mlci".to_owned(), "probe-files".to_owned()];
        let mut mounts = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let (Some(dir), Some(name)) = (file.path.parent(), file.path.file_name()) else {
                return Err(ContainerError::MissingMount {
                    path: file.path.clone(),
                    target: "the storage probe".into(),
                });
            };
            let target = format!("/probe/{i}");
            command.push(format!(
                "{target}/{}={}:{}",
                name.to_string_lossy(),
                file.size,
                file.sha256
            ));
            mounts.push(crate::Mount::ro(dir, &target));
        }
        let mut spec = crate::ContainerSpec::new(self.image.clone(), command);
        spec.mounts = mounts;
        spec.labels.owner = self.owner.clone();
        spec.labels.experiment = self.owner.clone();
        spec.labels.trial = "probe".into();
        spec.env = vec![("MLCI_DATA_DIR".into(), "/tmp/mlci".into())];
        // The trials' user: the first folder's owner, or nobody when that is root
        // (nothing is handed over here: the probe only reads).
        if let Some(first) = files.first().and_then(|f| f.path.parent()) {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(first).map_err(ContainerError::io(first))?;
            if meta.uid() != 0 {
                spec.user = format!("{}:{}", meta.uid(), meta.gid());
            }
        }
        self.engine.probe_nodes(&spec, &self.placement, timeout)
    }
}

/// A file on this host that every node must see at the same path with the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedFile {
    pub path: std::path::PathBuf,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Executor for SwarmExecutor {
    fn run(
        &self,
        req: &TrialRequest,
        on_step: &mut (dyn FnMut(&StepMetrics) -> Control + Send),
    ) -> Result<TrialOutput, Failure> {
        let mut req = req.clone();
        if let Some(cpus) = self.cpus {
            req.threads = (cpus.ceil() as usize).max(1);
        }
        let mut cspec = model_trial_spec(&req, "swarm", &self.image, &self.owner)?;
        if let Some(cpus) = self.cpus {
            cspec.cpus = Some(cpus);
        }
        cspec.memory_bytes = self.memory_bytes;
        cspec.network = self.network;
        let trial = req.trial;
        run_model_trial(&req, &cspec, &self.image_digest, on_step, |cspec, on_line| {
            self.engine.run_service(
                cspec,
                &self.placement,
                &req.stop,
                &mut |task, node| tracing::info!(trial, task = short(task), node, "trial task running"),
                on_line,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(end: TaskEnd, exit_code: Option<i64>, message: &str) -> ServiceOutcome {
        ServiceOutcome {
            service_id: "abcdef0123456789".into(),
            task_id: Some("t1".into()),
            node_id: None,
            node: None,
            end,
            exit_code,
            oom_killed: false,
            message: message.into(),
            stopped: false,
            timed_out: false,
            seconds: 2.0,
        }
    }

    #[test]
    fn task_ends_map_to_failure_classes() {
        let kind = |o: ServiceOutcome| o.failure().map(|f| f.kind);
        assert_eq!(kind(outcome(TaskEnd::Complete, Some(0), "finished")), None);
        assert_eq!(
            kind(outcome(TaskEnd::Failed, Some(2), "task: non-zero exit (2)")),
            Some(FailureKind::BadSpec)
        );
        assert_eq!(
            kind(outcome(TaskEnd::Failed, Some(137), "")),
            Some(FailureKind::Killed)
        );
        assert_eq!(
            kind(outcome(TaskEnd::Failed, Some(1), "")),
            Some(FailureKind::Crashed)
        );
        let missing = outcome(TaskEnd::Rejected, None, "No such image: mlci-trainer:0.1.0-abc");
        assert_eq!(kind(missing.clone()), Some(FailureKind::BadSpec));
        assert!(missing.failure().unwrap().message.contains("No such image"));
        assert_eq!(
            kind(outcome(TaskEnd::Rejected, None, "starting container failed")),
            Some(FailureKind::Crashed)
        );
        assert_eq!(
            kind(outcome(TaskEnd::Shutdown, None, "")),
            Some(FailureKind::Killed)
        );
        let unplaced = outcome(
            TaskEnd::Unplaced,
            None,
            "no suitable node (scheduling constraints not satisfied on 1 node)",
        );
        let f = unplaced.failure().unwrap();
        assert_eq!(f.kind, FailureKind::BadSpec);
        assert!(
            f.message.contains("constraints not satisfied") && f.message.contains("trial.swarm.constraints"),
            "{f}"
        );
        let lost = outcome(TaskEnd::NodeLost, None, "node w2 is down (heartbeat failure)");
        assert_eq!(kind(lost.clone()), Some(FailureKind::Killed));
        assert!(
            lost.failure().unwrap().kind.retryable(),
            "a lost node's trial is retried"
        );
        assert!(lost.failure().unwrap().message.contains("node w2 is down"));
        assert_eq!(
            kind(outcome(TaskEnd::Queued, None, "")),
            Some(FailureKind::Timeout)
        );
        let mut o = outcome(TaskEnd::Removed, None, "");
        o.stopped = true;
        assert_eq!(o.failure(), None);
        o.stopped = false;
        o.timed_out = true;
        assert_eq!(kind(o), Some(FailureKind::Timeout));
    }
}
