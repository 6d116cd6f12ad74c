//! Long-lived containers (registered environments): start one detached,
//! look at its state, read its log, and follow the Engine's event stream so
//! a death is seen as it happens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{HealthConfig, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, StartContainerOptions,
};
use futures_util::StreamExt;

use crate::engine::{create_body, remove, short};
use crate::{ContainerError, ContainerSpec, Engine};

/// What the Engine says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    /// `created`, `running`, `exited`, `dead`, …
    pub status: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// `starting`, `healthy`, `unhealthy`; `None` without a HEALTHCHECK.
    pub health: Option<String>,
    /// The Engine's error for a container that could not start.
    pub error: Option<String>,
}

impl ContainerStatus {
    pub fn is_unhealthy(&self) -> bool {
        self.health.as_deref() == Some("unhealthy")
    }
}

/// A container event the watcher cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `die`, `oom`, `destroy`, `health_status: unhealthy`, `start`, …
    pub action: String,
    pub container_id: String,
    /// The container's labels (the Engine sends them with each event).
    pub labels: HashMap<String, String>,
}

impl ContainerEvent {
    /// The `mlci.environment` label, if the container runs an environment.
    pub fn environment(&self) -> Option<&str> {
        self.labels.get("mlci.environment").map(String::as_str)
    }
}

/// How the event stream ended.
#[derive(Debug)]
pub enum EventsEnd {
    /// The stop flag was set.
    Stopped,
    /// The stream broke or ended (the Engine restarted or went away).
    Lost(String),
}

fn nanos(seconds: f64) -> i64 {
    (seconds * 1e9).round() as i64
}

impl Engine {
    /// Create and start a container that outlives this call (named `name`,
    /// which must be free), returning its id. Mount sources must exist and
    /// the user is never root, as for [`Engine::run_trial`]. A container
    /// that was created but could not start is removed.
    pub fn start_detached(&self, spec: &ContainerSpec, name: &str) -> Result<String, ContainerError> {
        spec.check()?;
        let mut body = create_body(spec, self.cpus())?;
        if let Some(h) = &spec.healthcheck {
            let mut test = vec!["CMD".to_owned()];
            test.extend(h.command.iter().cloned());
            body.healthcheck = Some(HealthConfig {
                test: Some(test),
                interval: Some(nanos(h.interval_seconds)),
                timeout: Some(nanos(h.interval_seconds.max(1.0))),
                retries: Some(i64::from(h.retries)),
                start_period: None,
                start_interval: None,
            });
        }
        let docker = self.docker();
        self.block_on(async {
            let options = CreateContainerOptionsBuilder::default().name(name).build();
            let created = docker.create_container(Some(options), body).await.map_err(|e| {
                ContainerError::engine(format!("creating container {name} from {}", spec.image), e)
            })?;
            if let Err(e) = docker
                .start_container(&created.id, None::<StartContainerOptions>)
                .await
            {
                let _ = remove(docker, &created.id).await;
                return Err(ContainerError::engine(
                    format!("starting container {name} ({})", spec.image),
                    e,
                ));
            }
            tracing::debug!(container = short(&created.id), name, image = %spec.image, "container started");
            Ok(created.id)
        })
    }

    /// The state of a container, or `None` when it does not exist.
    pub fn status(&self, id_or_name: &str) -> Result<Option<ContainerStatus>, ContainerError> {
        let docker = self.docker();
        let inspect =
            match self.block_on(docker.inspect_container(id_or_name, None::<InspectContainerOptions>)) {
                Ok(i) => i,
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    return Ok(None)
                }
                Err(e) => {
                    return Err(ContainerError::engine(
                        format!("inspecting container {id_or_name}"),
                        e,
                    ))
                }
            };
        let state = inspect.state.unwrap_or_default();
        let health = state
            .health
            .and_then(|h| h.status)
            .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE))
            .map(|s| s.to_string());
        Ok(Some(ContainerStatus {
            id: inspect.id.unwrap_or_else(|| id_or_name.to_owned()),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            health,
            error: state.error.filter(|e| !e.is_empty()),
        }))
    }

    /// Ids of the containers (running or not) carrying `label` (`key` or `key=value`).
    pub fn containers_labelled(&self, label: &str) -> Result<Vec<String>, ContainerError> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .block_on(self.docker().list_containers(Some(options)))
            .map_err(|e| ContainerError::engine("listing containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// A container's whole log so far (stdout and stderr, in order).
    pub fn logs(&self, id: &str) -> Result<String, ContainerError> {
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
        let docker = self.docker();
        self.block_on(async {
            let mut stream = std::pin::pin!(docker.logs(id, Some(options)));
            let mut text = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) => {
                        text.extend_from_slice(&message)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ContainerError::engine(
                            format!("reading the log of {}", short(id)),
                            e,
                        ))
                    }
                }
            }
            Ok(String::from_utf8_lossy(&text).into_owned())
        })
    }

    /// Follow the Engine's container events for containers carrying `label`
    /// (`die`, `oom`, `destroy`, `health_status`), calling `on_event` for
    /// each, until `stop` is set (checked every `poll`) or the stream breaks.
    pub fn follow_events(
        &self,
        label: &str,
        stop: &AtomicBool,
        poll: Duration,
        on_event: &mut dyn FnMut(ContainerEvent),
    ) -> EventsEnd {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![label.to_owned()]),
            (
                "event".to_owned(),
                ["die", "oom", "destroy", "health_status", "start"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let docker = self.docker();
        self.block_on(async {
            let mut stream = std::pin::pin!(docker.events(Some(options)));
            loop {
                if stop.load(Ordering::Relaxed) {
                    return EventsEnd::Stopped;
                }
                let next = match tokio::time::timeout(poll, stream.next()).await {
                    Err(_) => continue,
                    Ok(next) => next,
                };
                match next {
                    None => return EventsEnd::Lost("the Engine ended the event stream".into()),
                    Some(Err(e)) => return EventsEnd::Lost(e.to_string()),
                    Some(Ok(message)) => {
                        let actor = message.actor.unwrap_or_default();
                        on_event(ContainerEvent {
                            action: message.action.unwrap_or_default(),
                            container_id: actor.id.unwrap_or_default(),
                            labels: actor.attributes.unwrap_or_default(),
                        });
                    }
                }
            }
        })
    }
}
