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

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::models::{
    Limit, LocalNodeState, Mount as ServiceMount, MountTmpfsOptions, MountType, NetworkAttachmentConfig,
    NetworkCreateRequest, ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task,
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{InspectContainerOptions, InspectNetworkOptions, LogsOptionsBuilder};
use bollard::query_parameters::{ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use mlci_core::{Control, Executor, Failure, FailureKind, StepMetrics, TrialOutput, TrialRequest};

use crate::engine::{short, timed_out, Lines};
use crate::executor::{model_trial_output, model_trial_spec, to_failure, StepCollector};
use crate::{classify_exit, ContainerError, ContainerSpec, Engine, Leftover};

/// The internal (no route out) swarm-scoped bridge network trials without a
/// network are attached to: Swarm cannot attach a service to `none`.
pub const ISOLATED_NETWORK: &str = "mlci-isolated";

/// How often the task's state is read while it waits or runs.
const POLL: Duration = Duration::from_millis(250);

/// After the task ended, how long the log stream may stay quiet before it is
/// closed (a followed task log does not end by itself), and at most how long to drain it.
const DRAIN_IDLE: Duration = Duration::from_secs(1);
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// How long to wait for a removed service's task to go away.
const REMOVAL_WAIT: Duration = Duration::from_secs(15);

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
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            constraints: Vec::new(),
            placement_grace: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(3600),
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
}

/// How a trial's service ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOutcome {
    pub service_id: String,
    /// The task, once Swarm made one.
    pub task_id: Option<String>,
    /// The node it was placed on, if any.
    pub node_id: Option<String>,
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
        if self.stopped {
            return None;
        }
        let id = short(&self.service_id);
        if self.timed_out {
            return Some(timed_out(&format!("service {id}"), self.seconds, "removed"));
        }
        let why = if self.message.is_empty() {
            String::new()
        } else {
            format!(": {}", self.message)
        };
        match self.end {
            TaskEnd::Complete | TaskEnd::Failed => {
                let code = self
                    .exit_code
                    .unwrap_or(if self.end == TaskEnd::Complete { 0 } else { -1 });
                classify_exit(code, self.oom_killed).map(|kind| {
                    let what = match kind {
                        FailureKind::OutOfMemory => "was killed for memory (OOMKilled)".to_owned(),
                        FailureKind::Killed => {
                            "was killed (SIGKILL, exit 137; on another node this may be the memory limit)"
                                .to_owned()
                        }
                        FailureKind::BadSpec => "rejected its input (exit 2)".to_owned(),
                        _ => format!("exited with code {code}"),
                    };
                    Failure::new(kind, format!("service {id}: the trial {what}"))
                })
            }
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
                Some(Failure::new(
                    kind,
                    format!(
                        "service {id}: the node rejected the task{why} (the trainer image and the trial and \
                         dataset paths must exist on every node that may run trials)"
                    ),
                ))
            }
            TaskEnd::Shutdown => Some(Failure::new(
                FailureKind::Killed,
                format!("service {id}: the task was shut down from outside (node drained or lost?){why}"),
            )),
            TaskEnd::Unplaced => Some(Failure::new(
                FailureKind::BadSpec,
                format!(
                    "service {id}: no swarm node can run the trial{why} (check trial.swarm.constraints \
                     against the nodes' labels)"
                ),
            )),
            TaskEnd::Queued => Some(Failure::new(
                FailureKind::Timeout,
                format!(
                    "service {id}: waited {:.0} s for a node with free CPU and memory{why}",
                    self.seconds
                ),
            )),
            TaskEnd::Removed => Some(Failure::new(
                FailureKind::Killed,
                format!("service {id} was removed before its task ended"),
            )),
        }
    }
}

fn not_a_manager(detail: impl std::fmt::Display) -> ContainerError {
    ContainerError::Engine {
        what: "swarm".into(),
        message: format!(
            "this Engine is not a swarm manager ({detail}): run `docker swarm init` (or use a manager's \
             DOCKER_HOST) or set executor back to container"
        ),
    }
}

/// Keep `[a-zA-Z0-9-]` of `s` for a service name.
fn name_part(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect::<String>()
        .trim_matches('-')
        .to_owned()
}

