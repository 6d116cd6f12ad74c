//! `mlci-health`: registered environments kept alive (the classic pipeline's
//! jobs 2 and 5).
//!
//! [`Health::up`] registers an environment (a named container: image,
//! command, mounts, limits) in the [`EnvironmentStore`] and starts it.
//! [`Health::reconcile`] looks at every registered environment once (what
//! `mlci health check` runs from a Jenkins cron job) and relaunches the dead,
//! unhealthy (Docker HEALTHCHECK) or missing ones with the same
//! configuration; [`Health::watch`] does that every `interval` and, between
//! reconciles, follows the Engine's event stream so a death is acted on
//! within a second. A training container's command carries `--resume`, so a
//! relaunch continues from its last epoch checkpoint.
//!
//! Relaunches in a row back off exponentially (the first is immediate) and
//! stop at a crash-loop limit, after which the environment is reported, not
//! retried; a container that ran for `stable_after` resets the count. An exit
//! 2 (bad input, [`BAD_INPUT_EXIT`]) is final at once: recorded and reported,
//! never relaunched, since the same input would fail the same way. Every
//! decision is a [`Restart`] in the store's history, and a dead container's
//! log is saved before it is removed.
//!
//! **Invariants:** only containers labelled with this instance's
//! `mlci.owner` are ever touched; an Engine that cannot be reached is an
//! error of the check, never a death (nothing is relaunched or counted);
//! the store is written before and after every relaunch, so a watcher killed
//! at any point resumes from what it recorded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

mod finding;
mod policy;

pub use finding::{Action, Finding};
pub use policy::Policy;

use finding::{now, short};

use mlci_containers::{
    classify_exit, container_user, ContainerError, ContainerSpec, ContainerStatus, Engine, EventsEnd, Mount,
    TrialLabels,
};
use mlci_core::{
    EnvironmentRecord, EnvironmentSpec, EnvironmentState, EnvironmentStore, FailureKind, Restart,
    RestartPolicy, SpecError, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("no environment named {0} is registered (see `mlci env list`)")]
    Unknown(String),
    #[error("environment {name}: {message}")]
    Invalid { name: String, message: String },
}

/// The exit code of bad input (mlci's exit table; also argparse's and most CLIs' usage
/// error): the same command would fail the same way, so it is never relaunched.
pub const BAD_INPUT_EXIT: i64 = 2;

/// The container name of an environment.
pub fn container_name(env: &str) -> String {
    format!("mlci-env-{env}")
}

