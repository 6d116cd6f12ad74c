//! The blocking facade over bollard: connect, build, run one container.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use mlci_core::{Control, Failure, StopSignal};

use crate::trial::{box_failure, BoxEnd, TrialBox};
use crate::{BuildContext, ContainerError, ContainerSpec};

/// Where the Engine is when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds to wait for the Engine to answer a request's headers.
const REQUEST_TIMEOUT_SECONDS: u64 = 120;
/// How often a running trial looks at its stop signal (the experiment ended).
pub(crate) const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// A connection to one Docker Engine. Blocking: every method runs its
/// request to completion on the engine's own current-thread runtime, so it
/// can be called from the tuner's worker threads (several at once).
pub struct Engine {
    docker: Docker,
    runtime: tokio::runtime::Runtime,
    host: String,
    /// The Engine host's cores: CPU limits above it are refused by Docker, so they are capped.
    cpus: f64,
    /// The Engine host's memory in bytes (0 when the Engine does not say).
    memory: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub container_id: String,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// The line callback asked it to stop, and it was killed.
    pub stopped: bool,
    pub timed_out: bool,
    pub seconds: f64,
}

impl RunOutcome {
    /// The failure class of this end, or `None` for success (or a requested stop).
    pub fn failure(&self) -> Option<Failure> {
        box_failure(self)
    }
}

impl TrialBox for RunOutcome {
    fn name(&self) -> String {
        format!("container {}", short(&self.container_id))
    }

    fn end(&self) -> BoxEnd {
        if self.stopped {
            BoxEnd::Stopped
        } else if self.timed_out {
            BoxEnd::TimedOut { ended: "killed" }
        } else {
            BoxEnd::Exited {
                code: self.exit_code,
                oom_killed: self.oom_killed,
                oom_known: true,
            }
        }
    }

    fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// A container carrying an `mlci.owner` label (found on start, after a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub id: String,
    pub name: String,
    /// `running`, `exited`, `created`, …
    pub state: String,
    pub labels: BTreeMap<String, String>,
}

pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Splits a chunked byte stream into lines.
#[derive(Default)]
pub(crate) struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    pub(crate) fn push(&mut self, bytes: &[u8], mut each: impl FnMut(&str)) {
        self.pending.extend_from_slice(bytes);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            each(text.trim_end_matches('\r'));
        }
    }

    pub(crate) fn finish(&mut self, mut each: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            each(&text);
        }
    }
}

