//! The Engine's side of Swarm: nodes, leftover services, the isolated network, and
//! [`Engine::run_service`], one trial's service from creation to removal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{LocalNodeState, NetworkCreateRequest, Task};
use bollard::query_parameters::ListTasksOptionsBuilder;
use bollard::query_parameters::{InspectNetworkOptions, ListNodesOptions, ListServicesOptionsBuilder};
use bollard::Docker;
use mlci_core::{Control, StopSignal};

use super::follow::{follow_service, Steering};
use super::service::service_spec;
use super::{Placement, ServiceOutcome, SwarmNode, ISOLATED_NETWORK, POLL};
use crate::engine::short;
use crate::{ContainerError, ContainerSpec, Engine, Leftover};

/// How long to wait for a removed service's task to go away.
const REMOVAL_WAIT: Duration = Duration::from_secs(15);

fn not_a_manager(detail: impl std::fmt::Display) -> ContainerError {
    ContainerError::Engine {
        what: "swarm".into(),
        message: format!(
            "this Engine is not a swarm manager ({detail}): run `docker swarm init` (or use a manager's \
             DOCKER_HOST) or set executor back to container"
        ),
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
    /// service, and so does `stop`, checked every poll), `on_start` gets the task id
    /// and its node's hostname once it runs; wait for the task to end, remove the service whatever happened,
    /// and say how it ended.
    pub fn run_service(
        &self,
        spec: &ContainerSpec,
        placement: &Placement,
        stop: &StopSignal,
        on_start: &mut dyn FnMut(&str, &str),
        on_line: &mut dyn FnMut(&str) -> Control,
    ) -> Result<ServiceOutcome, ContainerError> {
        spec.check()?;
        let nodes = self.swarm_nodes()?;
        let max_cpus = nodes
            .iter()
            .filter(|n| n.schedulable())
            .map(|n| n.cpus)
            .fold(0.0, f64::max);
        let mut log = crate::engine::open_log(spec.log_file.as_deref())?;
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
            let result = follow_service(
                docker,
                &id,
                &spec,
                Steering { placement, stop },
                log.as_mut(),
                on_start,
                on_line,
            )
            .await;
            // Always remove it, whatever happened; report the first error.
            let removed = delete_service(docker, &id).await;
            let outcome = result?;
            removed?;
            Ok(outcome)
        })
    }
}

pub(super) async fn ensure_isolated_network(docker: &Docker) -> Result<(), ContainerError> {
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

pub(super) async fn delete_service(docker: &Docker, id: &str) -> Result<(), ContainerError> {
    match docker.delete_service(id).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(ContainerError::engine(
            format!("removing service {}", short(id)),
            e,
        )),
    }
}

pub(super) async fn service_task(docker: &Docker, service: &str) -> Result<Option<Task>, ContainerError> {
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
pub(super) async fn remove_and_wait(docker: &Docker, service: &str) -> Result<(), ContainerError> {
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