/// Registers, checks and relaunches environments on one Engine.
pub struct Health {
    engine: Arc<Engine>,
    store: Arc<dyn EnvironmentStore>,
    policy: Policy,
    owner: String,
    log_dir: PathBuf,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("engine", &self.engine)
            .field("policy", &self.policy)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// `owner` goes into every container's `mlci.owner` label and scopes what
    /// this instance touches; dead containers' logs are saved under `log_dir/<env>/`.
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn EnvironmentStore>,
        policy: Policy,
        owner: &str,
        log_dir: &Path,
    ) -> Self {
        Self {
            engine,
            store,
            policy,
            owner: owner.to_owned(),
            log_dir: log_dir.to_owned(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Register `spec` and start its container. An environment of that name
    /// that runs with the same spec is left alone; otherwise its container is
    /// replaced and its crash-loop count reset (this is how a crash loop is
    /// retried after a fix).
    pub fn up(&self, spec: EnvironmentSpec) -> Result<EnvironmentRecord, HealthError> {
        spec.validate()?;
        if let Some(existing) = self.store.environment(&spec.name)? {
            let running = match &existing.container_id {
                Some(id) => self
                    .engine
                    .status(id)?
                    .is_some_and(|s| s.running && !s.is_unhealthy()),
                None => false,
            };
            if existing.spec == spec && running && existing.state == EnvironmentState::Running {
                tracing::info!(environment = %spec.name, "already up");
                return Ok(existing);
            }
            if let Some(id) = &existing.container_id {
                self.retire(&spec.name, id)?;
            }
        }
        let t = now();
        let mut record = EnvironmentRecord {
            spec,
            state: EnvironmentState::Running,
            container_id: None,
            image_digest: None,
            consecutive_restarts: 0,
            total_restarts: 0,
            started_at: None,
            next_attempt_at: None,
            created_at: t,
            updated_at: t,
            message: None,
        };
        self.store.put_environment(&record)?;
        self.launch(&mut record)?;
        Ok(record)
    }

    /// Stop and remove an environment's container and forget it (and its
    /// history). False when no such environment was registered.
    pub fn down(&self, name: &str) -> Result<bool, HealthError> {
        let Some(record) = self.store.environment(name)? else {
            return Ok(false);
        };
        if let Some(id) = &record.container_id {
            self.retire(name, id)?;
        }
        Ok(self.store.delete_environment(name)?)
    }

    pub fn environments(&self) -> Result<Vec<EnvironmentRecord>, HealthError> {
        Ok(self.store.environments()?)
    }

    pub fn restarts(&self, name: &str) -> Result<Vec<Restart>, HealthError> {
        Ok(self.store.restarts(name)?)
    }

    /// One pass over every registered environment (`mlci health check`).
    /// Also removes containers of this owner that run no registered
    /// environment (left behind by a crash between launch and record).
    pub fn reconcile(&self) -> Result<Vec<Finding>, HealthError> {
        let records = self.store.environments()?;
        let mut findings = Vec::with_capacity(records.len());
        for record in &records {
            findings.push(self.check(&record.spec.name)?);
        }
        self.remove_strays(&records);
        Ok(findings)
    }

    /// Containers are named after their environment, so there is at most one
    /// per environment; a stray is one whose environment is not registered.
    fn remove_strays(&self, records: &[EnvironmentRecord]) {
        let Ok(containers) = self.engine.leftovers(&self.owner) else {
            return;
        };
        for c in containers {
            let Some(env) = c.labels.get("mlci.environment") else {
                continue;
            };
            if !records.iter().any(|r| &r.spec.name == env) {
                tracing::warn!(container = short(&c.id), environment = %env, "removing a container of an unregistered environment");
                let _ = self.engine.remove_container(&c.id);
            }
        }
    }

    /// Check one environment and act on what is found.
    pub fn check(&self, name: &str) -> Result<Finding, HealthError> {
        let Some(mut record) = self.store.environment(name)? else {
            return Err(HealthError::Unknown(name.to_owned()));
        };
        let finding = |observed: String, action: Action| Finding {
            environment: name.to_owned(),
            observed,
            action,
        };
        match record.state {
            EnvironmentState::Completed => {
                let why = record.message.clone().unwrap_or_else(|| "completed".into());
                return Ok(finding(why, Action::None));
            }
            EnvironmentState::CrashLoop => {
                let why = record.message.clone().unwrap_or_else(|| "crash loop".into());
                return Ok(finding(why, Action::GaveUp));
            }
            EnvironmentState::Failed => {
                let why = record.message.clone().unwrap_or_else(|| "bad input".into());
                return Ok(finding(why, Action::BadInput));
            }
            EnvironmentState::Waiting => {
                let until = record.next_attempt_at.unwrap_or(0.0);
                let observed = record.message.clone().unwrap_or_else(|| "dead".into());
                if now() < until {
                    return Ok(finding(observed, Action::Waiting { until }));
                }
                return Ok(finding(observed, self.relaunch(&mut record)));
            }
            EnvironmentState::Running => {}
        }
        let status = match &record.container_id {
            Some(id) => match self.engine.status(id) {
                Ok(s) => s,
                Err(e) => return Ok(finding("unknown".into(), Action::Failed(e.to_string()))),
            },
            None => None,
        };
        let (observed, exit_code) = match &status {
            Some(s) if s.running && !s.is_unhealthy() => {
                self.note_stable(&mut record)?;
                let health = s.health.as_deref().map(|h| format!(", {h}")).unwrap_or_default();
                return Ok(finding(format!("running{health}"), Action::None));
            }
            Some(s) if s.running => ("unhealthy (HEALTHCHECK failing)".to_owned(), None),
            Some(s) => {
                let code = s.exit_code.unwrap_or(-1);
                let done = record.spec.done_exit_codes.contains(&code) && !s.oom_killed;
                if done && record.spec.restart == RestartPolicy::OnFailure {
                    let observed = format!("completed (exited {code})");
                    return Ok(finding(observed, self.complete(&mut record, s)?));
                }
                if code == BAD_INPUT_EXIT && !s.oom_killed {
                    let observed = describe_exit(s);
                    return Ok(finding(
                        observed.clone(),
                        self.bad_input(&mut record, s, &observed)?,
                    ));
                }
                (describe_exit(s), Some(code))
            }
            None => ("missing (its container is gone)".to_owned(), None),
        };
        Ok(finding(
            observed.clone(),
            self.died(&mut record, &observed, exit_code)?,
        ))
    }

    /// A container that has run for `stable_after` clears the crash-loop count.
    fn note_stable(&self, record: &mut EnvironmentRecord) -> Result<(), HealthError> {
        let stable = record
            .started_at
            .is_some_and(|t| now() - t >= self.policy.stable_after.as_secs_f64());
        if stable && record.consecutive_restarts > 0 {
            record.consecutive_restarts = 0;
            record.updated_at = now();
            self.store.put_environment(record)?;
        }
        Ok(())
    }

    fn complete(
        &self,
        record: &mut EnvironmentRecord,
        status: &ContainerStatus,
    ) -> Result<Action, HealthError> {
        let name = record.spec.name.clone();
        self.retire(&name, &status.id)?;
        record.state = EnvironmentState::Completed;
        record.message = Some(format!("completed (exited {})", status.exit_code.unwrap_or(0)));
        record.updated_at = now();
        self.store.put_environment(record)?;
        tracing::info!(environment = %name, "completed");
        Ok(Action::None)
    }

    /// Its command exited with bad input: record it (state `failed`, a history entry
    /// `not_relaunched`) and keep its log; no relaunch.
    fn bad_input(
        &self,
        record: &mut EnvironmentRecord,
        status: &ContainerStatus,
        observed: &str,
    ) -> Result<Action, HealthError> {
        let name = record.spec.name.clone();
        self.retire(&name, &status.id)?;
        let t = now();
        let message = format!("{observed}: not relaunched (the same input fails the same way)");
        record.state = EnvironmentState::Failed;
        record.message = Some(message.clone());
        record.next_attempt_at = None;
        record.updated_at = t;
        self.store.put_environment(record)?;
        self.store.add_restart(&Restart {
            environment: name.clone(),
            at: t,
            reason: observed.to_owned(),
            exit_code: status.exit_code,
            old_container: Some(status.id.clone()),
            new_container: None,
            backoff_seconds: 0.0,
            action: "not_relaunched".into(),
        })?;
        tracing::error!(environment = %name, "{message}");
        Ok(Action::BadInput)
    }

    /// Record a death and relaunch now, later (back-off) or never (crash loop).
    fn died(
        &self,
        record: &mut EnvironmentRecord,
        observed: &str,
        exit_code: Option<i64>,
    ) -> Result<Action, HealthError> {
        let name = record.spec.name.clone();
        let t = now();
        let lived = record.started_at.map(|s| t - s).unwrap_or(0.0);
        let in_a_row = if lived >= self.policy.stable_after.as_secs_f64() {
            1
        } else {
            record.consecutive_restarts + 1
        };
        tracing::warn!(environment = %name, observed, lived_seconds = lived, in_a_row, "environment died");
        if let Some(id) = record.container_id.clone() {
            self.retire(&name, &id)?;
        }
        record.updated_at = t;
        if in_a_row > self.policy.crash_loop_limit {
            let message = format!(
                "crash loop: {observed} after {} relaunches in a row; gave up",
                record.consecutive_restarts
            );
            record.state = EnvironmentState::CrashLoop;
            record.message = Some(message.clone());
            self.store.put_environment(record)?;
            self.store.add_restart(&Restart {
                environment: name.clone(),
                at: t,
                reason: observed.to_owned(),
                exit_code,
                old_container: record.container_id.clone(),
                new_container: None,
                backoff_seconds: 0.0,
                action: "gave_up".into(),
            })?;
            tracing::error!(environment = %name, "{message}");
            return Ok(Action::GaveUp);
        }
        record.consecutive_restarts = in_a_row;
        record.message = Some(observed.to_owned());
        let wait = self.policy.backoff(in_a_row);
        record.state = EnvironmentState::Waiting;
        record.next_attempt_at = Some(t + wait.as_secs_f64());
        self.store.put_environment(record)?;
        if wait.is_zero() {
            Ok(self.relaunch_with(record, observed, exit_code))
        } else {
            Ok(Action::Waiting {
                until: t + wait.as_secs_f64(),
            })
        }
    }

    fn relaunch(&self, record: &mut EnvironmentRecord) -> Action {
        let observed = record.message.clone().unwrap_or_else(|| "dead".into());
        self.relaunch_with(record, &observed, None)
    }

    fn relaunch_with(
        &self,
        record: &mut EnvironmentRecord,
        observed: &str,
        exit_code: Option<i64>,
    ) -> Action {
        let old = record.container_id.clone();
        let waited = self.policy.backoff(record.consecutive_restarts).as_secs_f64();
        let outcome = self.launch(record);
        let (new_container, action) = match &outcome {
            Ok(id) => (
                Some(id.clone()),
                Action::Relaunched {
                    container: id.clone(),
                    restart: record.consecutive_restarts,
                },
            ),
            Err(e) => (None, Action::Failed(format!("relaunch failed: {e}"))),
        };
        record.total_restarts += 1;
        let history = Restart {
            environment: record.spec.name.clone(),
            at: now(),
            reason: observed.to_owned(),
            exit_code,
            old_container: old,
            new_container,
            backoff_seconds: waited,
            action: match &outcome {
                Ok(_) => "relaunched".into(),
                Err(e) => format!("failed: {e}"),
            },
        };
        let saved = self
            .store
            .put_environment(record)
            .and_then(|()| self.store.add_restart(&history));
        match saved {
            Ok(()) => action,
            Err(e) => Action::Failed(format!("relaunched, but the store failed: {e}")),
        }
    }

    /// Start the environment's container and record it (state `running`).
    /// On failure the record stays `waiting`, to be retried after a back-off.
    fn launch(&self, record: &mut EnvironmentRecord) -> Result<String, HealthError> {
        let spec = self.container_spec(&record.spec)?;
        let name = container_name(&record.spec.name);
        // A container by that name is a previous one of this environment.
        if let Some(old) = self.engine.status(&name)? {
            self.retire(&record.spec.name, &old.id)?;
        }
        match self.engine.start_detached(&spec, &name) {
            Ok(id) => {
                record.state = EnvironmentState::Running;
                record.container_id = Some(id.clone());
                record.image_digest = self.engine.image_id(&record.spec.image).ok().flatten();
                record.started_at = Some(now());
                record.next_attempt_at = None;
                record.updated_at = now();
                self.store.put_environment(record)?;
                tracing::info!(environment = %record.spec.name, container = short(&id), "launched");
                Ok(id)
            }
            Err(e) => {
                let wait = self.policy.backoff(record.consecutive_restarts.max(1) + 1);
                record.state = EnvironmentState::Waiting;
                record.next_attempt_at = Some(now() + wait.as_secs_f64());
                record.message = Some(format!("could not launch: {e}"));
                record.updated_at = now();
                self.store.put_environment(record)?;
                Err(e.into())
            }
        }
    }

    /// Save a container's log under `log_dir/<env>/<id>.log`, then remove it.
    fn retire(&self, env: &str, id: &str) -> Result<(), HealthError> {
        match self.engine.logs(id) {
            Ok(text) if !text.is_empty() => {
                let dir = self.log_dir.join(env);
                let path = dir.join(format!("{}.log", short(id)));
                if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
                    tracing::warn!(path = %path.display(), error = %e, "could not save a container's log");
                }
            }
            _ => {}
        }
        self.engine.remove_container(id)?;
        Ok(())
    }

    fn container_spec(&self, env: &EnvironmentSpec) -> Result<ContainerSpec, HealthError> {
        let mut spec = ContainerSpec::new(env.image.clone(), env.command.clone());
        spec.env = env.env.clone();
        spec.mounts = env
            .mounts
            .iter()
            .map(|m| {
                if m.read_only {
                    Mount::ro(&m.source, &m.target)
                } else {
                    Mount::rw(&m.source, &m.target)
                }
            })
            .collect();
        spec.cpus = env.cpus;
        spec.memory_bytes = env.memory_bytes;
        spec.network = env.network;
        spec.healthcheck = env.healthcheck.clone();
        spec.labels = TrialLabels {
            kind: env.kind.clone(),
            owner: self.owner.clone(),
            environment: env.name.clone(),
            ..TrialLabels::default()
        };
        spec.user = if env.user.is_empty() {
            match env.mounts.iter().find(|m| !m.read_only) {
                Some(m) => {
                    let (uid, gid) = container_user(&m.source).map_err(|f| HealthError::Invalid {
                        name: env.name.clone(),
                        message: f.message,
                    })?;
                    format!("{uid}:{gid}")
                }
                None => mlci_containers::CONTAINER_USER.to_owned(),
            }
        } else {
            env.user.clone()
        };
        Ok(spec)
    }

    /// Reconcile every `policy.interval`, and act on the Engine's events in
    /// between, until `stop` is set. `on_finding` sees every finding that is
    /// not "running". Survives the Engine going away: it keeps trying to
    /// reconnect and reconciles everything when the Engine is back.
    pub fn watch(&self, stop: &AtomicBool, on_finding: &mut dyn FnMut(&Finding)) -> Result<(), HealthError> {
        enum Msg {
            Event(String),
            Lost(String),
            Back,
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let label = format!("mlci.owner={}", self.owner);
        std::thread::scope(|scope| -> Result<(), HealthError> {
            let engine = &self.engine;
            scope.spawn(move || {
                let mut lost = false;
                while !stop.load(Ordering::Relaxed) {
                    if lost {
                        if engine.ping().is_err() {
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                        if tx.send(Msg::Back).is_err() {
                            return;
                        }
                    }
                    let end = engine.follow_events(&label, stop, Duration::from_millis(200), &mut |ev| {
                        let relevant = matches!(ev.action.as_str(), "die" | "oom" | "destroy")
                            || ev.action.contains("unhealthy");
                        if let (true, Some(env)) = (relevant, ev.environment()) {
                            let _ = tx.send(Msg::Event(env.to_owned()));
                        }
                    });
                    match end {
                        EventsEnd::Stopped => return,
                        EventsEnd::Lost(why) => {
                            lost = true;
                            if tx.send(Msg::Lost(why)).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            let mut report = |f: &Finding| {
                if f.observed != "running" && !f.observed.starts_with("running,") {
                    on_finding(f);
                }
            };
            let mut next_full = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if std::time::Instant::now() >= next_full {
                    match self.reconcile() {
                        Ok(findings) => findings.iter().for_each(&mut report),
                        Err(e) => tracing::warn!(error = %e, "reconcile failed"),
                    }
                    next_full = std::time::Instant::now() + self.policy.interval;
                }
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(Msg::Event(name)) => match self.check(&name) {
                        Ok(f) => report(&f),
                        Err(HealthError::Unknown(_)) => {}
                        Err(e) => tracing::warn!(environment = %name, error = %e, "check failed"),
                    },
                    Ok(Msg::Lost(why)) => {
                        tracing::warn!(error = %why, "lost the Engine's event stream; reconnecting")
                    }
                    Ok(Msg::Back) => {
                        tracing::info!("the Engine is back; reconciling everything");
                        next_full = std::time::Instant::now();
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => self.due(&mut report),
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            Ok(())
        })
    }

    /// Relaunch environments whose back-off has passed.
    fn due(&self, report: &mut dyn FnMut(&Finding)) {
        let Ok(records) = self.store.environments() else {
            return;
        };
        let t = now();
        for r in records {
            if r.state == EnvironmentState::Waiting && r.next_attempt_at.is_some_and(|due| due <= t) {
                match self.check(&r.spec.name) {
                    Ok(f) => report(&f),
                    Err(e) => tracing::warn!(environment = %r.spec.name, error = %e, "relaunch failed"),
                }
            }
        }
    }
}

/// `exited 137 (killed)`, `exited 1 (crashed)`, `OOM-killed`, …
fn describe_exit(s: &ContainerStatus) -> String {
    let code = s.exit_code.unwrap_or(-1);
    let class = match classify_exit(code, s.oom_killed) {
        Some(FailureKind::OutOfMemory) => return "OOM-killed".to_owned(),
        Some(FailureKind::Killed) => "killed",
        Some(FailureKind::BadSpec) => "bad input",
        Some(_) => "crashed",
        None => "done",
    };
    match &s.error {
        Some(e) => format!("exited {code} ({class}: {e})"),
        None => format!("exited {code} ({class})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_relaunch_and_is_capped() {
        let p = Policy {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            ..Policy::default()
        };
        let got: Vec<f64> = (1..=6).map(|n| p.backoff(n).as_secs_f64()).collect();
        assert_eq!(got, [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]);
        assert_eq!(p.backoff(1000), Duration::from_secs(5));
    }

    #[test]
    fn exits_are_described_with_their_class() {
        let s = |code, oom| ContainerStatus {
            id: "x".into(),
            status: "exited".into(),
            running: false,
            exit_code: Some(code),
            oom_killed: oom,
            health: None,
            error: None,
        };
        assert_eq!(describe_exit(&s(137, false)), "exited 137 (killed)");
        assert_eq!(describe_exit(&s(1, false)), "exited 1 (crashed)");
        assert_eq!(describe_exit(&s(137, true)), "OOM-killed");
        assert_eq!(describe_exit(&s(2, false)), "exited 2 (bad input)");
    }
}
