//! Experiments, read-only (`/api/v1/experiments...`): what the dashboard draws while a
//! tuning run goes. The records come from the optional experiments source
//! ([`crate::Server::experiments`]); without one these routes answer 503.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use mlci_core::{
    Direction, Event, ExperimentRecord, ExperimentState, ExperimentSummary, StepMetrics, Store, StoreError,
    TrialRecord,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// The learning curves' metric when the objective's is in no step (model trials report it).
const DEFAULT_CURVE_METRIC: &str = "val_accuracy";
/// Finished experiments' summaries kept at most (the list route's largest `limit`).
const MAX_CACHED: usize = 1000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/experiments", get(list_experiments))
        .route("/api/v1/experiments/{id}", get(get_experiment))
}

/// Whether `id` looks like an experiment id (`name-xxxxxx`: a slug and a suffix).
pub(crate) fn valid_experiment_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
}

fn direction_str(direction: Direction) -> &'static str {
    match direction {
        Direction::Maximize => "maximize",
        Direction::Minimize => "minimize",
    }
}

fn finite(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

/// The summary of an experiment, as listed. `best_value` and `goal_met` are the
/// [`ExperimentSummary`]'s (the chosen trial's, as the reports show them);
/// `best_trial` is the one the tuner stored (`null` until it ends).
fn summary_json(exp: &ExperimentRecord, summary: &ExperimentSummary<'_>) -> Value {
    let objective = &exp.spec.objective;
    json!({
        "id": exp.id,
        "name": exp.spec.name,
        "state": exp.state.as_str(),
        "created_at": exp.created_at,
        "updated_at": exp.updated_at,
        "message": exp.message,
        "objective": {
            "metric": objective.metric,
            "direction": direction_str(objective.direction),
            "goal": summary.goal,
        },
        "best_trial": exp.best_trial,
        "best_value": summary.best_value,
        "goal_met": summary.goal_met,
        "trial_count": summary.trials.len(),
        "trials_completed": summary.completed,
        "trials_pruned": summary.pruned,
        "trials_failed": summary.failed,
        "trials_running": summary.running,
        "max_trials": exp.spec.budget.max_trials,
        "wall_seconds": exp.wall_seconds,
    })
}

fn step_json(step: &StepMetrics) -> Value {
    json!({"step": step.step, "values": step.values, "seconds": step.seconds})
}

fn trial_json(trial: &TrialRecord) -> Value {
    json!({
        "number": trial.number,
        "state": trial.state.as_str(),
        "params": trial.params,
        "value": finite(trial.value),
        "attempts": trial.attempts,
        "seconds": trial.seconds,
        "param_count": trial.param_count,
        "failure": trial.failure.as_ref().map(|f| json!({"kind": f.kind.as_str(), "message": f.message})),
        "steps": trial.steps.iter().map(step_json).collect::<Vec<_>>(),
    })
}

fn event_json(event: &Event) -> Value {
    json!({"at": event.at, "kind": event.kind, "trial": event.trial, "message": event.message})
}

/// An experiment with its trials (each with its steps), best-so-far and events.
fn detail_json(exp: &ExperimentRecord, trials: &[TrialRecord], events: &[Event]) -> Value {
    let metric = &exp.spec.objective.metric;
    let has_objective = trials
        .iter()
        .any(|t| t.steps.iter().any(|s| s.values.contains_key(metric)));
    let summary = ExperimentSummary::new(exp, trials);
    let mut body = summary_json(exp, &summary);
    body["curve_metric"] = json!(if has_objective {
        metric
    } else {
        DEFAULT_CURVE_METRIC
    });
    body["algorithm"] = serde_json::to_value(exp.spec.algorithm.name).unwrap_or(Value::Null);
    body["trials"] = trials.iter().map(trial_json).collect();
    body["best_so_far"] = summary
        .best_so_far
        .iter()
        .map(|(trial, value)| json!({"trial": trial, "value": value}))
        .collect();
    body["events"] = events.iter().map(event_json).collect();
    body
}

/// Summaries of finished experiments by id, each with the `updated_at` it was made at: a
/// finished experiment's trials no longer change (a resumed one is `running` again, or
/// updated, and is read afresh).
#[derive(Debug, Default)]
pub(crate) struct SummaryCache(Mutex<HashMap<String, (f64, Value)>>);

impl SummaryCache {
    /// The summaries of `experiments` (newest first), reading trials only where needed.
    fn summaries(
        &self,
        store: &dyn Store,
        experiments: &[ExperimentRecord],
    ) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::with_capacity(experiments.len());
        let mut fresh = HashMap::new();
        for exp in experiments {
            let finished = exp.state != ExperimentState::Running;
            let cached = finished
                .then(|| {
                    let cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                    cache
                        .get(&exp.id)
                        .filter(|(at, v)| {
                            at.to_bits() == exp.updated_at.to_bits() && v["state"] == exp.state.as_str()
                        })
                        .map(|(_, v)| v.clone())
                })
                .flatten();
            let summary = match cached {
                Some(v) => v,
                None => summary_json(exp, &ExperimentSummary::new(exp, &store.trials(&exp.id)?)),
            };
            if finished {
                fresh.insert(exp.id.clone(), (exp.updated_at, summary.clone()));
            }
            out.push(summary);
        }
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for exp in experiments.iter().filter(|e| e.state == ExperimentState::Running) {
            cache.remove(&exp.id);
        }
        if cache.len() + fresh.len() > MAX_CACHED {
            cache.clear();
        }
        cache.extend(fresh);
        Ok(out)
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_experiments(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let cache = Arc::clone(&state.summaries);
    let list = state
        .experiments_db(move |s| {
            let mut experiments = s.experiments()?;
            experiments.truncate(limit);
            cache.summaries(s, &experiments)
        })
        .await?;
    Ok(Json(Value::Array(list)))
}

async fn get_experiment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !valid_experiment_id(&id) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: "not an experiment id (letters, digits, `-`, `_`, `.`; at most 128)".into(),
            field: Some("id".into()),
            retry_after: None,
        });
    }
    let shown = id.clone();
    let body = state
        .experiments_db(move |s| {
            let Some(exp) = s.experiment(&id)? else {
                return Ok(None);
            };
            let trials = s.trials(&id)?;
            let events = s.events(&id)?;
            Ok(Some(detail_json(&exp, &trials, &events)))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no experiment {shown}")))?;
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_ids_are_slugs() {
        for ok in ["cats-dogs-3f9a2c", "a", "exp_1.2-x"] {
            assert!(valid_experiment_id(ok), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in ["", ".", "..", "../x", "a/b", "a b", "é", "a\0", long.as_str()] {
            assert!(!valid_experiment_id(bad), "{bad:?}");
        }
    }
}
