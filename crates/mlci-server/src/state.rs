//! The one shared state, and the run lifecycle: create, execute on a blocking thread,
//! cancel, recover after a restart, drain at shutdown.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use mlci_core::{NewRun, Outcome, RunFilter, RunRecord, RunState, RunStore, Store, StoreError};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::params::RawParams;
use crate::steps::{DynSteps, RunContext};
use crate::{Gauge, ServerConfig};

/// Readiness of something besides the store (the Docker Engine): `Err` says what is wrong.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// Extra gauges for `/metrics` (health relaunches, …), read at each scrape.
pub type GaugeSource = Arc<dyn Fn() -> Vec<Gauge> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct AppState(pub Arc<Inner>);

pub(crate) struct Inner {
    pub config: ServerConfig,
    pub store: Arc<dyn RunStore>,
    /// Where experiments are read from (the dashboard), when the binary gave one.
    pub experiments: Option<Arc<dyn Store>>,
    /// Summaries of finished experiments (they do not change), so polling the list reads
    /// only the running ones' trials.
    pub summaries: Arc<crate::experiments::SummaryCache>,
    pub steps: Arc<dyn DynSteps>,
    pub metrics: Metrics,
    pub readiness: Vec<ReadinessCheck>,
    pub gauges: Vec<GaugeSource>,
    /// Flags of the runs executing in this process.
    pub active: Mutex<HashMap<String, RunFlags>>,
    /// The number of runs executing; shutdown waits for 0.
    pub running: watch::Sender<usize>,
    /// Bumped whenever a run's log grows or a run ends: log followers wait on it instead
    /// of polling the store.
    pub log_signal: Arc<watch::Sender<u64>>,
    /// Permits for open log streams (`?follow=1`); none left: 429.
    pub followers: Arc<tokio::sync::Semaphore>,
    /// Per-caller limits on starting runs and on open log streams.
    pub callers: crate::limits::CallerLimits,
    /// Set once shutdown began: no new runs start.
    pub stopping: AtomicBool,
    /// The crumb `/crumbIssuer` hands out (crumbs are not required with a token).
    pub crumb: String,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The flags of one executing run.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFlags {
    /// What the step sees ([`RunContext::cancelled`]).
    pub cancel: Arc<AtomicBool>,
    /// Set when someone asked (DELETE, Jenkins stop), not the shutdown.
    pub by_user: Arc<AtomicBool>,
}

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl AppState {
    /// Run a store call on a blocking thread (SQLite blocks).
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn RunStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }

