//! What every report says: [`ExperimentSummary`] (counts, the chosen trial,
//! best-so-far, computed in `mlci-core` for every view of an experiment)
//! and what only the reports need (the order of the trial table, goal
//! operators, parameter columns).

use std::cmp::Ordering;
use std::ops::Deref;

use mlci_core::{Direction, ExperimentRecord, ExperimentSummary, TrialRecord, TrialState};

/// The facts of an experiment the reports share: the core summary, and the
/// reports' own helpers over it.
pub(crate) struct Summary<'a>(ExperimentSummary<'a>);

impl<'a> Deref for Summary<'a> {
    type Target = ExperimentSummary<'a>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> Summary<'a> {
    pub(crate) fn new(exp: &'a ExperimentRecord, trials: &'a [TrialRecord]) -> Self {
        Self(ExperimentSummary::new(exp, trials))
    }

    /// `>=` or `<=`: how a value must compare with the goal.
    pub(crate) fn goal_op(&self) -> &'static str {
        match self.direction {
            Direction::Maximize => "≥",
            Direction::Minimize => "≤",
        }
    }

    /// ASCII `>=` / `<=`, for plain-text formats.
    pub(crate) fn goal_op_ascii(&self) -> &'static str {
        match self.direction {
            Direction::Maximize => ">=",
            Direction::Minimize => "<=",
        }
    }

    /// Trials in the order of the trial table: the chosen best first, then
    /// completed by value, pruned by value, unfinished, and failed last.
    pub(crate) fn ranked(&self) -> Vec<&'a TrialRecord> {
        let group = |t: &TrialRecord| {
            if self.best.is_some_and(|b| b.number == t.number) {
                return 0;
            }
            match t.state {
                TrialState::Completed => 1,
                TrialState::Pruned | TrialState::Stopped => 2,
                TrialState::Running | TrialState::Pending => 3,
                TrialState::Failed => 4,
            }
        };
        let mut out = self.trials.clone();
        out.sort_by(|a, b| {
            let (ga, gb) = (group(a), group(b));
            let by_value = if matches!(ga, 1 | 2) {
                self.cmp_values(a.value, b.value)
            } else {
                Ordering::Equal
            };
            ga.cmp(&gb).then(by_value).then(a.number.cmp(&b.number))
        });
        out
    }

    /// Parameter keys over all trials, sorted.
    pub(crate) fn param_keys(&self) -> Vec<&'a str> {
        let mut keys: Vec<&str> = self
            .trials
            .iter()
            .flat_map(|t| t.params.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The loss curve to show next to the objective: `val_loss`, else
    /// `loss`, whichever some trial reports and is not the objective.
    pub(crate) fn loss_metric(&self) -> Option<&'static str> {
        ["val_loss", "loss"].into_iter().find(|m| {
            *m != self.metric
                && self
                    .trials
                    .iter()
                    .any(|t| t.steps.iter().any(|s| s.values.contains_key(*m)))
        })
    }
}

pub(crate) fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}