impl Engine {
    /// Connect to the Engine at `host` (`unix:///…` or `tcp://…`; `None`: the
    /// default socket) and check that it answers. The binary passes
    /// `DOCKER_HOST`; this crate never reads the environment.
    pub fn connect(host: Option<&str>) -> Result<Self, ContainerError> {
        let host = host.filter(|h| !h.is_empty()).unwrap_or(DEFAULT_HOST).to_owned();
        let unreachable = |message: String| ContainerError::Unreachable {
            host: host.clone(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| ContainerError::engine("starting the async runtime", e))?;
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            if !std::path::Path::new(path).exists() {
                return Err(unreachable(format!("no socket at {path}")));
            }
            Docker::connect_with_unix(&host, REQUEST_TIMEOUT_SECONDS, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(&host, REQUEST_TIMEOUT_SECONDS, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(unreachable("unsupported scheme (use unix:// or tcp://)".into()));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        // Speak the Engine's API version when it is older than bollard's.
        let (docker, info) = runtime
            .block_on(async {
                docker.ping().await?;
                let docker = docker.negotiate_version().await?;
                let info = docker.info().await?;
                Ok::<_, bollard::errors::Error>((docker, info))
            })
            .map_err(|e| unreachable(e.to_string()))?;
        let cpus = info.ncpu.filter(|&n| n > 0).unwrap_or(1) as f64;
        let memory = info.mem_total.and_then(|m| u64::try_from(m).ok()).unwrap_or(0);
        Ok(Self {
            memory,
            docker,
            runtime,
            host,
            cpus,
        })
    }

    /// Run a bollard future to completion on this engine's runtime (for the
    /// crate's other modules; safe from several threads at once).
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The bollard client.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Memory of the Engine's host in bytes (0 when unknown).
    pub fn memory_bytes(&self) -> u64 {
        self.memory
    }

    /// Cores of the Engine's host.
    pub fn cpus(&self) -> f64 {
        self.cpus
    }

    /// Where this engine was reached.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Check that the Engine still answers.
    pub fn ping(&self) -> Result<(), ContainerError> {
        self.runtime
            .block_on(self.docker.ping())
            .map(drop)
            .map_err(|e| ContainerError::Unreachable {
                host: self.host.clone(),
                message: e.to_string(),
            })
    }

    /// The id of an image that must be on the Engine (nothing is pulled); `hint` says how
    /// to get it there.
    pub(crate) fn require_image(&self, image: &str, hint: &str) -> Result<String, ContainerError> {
        self.image_id(image)?.ok_or_else(|| ContainerError::Engine {
            what: format!("image {image}"),
            message: format!("not present on the Engine ({hint}; nothing is pulled)"),
        })
    }

    /// The image's id (`sha256:…`, the digest of its configuration), or `None` when absent.
    pub fn image_id(&self, tag: &str) -> Result<Option<String>, ContainerError> {
        match self.runtime.block_on(self.docker.inspect_image(tag)) {
            Ok(image) => Ok(image.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(ContainerError::engine(format!("inspecting image {tag}"), e)),
        }
    }

    pub fn image_exists(&self, tag: &str) -> Result<bool, ContainerError> {
        Ok(self.image_id(tag)?.is_some())
    }

    /// Build `dockerfile` (a name inside `context`) as `tag`, sending the
    /// context as a tar stream; each build log line goes to `on_log`. Returns
    /// the image id. Nothing is pulled: base images must be local (`FROM scratch` needs none).
    pub fn build_image(
        &self,
        context: &BuildContext,
        dockerfile: &str,
        tag: &str,
        on_log: &mut dyn FnMut(&str),
    ) -> Result<String, ContainerError> {
        let tar = context.to_tar()?;
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let build_err = |message: String| ContainerError::Build {
            tag: tag.to_owned(),
            message,
        };
        self.runtime.block_on(async {
            let mut stream =
                std::pin::pin!(self
                    .docker
                    .build_image(options, None, Some(bollard::body_full(tar.into()))));
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| build_err(e.to_string()))?;
                if let Some(detail) = info.error_detail {
                    return Err(build_err(detail.message.unwrap_or_default()));
                }
                if let Some(text) = info.stream.as_deref() {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        on_log(line);
                    }
                }
            }
            Ok(())
        })?;
        self.image_id(tag)?
            .ok_or_else(|| build_err("the build ended but the image is missing".into()))
    }

    /// The id of `tag`, building it from `context()` first when it is missing
    /// (nothing is pulled). The context is only gathered when needed.
    pub fn ensure_image(
        &self,
        tag: &str,
        context: impl FnOnce() -> Result<BuildContext, ContainerError>,
        dockerfile: &str,
        on_log: &mut dyn FnMut(&str),
    ) -> Result<String, ContainerError> {
        if let Some(id) = self.image_id(tag)? {
            return Ok(id);
        }
        tracing::info!(image = tag, "image missing; building it");
        self.build_image(&context()?, dockerfile, tag, on_log)
    }

    /// Remove an image tag (the image itself once no tag is left).
    pub fn remove_image(&self, tag_or_id: &str) -> Result<(), ContainerError> {
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        self.runtime
            .block_on(self.docker.remove_image(tag_or_id, Some(options), None))
            .map(drop)
            .map_err(|e| ContainerError::engine(format!("removing image {tag_or_id}"), e))
    }

    /// Containers labelled with `mlci.owner=<owner>`, running or not.
    pub fn leftovers(&self, owner: &str) -> Result<Vec<Leftover>, ContainerError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("mlci.owner={owner}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .runtime
            .block_on(self.docker.list_containers(Some(options)))
            .map_err(|e| ContainerError::engine("listing containers", e))?;
        Ok(list
            .into_iter()
            .map(|c| Leftover {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    /// Send SIGKILL to a container (no error if it has already stopped).
    pub fn kill(&self, id: &str) -> Result<(), ContainerError> {
        self.runtime.block_on(kill(&self.docker, id))
    }

    /// Remove a container, killing it first if it runs.
    pub fn remove_container(&self, id: &str) -> Result<(), ContainerError> {
        self.runtime.block_on(remove(&self.docker, id))
    }

    /// Create and start a container from `spec`, hand each stdout line to
    /// `on_line` (a [`Control::Stop`] kills the container, and so does `stop`, checked
    /// four times a second), wait for its end, remove it, and say how it ended.
    /// `on_start` gets the container id as soon as it runs.
    pub fn run_trial(
        &self,
        spec: &ContainerSpec,
        stop: &StopSignal,
        on_start: &mut dyn FnMut(&str),
        on_line: &mut dyn FnMut(&str) -> Control,
    ) -> Result<RunOutcome, ContainerError> {
        spec.check()?;
        let mut log = crate::engine::open_log(spec.log_file.as_deref())?;
        let body = create_body(spec, self.cpus)?;
        let docker = &self.docker;
        self.runtime.block_on(async {
            let created = docker
                .create_container(None::<bollard::query_parameters::CreateContainerOptions>, body)
                .await
                .map_err(|e| {
                    ContainerError::engine(format!("creating a container from {}", spec.image), e)
                })?;
            let id = created.id;
            let result = run_created(docker, &id, spec, stop, log.as_mut(), on_start, on_line).await;
            // Always remove it, whatever happened; report the first error.
            let removed = remove(docker, &id).await;
            let outcome = result?;
            removed?;
            Ok(outcome)
        })
    }
}

pub(crate) fn create_body(
    spec: &ContainerSpec,
    host_cpus: f64,
) -> Result<ContainerCreateBody, ContainerError> {
    let mut binds = Vec::new();
    for m in &spec.mounts {
        let source = m.source.canonicalize().map_err(ContainerError::io(&m.source))?;
        let source = source.to_str().ok_or_else(|| {
            ContainerError::engine("bind mount", format!("{} is not UTF-8", source.display()))
        })?;
        binds.push(format!(
            "{source}:{}:{}",
            m.target,
            if m.read_only { "ro" } else { "rw" }
        ));
    }
    let memory = spec.memory_bytes.map(|b| b.min(i64::MAX as u64) as i64);
    let host_config = HostConfig {
        binds: Some(binds),
        nano_cpus: spec.cpus.map(|c| (c.clamp(0.01, host_cpus) * 1e9).round() as i64),
        memory,
        // Same as memory: no swap, so an over-budget trial is OOM-killed, not slowed.
        memory_swap: memory,
        network_mode: Some(if spec.network { "bridge" } else { "none" }.to_owned()),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        cap_drop: Some(vec!["ALL".to_owned()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([("/tmp".to_owned(), "rw,size=64m".to_owned())])),
        pids_limit: Some(4096),
        ..Default::default()
    };
    let (entrypoint, cmd) = match spec.command.split_first() {
        Some((first, rest)) => (Some(vec![first.clone()]), Some(rest.to_vec())),
        None => (None, None),
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint,
        cmd,
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(spec.labels.to_map()),
        user: Some(spec.user.clone()),
        working_dir: None,
        network_disabled: Some(!spec.network),
        host_config: Some(host_config),
        ..Default::default()
    })
}

async fn run_created(
    docker: &Docker,
    id: &str,
    spec: &ContainerSpec,
    stop_signal: &StopSignal,
    mut log: Option<&mut std::fs::File>,
    on_start: &mut dyn FnMut(&str),
    on_line: &mut dyn FnMut(&str) -> Control,
) -> Result<RunOutcome, ContainerError> {
    let started = Instant::now();
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|e| {
            ContainerError::engine(format!("starting container {} ({})", short(id), spec.image), e)
        })?;
    tracing::debug!(container = short(id), image = %spec.image, "container started");
    on_start(id);
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = std::pin::pin!(docker.logs(id, Some(options)));
    let (mut out, mut err) = (Lines::default(), Lines::default());
    let (mut stopped, mut timed_out) = (false, false);
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut write_log = |line: &str| {
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    };
    loop {
        if !stopped && stop_signal.is_set() {
            stopped = true;
            tracing::info!(
                container = short(id),
                "trial stopped from outside; killing its container"
            );
            kill(docker, id).await?;
        }
        // Wake at least every STOP_CHECK to look at the stop signal.
        let tick = tokio::time::Instant::now() + STOP_CHECK;
        let wake = match deadline {
            Some(deadline) if !timed_out => deadline.min(tick),
            _ => tick,
        };
        let next = match tokio::time::timeout_at(wake, logs.next()).await {
            Ok(next) => next,
            Err(_) => {
                if deadline.is_some_and(|d| !timed_out && tokio::time::Instant::now() >= d) {
                    timed_out = true;
                    tracing::warn!(container = short(id), "trial timed out; killing its container");
                    kill(docker, id).await?;
                }
                continue;
            }
        };
        match next {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(container = short(id), error = %e, "log stream broke");
                break;
            }
            Some(Ok(LogOutput::StdOut { message })) => {
                let mut stop = false;
                out.push(&message, |line| {
                    write_log(line);
                    if !stopped && !stop && on_line(line) == Control::Stop {
                        stop = true;
                    }
                });
                if stop {
                    stopped = true;
                    kill(docker, id).await?;
                }
            }
            Some(Ok(LogOutput::StdErr { message })) => err.push(&message, &mut write_log),
            Some(Ok(_)) => {}
        }
    }
    out.finish(|line| {
        write_log(line);
        if !stopped {
            let _ = on_line(line);
        }
    });
    err.finish(&mut write_log);
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut wait = std::pin::pin!(docker.wait_container(id, Some(options)));
    let exit_code = match wait.next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => {
            return Err(ContainerError::engine(
                format!("waiting for container {}", short(id)),
                e,
            ))
        }
        None => -1,
    };
    let inspect = docker
        .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .map_err(|e| ContainerError::engine(format!("inspecting container {}", short(id)), e))?;
    let state = inspect.state.unwrap_or_default();
    Ok(RunOutcome {
        container_id: id.to_owned(),
        exit_code: state.exit_code.unwrap_or(exit_code),
        oom_killed: state.oom_killed.unwrap_or(false),
        stopped,
        timed_out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub(crate) async fn kill(docker: &Docker, id: &str) -> Result<(), ContainerError> {
    let options = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
    match docker.kill_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        // 409: not running any more; 404: already gone.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(e) => Err(ContainerError::engine(
            format!("killing container {}", short(id)),
            e,
        )),
    }
}

pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<(), ContainerError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(ContainerError::engine(
            format!("removing container {}", short(id)),
            e,
        )),
    }
}

/// The trial's log file, opened for appending, when it has one.
pub(crate) fn open_log(path: Option<&Path>) -> Result<Option<std::fs::File>, ContainerError> {
    path.map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(ContainerError::io(path))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use mlci_core::FailureKind;

    use super::*;

    #[test]
    fn lines_are_split_across_chunks() {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        lines.push(b"ab", |l| got.push(l.to_owned()));
        lines.push(b"c\nde\r\nf", |l| got.push(l.to_owned()));
        lines.finish(|l| got.push(l.to_owned()));
        assert_eq!(got, ["abc", "de", "f"]);
    }

    #[test]
    fn a_stopped_run_is_no_failure_and_a_timeout_is_one() {
        let mut o = RunOutcome {
            container_id: "0123456789abcdef".into(),
            exit_code: 137,
            oom_killed: false,
            stopped: true,
            timed_out: false,
            seconds: 1.0,
        };
        assert_eq!(o.failure(), None);
        o.stopped = false;
        o.timed_out = true;
        assert_eq!(o.failure().map(|f| f.kind), Some(FailureKind::Timeout));
    }
}