/// The service for one trial container (see the module docs for what maps where).
pub(crate) fn service_spec(spec: &ContainerSpec, placement: &Placement, max_cpus: f64) -> ServiceSpec {
    let labels = spec.labels.to_map();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    // Unique (a retry or a resume of the same trial may overlap the old one's removal).
    let name = format!(
        "mlci-{}-t{}-{:x}{:x}",
        name_part(&spec.labels.experiment, 24),
        name_part(&spec.labels.trial, 8),
        std::process::id(),
        nanos
    );
    let mut mounts: Vec<ServiceMount> = spec
        .mounts
        .iter()
        .map(|m| ServiceMount {
            target: Some(m.target.clone()),
            source: Some(m.source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    mounts.push(ServiceMount {
        target: Some("/tmp".into()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(64 << 20),
            ..Default::default()
        }),
        ..Default::default()
    });
    let nano_cpus = spec
        .cpus
        .map(|c| (c.clamp(0.01, max_cpus.max(0.01)) * 1e9).round() as i64);
    let memory = spec.memory_bytes.map(|b| b.min(i64::MAX as u64) as i64);
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels.clone()),
        // `Command` replaces the image's entrypoint (the CLI's `--entrypoint`).
        command: Some(spec.command.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: Some(spec.user.clone()),
        read_only: Some(true),
        mounts: Some(mounts),
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        capability_drop: Some(vec!["ALL".into()]),
        // A stop (pruned trial, timeout) kills at once, like `docker kill`.
        stop_signal: Some("SIGKILL".into()),
        stop_grace_period: Some(0),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus,
                memory_bytes: memory,
                pids: Some(4096),
            }),
            reservations: Some(ResourceObject {
                nano_cpus,
                memory_bytes: memory,
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            max_attempts: Some(0),
            ..Default::default()
        }),
        placement: Some(TaskSpecPlacement {
            constraints: Some(placement.constraints.clone()),
            ..Default::default()
        }),
        networks: (!spec.network).then(|| {
            vec![NetworkAttachmentConfig {
                target: Some(ISOLATED_NETWORK.into()),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(name),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pending task that no node can take: Swarm's "no suitable node" message.
/// `Some(true)` when only free resources are missing (it may wait for them).
fn unplaceable(status_text: &str) -> Option<bool> {
    let lower = status_text.to_lowercase();
    lower
        .contains("no suitable node")
        .then(|| lower.contains("insufficient resources") && !lower.contains("constraint"))
}

fn task_text(task: &Task) -> String {
    let status = task.status.as_ref();
    let message = status.and_then(|s| s.message.clone()).unwrap_or_default();
    let err = status.and_then(|s| s.err.clone()).unwrap_or_default();
    match (message.is_empty(), err.is_empty()) {
        (_, true) => message,
        (true, false) => err,
        (false, false) => format!("{message}: {err}"),
    }
}

impl Engine {
    /// The swarm's nodes, checking that this Engine is a swarm manager
    /// (an error saying so, and what to do, when it is not).
    pub fn swarm_nodes(&self) -> Result<Vec<SwarmNode>, ContainerError> {
        let docker = self.docker();
        let info = self
            .block_on(docker.info())
            .map_err(|e| ContainerError::engine("reading the Engine's info", e))?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm.local_node_state.unwrap_or(LocalNodeState::INACTIVE);
        if state != LocalNodeState::ACTIVE {
            return Err(not_a_manager(format!("its swarm state is {state}")));
        }
        if swarm.control_available != Some(true) {
            return Err(not_a_manager("it is a worker node"));
        }
        let nodes = self
            .block_on(docker.list_nodes(None::<ListNodesOptions>))
            .map_err(|e| ContainerError::engine("listing swarm nodes", e))?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let description = n.description.unwrap_or_default();
                let resources = description.resources.unwrap_or_default();
                SwarmNode {
                    id: n.id.unwrap_or_default(),
                    hostname: description.hostname.unwrap_or_default(),
                    state: n
                        .status
                        .and_then(|s| s.state)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
                    cpus: resources.nano_cpus.unwrap_or_default() as f64 / 1e9,
                    memory_bytes: resources.memory_bytes.unwrap_or_default().max(0) as u64,
                    labels: spec.labels.unwrap_or_default().into_iter().collect(),
                }
            })
            .collect())
    }

    /// Services labelled with `mlci.owner=<owner>` (left by a crash; `state` is `service`).
    pub fn service_leftovers(&self, owner: &str) -> Result<Vec<Leftover>, ContainerError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("mlci.owner={owner}")])]);
        let options = ListServicesOptionsBuilder::default().filters(&filters).build();
        let list = self
            .block_on(self.docker().list_services(Some(options)))
            .map_err(|e| ContainerError::engine("listing swarm services", e))?;
        Ok(list
            .into_iter()
            .map(|s| {
                let spec = s.spec.unwrap_or_default();
                Leftover {
                    id: s.id.unwrap_or_default(),
                    name: spec.name.unwrap_or_default(),
                    state: "service".into(),
                    labels: spec.labels.unwrap_or_default().into_iter().collect(),
                }
            })
            .collect())
    }

    /// Remove a service (its task's container goes with it); no error if it is gone.
    pub fn remove_service(&self, id: &str) -> Result<(), ContainerError> {
        self.block_on(delete_service(self.docker(), id))
    }

    /// Run `spec` as a one-replica swarm service placed by `placement`:
    /// each stdout line goes to `on_line` (a [`Control::Stop`] removes the
    /// service), `on_start` gets the task id once it runs; wait for the task
    /// to end, remove the service whatever happened, and say how it ended.
    pub fn run_service(
        &self,
        spec: &ContainerSpec,
        placement: &Placement,
        on_start: &mut dyn FnMut(&str),
        on_line: &mut dyn FnMut(&str) -> Control,
    ) -> Result<ServiceOutcome, ContainerError> {
        spec.check()?;
        let nodes = self.swarm_nodes()?;
        let max_cpus = nodes
            .iter()
            .filter(|n| n.schedulable())
            .map(|n| n.cpus)
            .fold(0.0, f64::max);
        let mut log = match &spec.log_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(ContainerError::io(path))?,
            ),
            None => None,
        };
        // Bind sources as absolute, resolved paths (the same path on every node).
        let mut spec = spec.clone();
        for m in &mut spec.mounts {
            m.source = m.source.canonicalize().map_err(ContainerError::io(&m.source))?;
        }
        let docker = self.docker();
        self.block_on(async {
            if !spec.network {
                ensure_isolated_network(docker).await?;
            }
            let service = service_spec(&spec, placement, max_cpus);
            let created = docker
                .create_service(service, None)
                .await
                .map_err(|e| ContainerError::engine(format!("creating a service from {}", spec.image), e))?;
            let id = created.id.unwrap_or_default();
            tracing::debug!(service = short(&id), image = %spec.image, "trial service created");
            let result = follow_service(docker, &id, &spec, placement, log.as_mut(), on_start, on_line).await;
            // Always remove it, whatever happened; report the first error.
            let removed = delete_service(docker, &id).await;
            let outcome = result?;
            removed?;
            Ok(outcome)
        })
    }
}

