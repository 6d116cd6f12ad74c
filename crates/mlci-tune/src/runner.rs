//! The experiment loop: suggest, run, prune, retry, stop at the goal or
//! the budget, and persist every step so a killed process can resume.
//!
//! Resume contract: every trial is written to the store *before* it runs
//! (as `pending`, then `running`), every step as it is reported, and every
//! outcome when it is known. A process killed at any moment leaves trials
//! that are finished (kept as they are), `running` (re-queued as `pending`
//! and resumed from their own checkpoint by the executor) or `pending`. The
//! sampler is a pure function of the stored history, so it suggests the
//! same next trials after a resume. No trial number is ever run twice as a
//! new trial, and finished trials are never re-run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mlci_core::{
    apply_params, Control, Event, Executor, ExecutorKind, ExperimentRecord, ExperimentSpec, ExperimentState,
    Failure, FailureKind, Params, Provenance, StepMetrics, StopSignal, Store, StoreError, TrialRecord,
    TrialRequest, TrialState, TrialWork,
};

use crate::pruner::{pruner_for, Pruner};
use crate::sampler::{sampler_for, Sampler};

mod end;

pub use end::best_trial;

/// Why the loop could not run (as opposed to trials failing, which is an
/// outcome recorded in the experiment).
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no experiment `{0}` in the store")]
    NotFound(String),
}

/// How to run an experiment's trials.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// The experiment's folder; trial `n` works in `root/trials/<n>`.
    pub root: PathBuf,
    /// Cores to split between parallel trials.
    pub threads: usize,
    /// The dataset and its splits, for model trials.
    pub dataset: Option<mlci_core::DataSplits>,
    /// Provenance shared by every trial (commit, dataset fingerprint, version).
    pub provenance: Provenance,
    /// Set to stop gracefully: running trials are told to stop and go back
    /// to `pending`, the experiment stays `running`, to be resumed.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What the loop reports while it runs (for progress output).
#[derive(Debug, Clone)]
pub enum Progress {
    Event(Event),
    Step { trial: u32, step: StepMetrics },
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The objective value of a trial: the best value of `metric` over its
/// steps, else its final value.
pub fn objective_value(
    spec: &ExperimentSpec,
    steps: &[StepMetrics],
    finals: &std::collections::BTreeMap<String, f64>,
) -> Option<f64> {
    let metric = &spec.objective.metric;
    let dir = spec.objective.direction;
    steps
        .iter()
        .filter_map(|s| s.values.get(metric).copied())
        .filter(|v| v.is_finite())
        .reduce(|a, b| if dir.better(b, a) { b } else { a })
        .or_else(|| finals.get(metric).copied().filter(|v| v.is_finite()))
}

/// Substitute `${trialParameters.NAME}` and `${trialDir}` in a command.
pub fn substitute(command: &[String], params: &Params, trial_dir: &std::path::Path) -> Vec<String> {
    command
        .iter()
        .map(|arg| {
            let mut out = arg.replace("${trialDir}", &trial_dir.display().to_string());
            for (k, v) in params {
                out = out.replace(&format!("${{trialParameters.{k}}}"), &v.to_string());
            }
            out
        })
        .collect()
}

/// The stop reason of a trial that reached the goal (it completes, not prunes).
const GOAL_REACHED: &str = "goal reached";
/// The stop reason when the run is cancelled (the trial goes back to pending).
const CANCELLED: &str = "cancelled";
/// How the stop reason of a trial stopped because the experiment ended begins.
const ENDED: &str = "stopped: the experiment ended";

fn ended_by_goal(winner: u32) -> String {
    format!("{ENDED} (trial {winner} met the goal)")
}

struct Shared {
    exp: ExperimentRecord,
    trials: Vec<TrialRecord>,
    sampler: Box<dyn Sampler>,
    /// Trials being run by a worker: their numbers, each with the signal that stops it.
    claimed: Vec<(u32, StopSignal)>,
    /// Set when the experiment must end: its final state and why.
    stop: Option<(ExperimentState, String)>,
    /// Failed trials (after retries).
    failed: usize,
    /// The trial that met the goal first, once one has.
    goal_trial: Option<u32>,
    /// No more suggestions (grid or grow exhausted).
    exhausted: bool,
    /// When this run of the loop started, and the wall seconds of earlier runs.
    started: Instant,
    wall_base: f64,
}

impl Shared {
    /// Wall seconds over every run of the loop, this one included.
    fn wall_seconds(&self) -> f64 {
        self.wall_base + self.started.elapsed().as_secs_f64()
    }

