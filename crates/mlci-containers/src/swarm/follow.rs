//! Following one trial's service: its task's state (placed, running, ended), its log
//! lines, the trial's timeout and a requested stop.

use std::io::Write;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::models::{Task, TaskState};
use bollard::query_parameters::{InspectContainerOptions, LogsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use mlci_core::{Control, StopSignal};

use super::manager::{delete_service, remove_and_wait, service_task};
use super::{task_ended, Placement, ServiceOutcome, TaskEnd, POLL};
use crate::engine::{short, Lines};
use crate::{ContainerError, ContainerSpec};

/// After the task ended, at most how long reading the rest of its log may take.
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// How often the state of the node under a running task is read.
const NODE_POLL: Duration = Duration::from_secs(1);

/// The node under a task, as the manager last heard of it.
struct NodeView {
    hostname: String,
    /// Swarm's node state: `ready`, `down`, `unknown`, `disconnected`.
    state: String,
    message: String,
}

async fn node_view(docker: &Docker, id: &str) -> Option<NodeView> {
    let node = docker.inspect_node(id).await.ok()?;
    let status = node.status.unwrap_or_default();
    Some(NodeView {
        hostname: node
            .description
            .and_then(|d| d.hostname)
            .unwrap_or_else(|| short(id).to_owned()),
        state: status.state.map(|s| s.to_string()).unwrap_or_default(),
        message: status.message.unwrap_or_default(),
    })
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

struct LogSink<'a> {
    out: Lines,
    err: Lines,
    file: Option<&'a mut std::fs::File>,
    stopped: bool,
    stop_now: bool,
    /// Bytes taken so far from the task's stdout and stderr.
    seen: [usize; 2],
    /// Bytes of stdout and stderr still to pass over: a second read of the log
    /// starts from its beginning and skips what the first delivered.
    skip: [usize; 2],
}

impl<'a> LogSink<'a> {
    fn new(file: Option<&'a mut std::fs::File>) -> Self {
        Self {
            out: Lines::default(),
            err: Lines::default(),
            file,
            stopped: false,
            stop_now: false,
            seen: [0; 2],
            skip: [0; 2],
        }
    }

    fn write(file: &mut Option<&mut std::fs::File>, line: &str) {
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Read the log again from its start: what was taken so far is passed over.
    fn reread(&mut self) {
        self.skip = self.seen;
    }

    /// The part of `message` (of stream `i`, 0 stdout, 1 stderr) not taken yet.
    fn unseen<'m>(&mut self, i: usize, message: &'m [u8]) -> &'m [u8] {
        let skipped = self.skip[i].min(message.len());
        self.skip[i] -= skipped;
        let rest = &message[skipped..];
        self.seen[i] += rest.len();
        rest
    }

    fn push(&mut self, item: LogOutput, on_line: &mut dyn FnMut(&str) -> Control) {
        match item {
            LogOutput::StdOut { message } => {
                let rest = self.unseen(0, &message);
                let Self {
                    out,
                    file,
                    stopped,
                    stop_now,
                    ..
                } = self;
                out.push(rest, |line| {
                    Self::write(file, line);
                    if !*stopped && !*stop_now && on_line(line) == Control::Stop {
                        *stop_now = true;
                    }
                });
            }
            LogOutput::StdErr { message } => {
                let rest = self.unseen(1, &message);
                let Self { err, file, .. } = self;
                err.push(rest, |line| Self::write(file, line));
            }
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

/// What steers a followed service besides its spec: how long it may wait to be placed,
/// and the signal that stops it.
pub(super) struct Steering<'a> {
    pub(super) placement: &'a Placement,
    pub(super) stop: &'a StopSignal,
}

pub(super) async fn follow_service(
    docker: &Docker,
    service: &str,
    spec: &ContainerSpec,
    Steering { placement, stop }: Steering<'_>,
    log: Option<&mut std::fs::File>,
    on_start: &mut dyn FnMut(&str, &str),
    on_line: &mut dyn FnMut(&str) -> Control,
) -> Result<ServiceOutcome, ContainerError> {
    let created = Instant::now();
    let mut outcome = ServiceOutcome {
        service_id: service.to_owned(),
        task_id: None,
        node_id: None,
        node: None,
        end: TaskEnd::Removed,
        exit_code: None,
        oom_killed: false,
        message: String::new(),
        stopped: false,
        timed_out: false,
        seconds: 0.0,
    };
    let mut sink = LogSink::new(log);
    let mut logs = None;
    // The task that ended after running: the rest of its log is read once, unfollowed.
    let mut ended_task: Option<String> = None;
    let mut running_since: Option<Instant> = None;
    let mut unplaced_since: Option<Instant> = None;
    let mut last_task: Option<Task> = None;
    let mut next_poll = Instant::now();
    // The running task's node: when last read, and since when it is not ready.
    let mut node_read = Instant::now();
    let mut node_lost_since: Option<Instant> = None;
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
        if stop.is_set() {
            sink.stop_now = true;
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
        // A node that died or was cut off never reports its task's end: the task stays
        // `running` while Swarm marks the node down (its heartbeats stopped). Past the
        // grace, the trial is lost: its service is removed and it fails as killed, so
        // the runner retries it on another node, from its last checkpoint.
        if matches!(
            state,
            TaskState::ASSIGNED
                | TaskState::ACCEPTED
                | TaskState::PREPARING
                | TaskState::STARTING
                | TaskState::RUNNING
        ) && node_read.elapsed() >= NODE_POLL
        {
            node_read = Instant::now();
            if let Some(node) = task.node_id.as_deref() {
                match node_view(docker, node).await {
                    Some(view) if view.state != "ready" => {
                        let since = *node_lost_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= placement.node_lost_grace {
                            tracing::warn!(
                                service = short(service),
                                node = %view.hostname,
                                state = %view.state,
                                "the trial's node is lost; removing its service"
                            );
                            outcome.end = TaskEnd::NodeLost;
                            outcome.node = Some(view.hostname.clone());
                            outcome.message = format!(
                                "node {} is {} ({}) and was so for {:.0} s",
                                view.hostname,
                                view.state,
                                if view.message.is_empty() {
                                    "no message"
                                } else {
                                    &view.message
                                },
                                since.elapsed().as_secs_f64()
                            );
                            // Not waited for: the lost node cannot confirm the removal.
                            delete_service(docker, service).await?;
                            break;
                        }
                    }
                    Some(view) => {
                        node_lost_since = None;
                        outcome.node = Some(view.hostname);
                    }
                    None => {}
                }
            }
        }
        match state {
            TaskState::RUNNING if running_since.is_none() => {
                running_since = Some(Instant::now());
                let task_id = task.id.clone().unwrap_or_default();
                if let Some(view) = node_view(docker, task.node_id.as_deref().unwrap_or_default()).await {
                    outcome.node = Some(view.hostname);
                }
                on_start(&task_id, outcome.node.as_deref().unwrap_or("?"));
                let options = LogsOptionsBuilder::default()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build();
                logs = Some(Box::pin(docker.task_logs(&task_id, Some(options))));
            }
            state if task_ended(state) => {
                outcome.end = match state {
                    TaskState::COMPLETE => TaskEnd::Complete,
                    TaskState::FAILED => TaskEnd::Failed,
                    TaskState::REJECTED => TaskEnd::Rejected,
                    _ => TaskEnd::Shutdown,
                };
                outcome.message = text;
                let container = status.container_status.unwrap_or_default();
                let ran = container.container_id.as_deref().is_some_and(|c| !c.is_empty());
                if running_since.is_none() && ran {
                    // Ended between two polls: never followed.
                    running_since = Some(Instant::now());
                    on_start(
                        task.id.as_deref().unwrap_or_default(),
                        outcome.node.as_deref().unwrap_or("?"),
                    );
                }
                if running_since.is_some() {
                    ended_task = task.id.clone();
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
    // The task ended on a node that reported it: the rest of its log. A followed task
    // log never ends by itself (waiting for it to go quiet cost a second per trial), so
    // the log is read again, unfollowed, which ends once all of it is sent; what the
    // followed read took is passed over. The followed stream is dropped unread.
    drop(logs);
    if let Some(task_id) = ended_task {
        sink.reread();
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
        let mut rest = std::pin::pin!(docker.task_logs(&task_id, Some(options)));
        let read = async {
            while let Some(item) = StreamExt::next(&mut rest).await {
                match item {
                    Ok(item) => sink.push(item, on_line),
                    Err(e) => {
                        tracing::warn!(service = short(service), error = %e, "reading the task log failed");
                        break;
                    }
                }
            }
        };
        if tokio::time::timeout(DRAIN_MAX, read).await.is_err() {
            tracing::warn!(service = short(service), "the task log did not end in time");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_read_of_the_log_delivers_each_line_once() {
        let mut sink = LogSink::new(None);
        let mut lines = Vec::new();
        let mut on_line = |l: &str| {
            lines.push(l.to_owned());
            Control::Continue
        };
        let out = |s: &str| LogOutput::StdOut {
            message: s.as_bytes().to_vec().into(),
        };
        let err = |s: &str| LogOutput::StdErr {
            message: s.as_bytes().to_vec().into(),
        };
        // The followed read: one whole line, half of the next, some stderr.
        sink.push(out("epoch 1\n"), &mut on_line);
        sink.push(err("warning\n"), &mut on_line);
        sink.push(out("epoch 2 d"), &mut on_line);
        // The unfollowed read from the start, cut into other pieces.
        sink.reread();
        sink.push(out("epo"), &mut on_line);
        sink.push(err("warning\nlast words\n"), &mut on_line);
        sink.push(out("ch 1\nepoch 2 done\nresult"), &mut on_line);
        sink.push(out(" {}\n"), &mut on_line);
        sink.finish(&mut on_line);
        assert_eq!(lines, ["epoch 1", "epoch 2 done", "result {}"]);
        assert_eq!(sink.seen, [31, 19]);
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
}