async fn ensure_isolated_network(docker: &Docker) -> Result<(), ContainerError> {
    match docker
        .inspect_network(ISOLATED_NETWORK, None::<InspectNetworkOptions>)
        .await
    {
        Ok(_) => return Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => {
            return Err(ContainerError::engine(
                format!("inspecting network {ISOLATED_NETWORK}"),
                e,
            ))
        }
    }
    let request = NetworkCreateRequest {
        name: ISOLATED_NETWORK.into(),
        driver: Some("bridge".into()),
        scope: Some("swarm".into()),
        internal: Some(true),
        labels: Some(HashMap::from([("mlci.network".into(), "isolated".into())])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        // 409: another trial created it meanwhile.
        Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
        Err(e) => Err(ContainerError::engine(
            format!("creating network {ISOLATED_NETWORK}"),
            e,
        )),
    }
}

async fn delete_service(docker: &Docker, id: &str) -> Result<(), ContainerError> {
    match docker.delete_service(id).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(ContainerError::engine(
            format!("removing service {}", short(id)),
            e,
        )),
    }
}

async fn service_task(docker: &Docker, service: &str) -> Result<Option<Task>, ContainerError> {
    let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let tasks = docker
        .list_tasks(Some(options))
        .await
        .map_err(|e| ContainerError::engine(format!("listing the tasks of service {}", short(service)), e))?;
    // One replica, never restarted: one task (the newest, should there be more).
    Ok(tasks
        .into_iter()
        .max_by_key(|t| t.version.as_ref().and_then(|v| v.index)))
}