    /// Why the experiment must end, once its wall-time budget is spent.
    fn wall_budget_spent(&self, spec: &ExperimentSpec) -> Option<String> {
        let max = spec.budget.max_wall_seconds?;
        (self.wall_seconds() >= max).then(|| format!("wall-time budget of {max} s spent"))
    }

    /// `winner` met the goal: every other running trial stops now (between batches),
    /// not at its next epoch's end.
    fn stop_others(&self, winner: u32) {
        for (n, signal) in &self.claimed {
            if *n != winner {
                signal.stop();
            }
        }
    }
}

/// Runs experiments against a store and an executor.
pub struct Tuner<'a> {
    store: &'a dyn Store,
    executor: &'a dyn Executor,
    options: TuneOptions,
}

impl std::fmt::Debug for Tuner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tuner")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a> Tuner<'a> {
    pub fn new(store: &'a dyn Store, executor: &'a dyn Executor, options: TuneOptions) -> Self {
        Self {
            store,
            executor,
            options,
        }
    }

    fn event(
        &self,
        shared: &Shared,
        kind: &str,
        trial: Option<u32>,
        message: String,
        progress: &dyn Fn(&Progress),
    ) {
        let event = Event {
            at: now(),
            kind: kind.into(),
            trial,
            message,
        };
        if let Err(e) = self.store.add_event(&shared.exp.id, &event) {
            tracing::error!("{e}");
        }
        progress(&Progress::Event(event));
    }

    /// Run (or continue) experiment `id` until it meets its goal, spends its
    /// budget, fails, or is cancelled. Returns the experiment as stored.
    pub fn run(
        &self,
        id: &str,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<ExperimentRecord, TuneError> {
        let exp = self
            .store
            .experiment(id)?
            .ok_or_else(|| TuneError::NotFound(id.into()))?;
        if exp.state != ExperimentState::Running {
            return Ok(exp);
        }
        let spec = exp.spec.clone();
        let mut trials = self.store.trials(id)?;
        let failed = trials.iter().filter(|t| t.state == TrialState::Failed).count();
        let mut goal_trial = trials
            .iter()
            .filter(|t| t.state == TrialState::Completed)
            .find(|t| spec.objective.meets_goal(t.value, t.val_images()))
            .map(|t| t.number);
        let resumed = !trials.is_empty();
        for t in trials.iter_mut().filter(|t| t.state == TrialState::Running) {
            // A kill may have landed after this trial's recorded steps met the
            // goal: then it is done. Otherwise it is re-queued, to continue
            // from its checkpoint.
            t.value = objective_value(&spec, &t.steps, &Default::default());
            let met = spec.objective.meets_goal(t.value, t.val_images());
            if met && goal_trial.is_none() {
                t.state = TrialState::Completed;
                goal_trial = Some(t.number);
            } else {
                t.state = TrialState::Pending;
            }
            self.store.upsert_trial(id, t)?;
        }
        let stop = (failed > spec.budget.max_failed_trials && goal_trial.is_none()).then(|| {
            let msg = format!(
                "{failed} trial(s) failed, more than budget.max_failed_trials ({})",
                spec.budget.max_failed_trials
            );
            (ExperimentState::Failed, msg)
        });
        let started = Instant::now();
        let wall_base = exp.wall_seconds;
        let shared = Mutex::new(Shared {
            exp,
            sampler: sampler_for(&spec),
            trials,
            claimed: Vec::new(),
            stop,
            failed,
            started,
            wall_base,
            goal_trial,
            exhausted: false,
        });
        {
            let s = shared.lock().expect("tuner state");
            if resumed {
                let requeued: Vec<String> = s
                    .trials
                    .iter()
                    .filter(|t| t.state == TrialState::Pending)
                    .map(|t| t.number.to_string())
                    .collect();
                let finished = s.trials.iter().filter(|t| t.state.is_finished()).count();
                self.event(
                    &s,
                    "resumed",
                    None,
                    format!(
                        "resumed with {finished} finished trial(s); pending: [{}]",
                        requeued.join(", ")
                    ),
                    progress,
                );
            }
        }
        let pruner = spec.early_stopping.as_ref().map(pruner_for);
        let parallel = spec.budget.parallel_trials.max(1);
        let threads_per_trial = (self.options.threads / parallel).max(1);
        std::thread::scope(|scope| {
            for _ in 0..parallel {
                scope.spawn(|| self.worker(&spec, &shared, pruner.as_deref(), threads_per_trial, progress));
            }
        });
        let mut s = shared.into_inner().expect("tuner state");
        self.finish(&spec, &mut s, progress)?;
        Ok(s.exp)
    }

    fn cancelled(&self) -> bool {
        self.options
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// Claim the next trial to run: a pending one, else a new suggestion.
    fn claim(
        &self,
        spec: &ExperimentSpec,
        s: &mut Shared,
        progress: &dyn Fn(&Progress),
    ) -> Option<(u32, bool)> {
        if s.stop.is_some() || s.goal_trial.is_some() || self.cancelled() {
            return None;
        }
        if let Some(spent) = s.wall_budget_spent(spec) {
            s.stop = Some((ExperimentState::BudgetExhausted, spent));
            return None;
        }
        if s.failed > spec.budget.max_failed_trials {
            return None;
        }
        let pending = s
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Pending && !s.claimed.iter().any(|(n, _)| *n == t.number))
            .map(|t| t.number)
            .min();
        let number = match pending {
            Some(n) => n,
            None => {
                if s.trials.len() >= spec.budget.max_trials || s.exhausted {
                    return None;
                }
                let number = s.trials.len() as u32 + 1;
                let Some(params) = s.sampler.suggest(number, &s.trials) else {
                    // Grow may have nothing to propose only until the running
                    // trials end: exhausted once nothing runs.
                    if s.claimed.is_empty() {
                        s.exhausted = true;
                    }
                    return None;
                };
                let provenance = Provenance {
                    seed: spec.seed,
                    ..self.options.provenance.clone()
                };
                let trial = TrialRecord::new(number, params, provenance);
                if let Err(e) = self.store.upsert_trial(&s.exp.id, &trial) {
                    s.stop = Some((ExperimentState::Failed, e.to_string()));
                    return None;
                }
                s.trials.push(trial);
                number
            }
        };
        let t = s
            .trials
            .iter_mut()
            .find(|t| t.number == number)
            .expect("claimed trial exists");
        t.state = TrialState::Running;
        // A trial that ran before continues from its checkpoint. An attempt
        // is a run after a failure; continuing after a kill or an interrupt
        // is the same attempt (so it does not use up `max_retries`).
        let resume = t.attempts > 0;
        if t.attempts == 0 || t.failure.is_some() {
            t.attempts += 1;
        }
        let attempt = t.attempts;
        let params = mlci_core::describe(&t.params);
        if let Err(e) = self.store.upsert_trial(&s.exp.id, t) {
            s.stop = Some((ExperimentState::Failed, e.to_string()));
            return None;
        }
        s.claimed
            .push((number, StopSignal::new(self.options.cancel.clone())));
        let what = if attempt > 1 {
            format!("attempt {attempt}, ")
        } else {
            String::new()
        };
        self.event(
            s,
            "trial_started",
            Some(number),
            format!("{what}{params}"),
            progress,
        );
        Some((number, resume))
    }

    fn request(
        &self,
        spec: &ExperimentSpec,
        s: &Shared,
        number: u32,
        threads: usize,
        resume: bool,
    ) -> Result<TrialRequest, Failure> {
        let t = s
            .trials
            .iter()
            .find(|t| t.number == number)
            .expect("trial exists");
        let workdir = mlci_core::trial_dir_in(&self.options.root, number);
        std::fs::create_dir_all(&workdir).map_err(|e| {
            Failure::new(
                FailureKind::Crashed,
                format!("cannot create {}: {e}", workdir.display()),
            )
        })?;
        let work = match spec.trial.executor {
            ExecutorKind::Subprocess => {
                let command = spec.trial.command.as_deref().unwrap_or_default();
                TrialWork::Command(substitute(command, &t.params, &workdir))
            }
            ExecutorKind::InProcess | ExecutorKind::Container | ExecutorKind::Swarm => TrialWork::Model(
                apply_params(&spec.base_model(), &t.params)
                    .map_err(|e| Failure::new(FailureKind::BadSpec, e.to_string()))?,
            ),
        };
        Ok(TrialRequest {
            experiment: s.exp.id.clone(),
            trial: number,
            attempt: t.attempts,
            params: t.params.clone(),
            work,
            workdir,
            dataset: self.options.dataset.clone(),
            threads,
            resume,
            timeout_seconds: spec.trial.timeout_seconds,
            stop: s
                .claimed
                .iter()
                .find(|(n, _)| *n == number)
                .map(|(_, signal)| signal.clone())
                .expect("a requested trial is claimed"),
        })
    }

    fn worker(
        &self,
        spec: &ExperimentSpec,
        shared: &Mutex<Shared>,
        pruner: Option<&dyn Pruner>,
        threads: usize,
        progress: &(dyn Fn(&Progress) + Sync),
    ) {
        loop {
            let (number, request) = {
                let mut s = shared.lock().expect("tuner state");
                let Some((number, resume)) = self.claim(spec, &mut s, progress) else {
                    return;
                };
                (number, self.request(spec, &s, number, threads, resume))
            };
            let mut pruned_by: Option<String> = None;
            let result = request.and_then(|request| {
                self.executor.run(&request, &mut |step: &StepMetrics| {
                    let mut s = shared.lock().expect("tuner state");
                    let decision = self.on_step(spec, &mut s, number, step, pruner, progress);
                    if let Some(reason) = decision {
                        pruned_by = Some(reason);
                        Control::Stop
                    } else {
                        Control::Continue
                    }
                })
            });
            let mut s = shared.lock().expect("tuner state");
            s.claimed.retain(|(n, _)| *n != number);
            self.on_done(spec, &mut s, number, result, pruned_by, progress);
        }
    }

    /// Record a step; `Some(reason)` when the trial must stop.
    fn on_step(
        &self,
        spec: &ExperimentSpec,
        s: &mut Shared,
        number: u32,
        step: &StepMetrics,
        pruner: Option<&dyn Pruner>,
        progress: &dyn Fn(&Progress),
    ) -> Option<String> {
        let id = s.exp.id.clone();
        let metric = &spec.objective.metric;
        let t = s
            .trials
            .iter_mut()
            .find(|t| t.number == number)
            .expect("trial exists");
        t.steps.retain(|x| x.step < step.step);
        t.steps.push(step.clone());
        t.value = objective_value(spec, &t.steps, &Default::default());
        if let Err(e) = self
            .store
            .truncate_steps(&id, number, step.step)
            .and_then(|()| self.store.record_step(&id, number, step))
        {
            tracing::error!("{e}");
        }
        progress(&Progress::Step {
            trial: number,
            step: step.clone(),
        });
        if self.cancelled() {
            return Some(CANCELLED.into());
        }
        if let Some(other) = s.goal_trial.filter(|&g| g != number) {
            return Some(ended_by_goal(other));
        }
        // This trial reached the goal: no need to train it further (its best
        // epoch is already checkpointed as its model).
        let (value, images) = s
            .trials
            .iter()
            .find(|t| t.number == number)
            .map_or((None, None), |t| (t.value, t.val_images()));
        if let (Some(goal), Some(v), None) = (spec.objective.goal, value, s.goal_trial) {
            if spec.objective.meets_goal(Some(v), images) {
                s.goal_trial = Some(number);
                let msg = format!(
                    "trial {number} met the goal at step {}: {metric} {v:.4} (goal {goal})",
                    step.step
                );
                self.event(s, "goal_met", Some(number), msg, progress);
                s.stop_others(number);
                return Some(GOAL_REACHED.into());
            }
        }
        // The wall-time budget is spent: the running trials stop now (each keeps its best
        // epoch), not after their remaining epochs.
        if let Some(spent) = s.wall_budget_spent(spec) {
            return Some(format!("{ENDED} ({spent})"));
        }
        let pruner = pruner?;
        let curve = s
            .trials
            .iter()
            .find(|t| t.number == number)
            .map(|t| t.curve(metric))
            .unwrap_or_default();
        let others: Vec<(u32, Vec<(usize, f64)>)> = s
            .trials
            .iter()
            .filter(|t| t.number != number)
            .map(|t| (t.number, t.curve(metric)))
            .collect();
        if pruner.should_prune(number, &curve, &others, spec.objective.direction) {
            Some(format!(
                "pruned at step {} ({metric} {:.4})",
                step.step,
                step.values.get(metric).copied().unwrap_or(f64::NAN)
            ))
        } else {
            None
        }
    }

    fn on_done(
        &self,
        spec: &ExperimentSpec,
        s: &mut Shared,
        number: u32,
        result: Result<mlci_core::TrialOutput, Failure>,
        pruned_by: Option<String>,
        progress: &dyn Fn(&Progress),
    ) {
        let id = s.exp.id.clone();
        let cancelled = self.cancelled();
        let max_retries = spec.budget.max_retries as u32;
        // Stopped by its stop signal (no step callback said why): the experiment ended
        // or was cancelled.
        let pruned_by = match (&result, pruned_by) {
            (Ok(out), None) if out.stopped => Some(if cancelled {
                CANCELLED.to_owned()
            } else {
                s.goal_trial
                    .filter(|&g| g != number)
                    .map_or_else(|| ENDED.to_owned(), ended_by_goal)
            }),
            (_, reason) => reason,
        };
        let t = s
            .trials
            .iter_mut()
            .find(|t| t.number == number)
            .expect("trial exists");
        let interrupted = pruned_by.as_deref() == Some(CANCELLED);
        let (kind, message) = match result {
            Ok(out) if out.stopped && interrupted => {
                t.seconds += out.seconds;
                t.state = TrialState::Pending;
                (
                    "trial_interrupted",
                    "cancelled; will resume from its checkpoint".to_owned(),
                )
            }
            Ok(out) => {
                t.seconds += out.seconds;
                t.param_count = out.param_count.or(t.param_count);
                if out.image_digest.is_some() {
                    t.provenance.image_digest = out.image_digest.clone();
                }
                t.artifacts = Some(
                    mlci_core::trial_dir_in(&self.options.root, number)
                        .display()
                        .to_string(),
                );
                if let Some(first) = out.steps.first().map(|st| st.step) {
                    // The executor's history, after what the store has from
                    // before a resume. Usually on_step recorded all of it
                    // already; rewrite only when it did not (a kill between a
                    // checkpoint and its report), so store and memory agree.
                    let before = t.steps.clone();
                    t.steps.retain(|st| st.step < first);
                    t.steps.extend(out.steps.iter().cloned());
                    let write = if t.steps == before {
                        Ok(())
                    } else {
                        self.store.truncate_steps(&id, number, 0).and_then(|()| {
                            t.steps
                                .iter()
                                .try_for_each(|st| self.store.record_step(&id, number, st))
                        })
                    };
                    if let Err(e) = write {
                        tracing::error!("{e}");
                    }
                }
                t.value = objective_value(spec, &t.steps, &out.final_values);
                match (t.value, out.stopped, pruned_by) {
                    (value, true, Some(reason)) if value.is_none() || reason != GOAL_REACHED => {
                        // Stopped before its end: by the pruner, or because the experiment
                        // ended (perhaps before it reported the objective: not a failure of
                        // its own).
                        let (state, kind) = if reason.starts_with(ENDED) {
                            (TrialState::Stopped, "trial_stopped")
                        } else {
                            (TrialState::Pruned, "trial_pruned")
                        };
                        t.state = state;
                        let metric = &spec.objective.metric;
                        let best = value
                            .map_or_else(|| format!("no {metric} yet"), |v| format!("best {metric} {v:.4}"));
                        (kind, format!("{reason}; {best}"))
                    }
                    (None, _, _) => {
                        t.state = TrialState::Failed;
                        let f = Failure::new(
                            FailureKind::NoMetrics,
                            format!("the trial reported no `{}`", spec.objective.metric),
                        );
                        let msg = f.to_string();
                        t.failure = Some(f);
                        s.failed += 1;
                        ("trial_failed", msg)
                    }
                    (Some(v), _, _) => {
                        t.state = TrialState::Completed;
                        ("trial_completed", format!("{} {v:.4}", spec.objective.metric))
                    }
                }
            }
            Err(failure) => {
                let retry = failure.kind.retryable() && t.attempts <= max_retries && !cancelled;
                let msg = failure.to_string();
                t.failure = Some(failure);
                if retry {
                    t.state = TrialState::Pending;
                    (
                        "trial_retried",
                        format!(
                            "{msg}; retrying (attempt {} of {})",
                            t.attempts + 1,
                            max_retries + 1
                        ),
                    )
                } else if cancelled {
                    t.state = TrialState::Pending;
                    ("trial_interrupted", msg)
                } else {
                    t.state = TrialState::Failed;
                    s.failed += 1;
                    ("trial_failed", msg)
                }
            }
        };
        if matches!(
            t.state,
            TrialState::Completed | TrialState::Pruned | TrialState::Stopped
        ) {
            t.failure = None;
        }
        let record = t.clone();
        if let Err(e) = self.store.upsert_trial(&id, &record) {
            s.stop = Some((ExperimentState::Failed, e.to_string()));
        }
        if s.goal_trial == Some(number) && record.state != TrialState::Completed {
            // It met the goal at a step but did not end well (e.g. crashed
            // writing its outputs): the goal is not met yet.
            s.goal_trial = None;
        }
        // Keep the wall time in the store, so a kill does not reset the budget.
        s.exp.wall_seconds = s.wall_seconds();
        s.exp.updated_at = now();
        if let Err(e) = self.store.update_experiment(&s.exp) {
            tracing::error!("{e}");
        }
        self.event(s, kind, Some(number), message, progress);
        if record.state == TrialState::Completed && s.goal_trial.is_none() {
            if let (Some(goal), Some(v)) = (spec.objective.goal, record.value) {
                if spec.objective.meets_goal(Some(v), record.val_images()) {
                    s.goal_trial = Some(number);
                    let msg = format!(
                        "trial {number} met the goal: {} {v:.4} (goal {goal})",
                        spec.objective.metric
                    );
                    self.event(s, "goal_met", Some(number), msg, progress);
                    s.stop_others(number);
                }
            }
        }
        if s.failed > spec.budget.max_failed_trials && s.stop.is_none() && s.goal_trial.is_none() {
            let msg = format!(
                "{} trial(s) failed, more than budget.max_failed_trials ({})",
                s.failed, spec.budget.max_failed_trials
            );
            s.stop = Some((ExperimentState::Failed, msg));
        }
    }
}
