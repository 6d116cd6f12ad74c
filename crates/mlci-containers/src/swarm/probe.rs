//! One short task on every node that may run trials (a global service with the
//! trials' placement constraints): mlci asks each node, before the first trial,
//! whether it sees what the manager sees at the same paths (shared storage) and
//! whether it can get the trainer image. A node that cannot is named, with why.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::models::{ServiceSpecMode, TaskState};
use bollard::query_parameters::{ListTasksOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;

use super::manager::{delete_service, ensure_isolated_network};
use super::service::service_spec;
use super::{task_ended, Placement, POLL};
use crate::engine::short;
use crate::{ContainerError, ContainerSpec, Engine};

/// What one node answered.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeProbe {
    pub node_id: String,
    pub hostname: String,
    /// The probe ran and exited 0.
    pub ok: bool,
    /// Why not: the task's error (a missing bind source, an image the node could not
    /// pull) or the probe's own output (which paths differ), else its state.
    pub detail: String,
}

impl Engine {
    /// Run `spec` once on every node that `placement`'s constraints allow (a global
    /// service, restart condition none) and say how it went on each; gives up on
    /// nodes whose task has not ended after `timeout` (its image may still be pulling).
    /// The service is removed in every case.
    pub fn probe_nodes(
        &self,
        spec: &ContainerSpec,
        placement: &Placement,
        timeout: Duration,
    ) -> Result<Vec<NodeProbe>, ContainerError> {
        spec.check()?;
        let docker = self.docker();
        let hostnames: HashMap<String, String> = self
            .swarm_nodes()?
            .into_iter()
            .map(|n| (n.id, n.hostname))
            .collect();
        let mut service = service_spec(spec, placement, f64::MAX);
        service.mode = Some(ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        });
        self.block_on(async {
            if !spec.network {
                ensure_isolated_network(docker).await?;
            }
            let created = docker.create_service(service, None).await.map_err(|e| {
                ContainerError::engine(format!("creating the probe service from {}", spec.image), e)
            })?;
            let id = created.id.unwrap_or_default();
            let result = collect(docker, &id, &hostnames, timeout).await;
            let removed = delete_service(docker, &id).await;
            let probes = result?;
            removed?;
            Ok(probes)
        })
    }
}

async fn collect(
    docker: &bollard::Docker,
    service: &str,
    hostnames: &HashMap<String, String>,
    timeout: Duration,
) -> Result<Vec<NodeProbe>, ContainerError> {
    let started = Instant::now();
    let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    loop {
        let tasks = docker.list_tasks(Some(options.clone())).await.map_err(|e| {
            ContainerError::engine(format!("listing the tasks of service {}", short(service)), e)
        })?;
        let ended = |state: Option<TaskState>| state.is_some_and(task_ended);
        let all_ended = !tasks.is_empty()
            && tasks
                .iter()
                .all(|t| ended(t.status.as_ref().and_then(|s| s.state)));
        let out_of_time = started.elapsed() >= timeout;
        if all_ended || out_of_time {
            let mut probes = Vec::new();
            for task in tasks {
                let node_id = task.node_id.clone().unwrap_or_default();
                let status = task.status.clone().unwrap_or_default();
                let state = status.state;
                let ok = state == Some(TaskState::COMPLETE);
                let detail = if ok {
                    String::new()
                } else if state == Some(TaskState::FAILED) {
                    let output = task_output(docker, task.id.as_deref().unwrap_or_default()).await;
                    if output.is_empty() {
                        status.err.unwrap_or_default()
                    } else {
                        output
                    }
                } else if ended(state) {
                    [status.message, status.err]
                        .into_iter()
                        .flatten()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(": ")
                } else {
                    format!(
                        "no answer within {:.0} s (task {}: {})",
                        timeout.as_secs_f64(),
                        state.map(|s| s.to_string()).unwrap_or_default(),
                        status.message.unwrap_or_default()
                    )
                };
                probes.push(NodeProbe {
                    hostname: hostnames
                        .get(&node_id)
                        .cloned()
                        .unwrap_or_else(|| short(&node_id).to_owned()),
                    node_id,
                    ok,
                    detail,
                });
            }
            probes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
            return Ok(probes);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last lines a finished probe task printed (at most 2 KiB).
async fn task_output(docker: &bollard::Docker, task: &str) -> String {
    let options = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
    let mut logs = docker.task_logs(task, Some(options));
    let mut text = String::new();
    let read = async {
        while let Some(Ok(item)) = logs.next().await {
            if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = item {
                text.push_str(&String::from_utf8_lossy(&message));
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = text.trim();
    let start = text.len().saturating_sub(2048);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].replace('\n', "; ")
}