/// Remove the service and wait (bounded) until its task is gone, so a
/// resumed trial never overlaps the killed one.
async fn remove_and_wait(docker: &Docker, service: &str) -> Result<(), ContainerError> {
    delete_service(docker, service).await?;
    let deadline = Instant::now() + REMOVAL_WAIT;
    while Instant::now() < deadline {
        if let Ok(None) = service_task(docker, service).await {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    tracing::warn!(
        service = short(service),
        "the removed service's task is still listed"
    );
    Ok(())
}

struct LogSink<'a> {
    out: Lines,
    err: Lines,
    file: Option<&'a mut std::fs::File>,
    stopped: bool,
    stop_now: bool,
}

impl LogSink<'_> {
    fn write(file: &mut Option<&mut std::fs::File>, line: &str) {
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }

    fn push(&mut self, item: LogOutput, on_line: &mut dyn FnMut(&str) -> Control) {
        let Self {
            out,
            err,
            file,
            stopped,
            stop_now,
        } = self;
        match item {
            LogOutput::StdOut { message } => out.push(&message, |line| {
                Self::write(file, line);
                if !*stopped && !*stop_now && on_line(line) == Control::Stop {
                    *stop_now = true;
                }
            }),
            LogOutput::StdErr { message } => err.push(&message, |line| Self::write(file, line)),
            _ => {}
        }
    }

    fn finish(&mut self, on_line: &mut dyn FnMut(&str) -> Control) {
        let Self {
            out,
            err,
            file,
            stopped,
            ..
        } = self;
        out.finish(|line| {
            Self::write(file, line);
            if !*stopped {
                let _ = on_line(line);
            }
        });
        err.finish(|line| Self::write(file, line));
    }
}