    /// Run a call on the experiments source on a blocking thread; 503 without a source.
    pub(crate) async fn experiments_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let Some(store) = self.experiments.clone() else {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "no experiments source is configured: this server was started without \
                 an experiment store (Server::experiments)",
            ));
        };
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }

    pub(crate) async fn run_or_404(&self, id: String) -> Result<RunRecord, ApiError> {
        let shown = id.clone();
        self.db(move |s| s.run(&id))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no run {shown}")))
    }

    /// The built-in Jenkins trigger, when `step` names it and it is configured.
    fn builtin(&self, step: &str) -> Option<&crate::JenkinsTarget> {
        self.config
            .jenkins
            .as_ref()
            .filter(|_| step == crate::JENKINS_TRIGGER_STEP)
    }

    /// Whether `step` is one of the steps (or the configured built-in trigger).
    pub(crate) fn has_step(&self, step: &str) -> bool {
        self.builtin(step).is_some() || self.steps.names().iter().any(|s| s == step)
    }

    /// Check a step's parameters (a JSON object) before a run is created, on a blocking
    /// thread (a step may look at the filesystem to check them).
    pub(crate) async fn validate(&self, step: &str, params: &RawParams) -> Result<(), ApiError> {
        if self.builtin(step).is_some() {
            return Ok(());
        }
        let steps = Arc::clone(&self.steps);
        let (step, params) = (step.to_owned(), params.clone());
        tokio::task::spawn_blocking(move || steps.accept(&step, &params))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::bad_field(e.field, e.message))
    }

    /// Create a run (or find the one with the same idempotency key) and start it when new.
    pub(crate) async fn submit(
        &self,
        step: &str,
        params: RawParams,
        key: Option<String>,
    ) -> Result<(RunRecord, bool), ApiError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the service is shutting down",
            ));
        }
        let requested = Value::Object(params);
        let new = NewRun {
            step: step.to_owned(),
            params: requested.to_string(),
            idempotency_key: key.clone(),
            created_at: now(),
        };
        // The run is created and started in one blocking task: if the client goes away
        // while it runs (the handler's future is dropped at the await), a created run is
        // still started, never left `queued` until a restart.
        let state = self.clone();
        let (run, created) = self
            .db(move |s| {
                let (run, created) = s.create_run(&new)?;
                if created {
                    tracing::info!(run = %run.id, step = %run.step, "run created");
                    state.start(run.clone(), false);
                }
                Ok((run, created))
            })
            .await?;
        if !created && run.step != step {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "the idempotency key names run {} of step `{}`, not `{step}`",
                    run.id, run.step
                ),
            ));
        }
        // A retry sends the same request; another request under a used key (a re-created
        // job's BUILD_TAG, a second controller) must not be answered with someone else's run.
        if !created && serde_json::from_str::<Value>(&run.params).ok().as_ref() != Some(&requested) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the idempotency key `{}` names run {}, which was created with other parameters; \
                     use a new key for a new request",
                    key.unwrap_or_default(),
                    run.id
                ),
            ));
        }
        Ok((run, created))
    }

    /// Execute `run` on a blocking thread.
    pub(crate) fn start(&self, run: RunRecord, resumed: bool) {
        let flags = RunFlags::default();
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(run.id.clone(), flags.clone());
        self.running.send_modify(|n| *n += 1);
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let id = run.id.clone();
            state.execute(run, flags, resumed);
            state
                .active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            state.running.send_modify(|n| *n = n.saturating_sub(1));
        });
    }

    /// Set the cancel flag of a run executing here; false when it is not.
    pub(crate) fn cancel(&self, id: &str) -> bool {
        match self.active.lock().unwrap_or_else(PoisonError::into_inner).get(id) {
            Some(flags) => {
                flags.by_user.store(true, Ordering::SeqCst);
                flags.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Set every executing run's cancel flag (the shutdown).
    pub(crate) fn cancel_all(&self) {
        for flags in self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            flags.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Wait until no run executes, at most `grace`; false on timeout.
    pub(crate) async fn drain(&self, grace: Duration) -> bool {
        let mut rx = self.running.subscribe();
        let drained = tokio::time::timeout(grace, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        drained
    }

    fn artifacts_dir(&self, id: &str) -> PathBuf {
        // `id` comes from the store (`r-` and digits), never from a request.
        self.config.artifacts_dir.join(id)
    }

    /// The run's whole life on this thread: running, the step, the end state.
    fn execute(&self, mut run: RunRecord, flags: RunFlags, resumed: bool) {
        let cancel = Arc::clone(&flags.cancel);
        let store = self.store.as_ref();
        let id = run.id.clone();
        let span = tracing::info_span!("run", run = %id, step = %run.step);
        let _guard = span.enter();
        run.state = RunState::Running;
        if !resumed || run.started_at.is_none() {
            run.started_at = Some(now());
        }
        run.finished_at = None;
        run.error = None;
        run.outcome = None;
        if let Err(e) = store.update_run(&run) {
            tracing::error!(error = %e, "could not mark the run running");
        }
        let artifacts = self.artifacts_dir(&id);
        let ctx = RunContext {
            id: id.clone(),
            store: Arc::clone(&self.store),
            cancel: Arc::clone(&cancel),
            by_user: Arc::clone(&flags.by_user),
            artifacts: artifacts.clone(),
            resumed,
            log_signal: Arc::clone(&self.log_signal),
        };
        if resumed {
            ctx.log(format!("Resumed by mlci serve (run {id})"));
        } else {
            ctx.log(format!("Started by mlci serve (run {id}, step {})", run.step));
        }
        let outcome = match std::fs::create_dir_all(&artifacts) {
            Err(e) => Err(format!(
                "create the artifacts folder {}: {e}",
                artifacts.display()
            )),
            Ok(()) => match serde_json::from_str::<RawParams>(&run.params) {
                Err(e) => Err(format!("the stored parameters are not a JSON object: {e}")),
                Ok(params) => {
                    let steps = Arc::clone(&self.steps);
                    let step = run.step.clone();
                    let builtin = self.builtin(&step);
                    let work = || match builtin {
                        Some(target) => crate::trigger::run_trigger(target, &params, &ctx),
                        None => steps.run(&step, &params, &ctx),
                    };
                    match std::panic::catch_unwind(AssertUnwindSafe(work)) {
                        Ok(Ok(out)) => Ok(out),
                        Ok(Err(failure)) => Err(failure.0),
                        Err(_) => Err("the step panicked (the service log has the details)".to_owned()),
                    }
                }
            },
        };
        let cancelled = cancel.load(Ordering::SeqCst);
        let completed = matches!(&outcome, Ok(out) if out.outcome != Outcome::Aborted);
        if cancelled
            && !completed
            && !flags.by_user.load(Ordering::SeqCst)
            && self.stopping.load(Ordering::SeqCst)
        {
            self.shelve(run, &ctx);
            return;
        }
        match outcome {
            Ok(out) => {
                run.result = Some(out.result.to_string());
                if cancelled && out.outcome == Outcome::Aborted {
                    run.state = RunState::Cancelled;
                } else {
                    run.state = RunState::Succeeded;
                }
                run.outcome = Some(out.outcome);
            }
            Err(message) if cancelled => {
                ctx.log(format!("ERROR: {message}"));
                run.state = RunState::Cancelled;
                run.outcome = Some(Outcome::Aborted);
                run.error = Some(message);
            }
            Err(message) => {
                ctx.log(format!("ERROR: {message}"));
                run.state = RunState::Failed;
                run.outcome = Some(Outcome::Failure);
                run.error = Some(message);
            }
        }
        let finished = now();
        run.finished_at = Some(finished);
        let outcome = run.outcome.unwrap_or(Outcome::Failure);
        // Jenkins ends every console with this line; so do runs (before the state changes,
        // so a reader that sees the run finished has the whole log).
        ctx.log(format!("Finished: {}", outcome.jenkins_result()));
        if let Err(e) = store.update_run(&run) {
            tracing::error!(error = %e, "could not record the end of the run");
        }
        self.log_signal.send_modify(|n| *n = n.wrapping_add(1));
        let seconds = finished - run.started_at.unwrap_or(finished);
        self.metrics.run_finished(&run.step, seconds);
        tracing::info!(
            state = run.state.as_str(),
            outcome = outcome.as_str(),
            seconds,
            "run finished"
        );
    }

    /// Whether the steps resume `run` (its stored parameters parsed as at its start).
    fn resumable(&self, run: &RunRecord) -> bool {
        serde_json::from_str::<RawParams>(&run.params).is_ok_and(|raw| self.steps.resumable(&run.step, &raw))
    }

    /// A run stopped by the shutdown: back to `queued` when the step resumes it at the next
    /// start, otherwise `interrupted`.
    fn shelve(&self, mut run: RunRecord, ctx: &RunContext) {
        if self.builtin(&run.step).is_none() && self.resumable(&run) {
            ctx.log("Interrupted: mlci serve is shutting down; the run resumes when it starts again");
            run.state = RunState::Queued;
            run.error = Some("waiting for the service to restart".to_owned());
        } else {
            let message = "interrupted: the service shut down while the run was running".to_owned();
            ctx.log(format!("{message}\nFinished: ABORTED"));
            run.state = RunState::Interrupted;
            run.outcome = Some(Outcome::Aborted);
            run.error = Some(message);
            run.finished_at = Some(now());
        }
        if let Err(e) = self.store.update_run(&run) {
            tracing::error!(error = %e, "could not record the interruption of the run");
        }
        tracing::warn!(run = %run.id, state = run.state.as_str(), "run stopped by the shutdown");
    }

    /// Runs left `queued`/`running` by a previous process: resumed when the steps say so,
    /// otherwise marked `interrupted`.
    pub(crate) fn recover(&self) -> Result<(), StoreError> {
        let left = self.store.runs(&RunFilter {
            states: vec![RunState::Queued, RunState::Running],
            ..RunFilter::default()
        })?;
        for mut run in left.into_iter().rev() {
            if self.builtin(&run.step).is_none()
                && self.steps.names().contains(&run.step)
                && self.resumable(&run)
            {
                tracing::info!(run = %run.id, step = %run.step, "resuming run left by the previous process");
                self.start(run, true);
                continue;
            }
            tracing::warn!(run = %run.id, step = %run.step, "marking run interrupted");
            let message = format!(
                "interrupted: the service stopped while the run was {} and the step does not resume",
                run.state.as_str()
            );
            self.store
                .append_log(&run.id, format!("{message}\nFinished: ABORTED\n").as_bytes())?;
            run.state = RunState::Interrupted;
            run.outcome = Some(Outcome::Aborted);
            run.error = Some(message);
            run.finished_at = Some(now());
            self.store.update_run(&run)?;
        }
        Ok(())
    }

    /// The base URL for links (`http://host:port/`), ending in `/`.
    pub(crate) fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.config.public_url {
            let mut url = url.clone();
            if !url.ends_with('/') {
                url.push('/');
            }
            return url;
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| self.config.listen.to_string());
        format!("http://{host}/")
    }
}

/// A run as the v1 API answers it (params and result as JSON, not text).
pub(crate) fn run_json(run: &RunRecord) -> Value {
    let parse =
        |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.into()));
    json!({
        "id": run.id,
        "step": run.step,
        "number": run.number,
        "state": run.state.as_str(),
        "outcome": run.outcome.map(Outcome::as_str),
        "params": parse(&run.params),
        "result": run.result.as_deref().map(parse),
        "error": run.error,
        "idempotency_key": run.idempotency_key,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    })
}