async fn follow_service(
    docker: &Docker,
    service: &str,
    spec: &ContainerSpec,
    placement: &Placement,
    log: Option<&mut std::fs::File>,
    on_start: &mut dyn FnMut(&str),
    on_line: &mut dyn FnMut(&str) -> Control,
) -> Result<ServiceOutcome, ContainerError> {
    let created = Instant::now();
    let mut outcome = ServiceOutcome {
        service_id: service.to_owned(),
        task_id: None,
        node_id: None,
        end: TaskEnd::Removed,
        exit_code: None,
        oom_killed: false,
        message: String::new(),
        stopped: false,
        timed_out: false,
        seconds: 0.0,
    };
    let mut sink = LogSink {
        out: Lines::default(),
        err: Lines::default(),
        file: log,
        stopped: false,
        stop_now: false,
    };
    let mut logs = None;
    let mut running_since: Option<Instant> = None;
    let mut unplaced_since: Option<Instant> = None;
    let mut last_task: Option<Task> = None;
    let mut next_poll = Instant::now();
    loop {
        // Read output until the next poll of the task's state.
        let wait = next_poll.saturating_duration_since(Instant::now());
        match logs.as_mut() {
            Some(stream) => match tokio::time::timeout(wait, StreamExt::next(stream)).await {
                Ok(Some(Ok(item))) => sink.push(item, on_line),
                Ok(Some(Err(e))) => {
                    tracing::warn!(service = short(service), error = %e, "task log stream broke");
                    logs = None;
                }
                Ok(None) => logs = None,
                Err(_) => {}
            },
            None => tokio::time::sleep(wait).await,
        }
        if sink.stop_now && !sink.stopped {
            sink.stopped = true;
            outcome.stopped = true;
            tracing::info!(service = short(service), "trial stopped; removing its service");
            remove_and_wait(docker, service).await?;
            break;
        }
        if let (Some(since), Some(limit)) = (running_since, spec.timeout) {
            if since.elapsed() >= limit {
                outcome.timed_out = true;
                tracing::warn!(service = short(service), "trial timed out; removing its service");
                remove_and_wait(docker, service).await?;
                break;
            }
        }
        if Instant::now() < next_poll {
            continue;
        }
        next_poll = Instant::now() + POLL;
        let Some(task) = service_task(docker, service).await? else {
            if created.elapsed() > placement.placement_grace {
                outcome.message = "Swarm made no task for the service".into();
                outcome.end = TaskEnd::Unplaced;
                break;
            }
            continue;
        };
        let status = task.status.clone().unwrap_or_default();
        let state = status.state.unwrap_or(TaskState::NEW);
        let text = task_text(&task);
        if outcome.task_id.is_none() {
            outcome.task_id = task.id.clone();
        }
        outcome.node_id = task.node_id.clone().or(outcome.node_id.take());
        match state {
            TaskState::RUNNING if running_since.is_none() => {
                running_since = Some(Instant::now());
                let task_id = task.id.clone().unwrap_or_default();
                tracing::debug!(
                    service = short(service),
                    task = short(&task_id),
                    node = short(task.node_id.as_deref().unwrap_or_default()),
                    "trial task running"
                );
                on_start(&task_id);
                let options = LogsOptionsBuilder::default()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build();
                logs = Some(Box::pin(docker.task_logs(&task_id, Some(options))));
            }
            TaskState::COMPLETE
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::SHUTDOWN
            | TaskState::ORPHANED
            | TaskState::REMOVE => {
                outcome.end = match state {
                    TaskState::COMPLETE => TaskEnd::Complete,
                    TaskState::FAILED => TaskEnd::Failed,
                    TaskState::REJECTED => TaskEnd::Rejected,
                    _ => TaskEnd::Shutdown,
                };
                outcome.message = text;
                let container = status.container_status.unwrap_or_default();
                // Ended between two polls: its whole log, not followed.
                let ran = container.container_id.as_deref().is_some_and(|c| !c.is_empty());
                if running_since.is_none() && ran {
                    running_since = Some(Instant::now());
                    let task_id = task.id.clone().unwrap_or_default();
                    on_start(&task_id);
                    let options = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
                    logs = Some(Box::pin(docker.task_logs(&task_id, Some(options))));
                }
                outcome.exit_code = container.exit_code;
                if let Some(cid) = container.container_id.filter(|c| !c.is_empty()) {
                    // Only answers when the task ran on this node; elsewhere OOM reads as 137.
                    if let Ok(c) = docker
                        .inspect_container(&cid, None::<InspectContainerOptions>)
                        .await
                    {
                        outcome.oom_killed = c.state.and_then(|s| s.oom_killed).unwrap_or(false);
                    }
                }
                last_task = Some(task);
                break;
            }
            TaskState::PENDING | TaskState::NEW | TaskState::ALLOCATED => match unplaceable(&text) {
                Some(resources_only) => {
                    let since = *unplaced_since.get_or_insert_with(Instant::now);
                    let (limit, end) = if resources_only {
                        (placement.queue_timeout, TaskEnd::Queued)
                    } else {
                        (placement.placement_grace, TaskEnd::Unplaced)
                    };
                    if since.elapsed() >= limit {
                        outcome.message = text;
                        outcome.end = end;
                        break;
                    }
                }
                None => unplaced_since = None,
            },
            _ => {}
        }
    }
    // The task ended: drain what its log still holds (a followed task log never ends).
    if let (Some(stream), false) = (logs.as_mut(), outcome.stopped || outcome.timed_out) {
        let drain_until = Instant::now() + DRAIN_MAX;
        while Instant::now() < drain_until {
            match tokio::time::timeout(DRAIN_IDLE, StreamExt::next(stream)).await {
                Ok(Some(Ok(item))) => sink.push(item, on_line),
                Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            }
        }
    }
    sink.finish(on_line);
    outcome.seconds = running_since.unwrap_or(created).elapsed().as_secs_f64();
    if matches!(outcome.end, TaskEnd::Queued | TaskEnd::Unplaced) {
        outcome.seconds = created.elapsed().as_secs_f64();
    }
    if let Some(task) = last_task {
        tracing::debug!(
            service = short(service),
            task = short(task.id.as_deref().unwrap_or_default()),
            end = ?outcome.end,
            exit_code = ?outcome.exit_code,
            "trial task ended"
        );
    }
    Ok(outcome)
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
        let image_digest = engine.image_id(image)?.ok_or_else(|| ContainerError::Engine {
            what: format!("image {image}"),
            message:
                "not present on the Engine (build it from docker/Dockerfile.scratch and load it on every \
                      swarm node; nothing is pulled)"
                    .into(),
        })?;
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
        let mut steps = StepCollector::default();
        let trial = req.trial;
        let outcome = self
            .engine
            .run_service(
                &cspec,
                &self.placement,
                &mut |task| tracing::info!(trial, task = short(task), "trial task running"),
                &mut |line| steps.line(line, on_step),
            )
            .map_err(to_failure)?;
        if let Some(failure) = outcome.failure() {
            return Err(failure);
        }
        model_trial_output(
            &req,
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
    use crate::{Mount, TrialLabels};

    fn outcome(end: TaskEnd, exit_code: Option<i64>, message: &str) -> ServiceOutcome {
        ServiceOutcome {
            service_id: "abcdef0123456789".into(),
            task_id: Some("t1".into()),
            node_id: None,
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

    #[test]
    fn pending_messages_tell_constraints_from_resources() {
        assert_eq!(
            unplaceable("no suitable node (scheduling constraints not satisfied on 1 node)"),
            Some(false)
        );
        assert_eq!(
            unplaceable("no suitable node (insufficient resources on 3 nodes)"),
            Some(true)
        );
        assert_eq!(
            unplaceable("no suitable node (scheduling constraints not satisfied on 1 node; insufficient resources on 2 nodes)"),
            Some(false)
        );
        assert_eq!(unplaceable("pending task scheduling"), None);
    }

    #[test]
    fn a_trial_container_becomes_a_one_replica_service() {
        let mut spec = ContainerSpec::new("mlci-trainer:x", vec!["/mlci".into(), "train".into()]);
        spec.labels = TrialLabels {
            experiment: "exp one".into(),
            trial: "3".into(),
            kind: "cnn/mlci".into(),
            owner: "me".into(),
            ..TrialLabels::default()
        };
        spec.mounts = vec![Mount::rw("/w", "/work"), Mount::ro("/d", "/data")];
        spec.cpus = Some(8.0);
        spec.memory_bytes = Some(1 << 30);
        spec.user = "1000:1000".into();
        let placement = Placement {
            constraints: vec!["node.labels.mlci == trainer".into()],
            ..Placement::default()
        };
        let s = service_spec(&spec, &placement, 4.0);
        assert!(
            s.name.as_deref().unwrap().starts_with("mlci-exp-one-t3-"),
            "{:?}",
            s.name
        );
        assert_eq!(s.labels.as_ref().unwrap()["mlci.owner"], "me");
        assert_eq!(s.mode.unwrap().replicated.unwrap().replicas, Some(1));
        let task = s.task_template.unwrap();
        assert_eq!(
            task.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        let resources = task.resources.unwrap();
        // CPUs capped at the largest node.
        assert_eq!(resources.reservations.unwrap().nano_cpus, Some(4_000_000_000));
        assert_eq!(resources.limits.unwrap().memory_bytes, Some(1 << 30));
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            ["node.labels.mlci == trainer"]
        );
        assert_eq!(
            task.networks.unwrap()[0].target.as_deref(),
            Some(ISOLATED_NETWORK)
        );
        let c = task.container_spec.unwrap();
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.labels.unwrap()["mlci.trial"], "3");
        let mounts = c.mounts.unwrap();
        assert_eq!(
            mounts
                .iter()
                .map(|m| (m.target.clone().unwrap(), m.read_only))
                .collect::<Vec<_>>(),
            [
                ("/work".to_owned(), Some(false)),
                ("/data".to_owned(), Some(true)),
                ("/tmp".to_owned(), None)
            ]
        );
    }
}
