//! What every report says, computed once from the records: counts, the best
//! trial, best-so-far, the order of the trial table.

use std::cmp::Ordering;

use mlci_core::{Direction, ExperimentRecord, TrialRecord, TrialState};

/// The facts of an experiment the reports share.
pub(crate) struct Summary<'a> {
    pub exp: &'a ExperimentRecord,
    pub metric: &'a str,
    pub direction: Direction,
    pub goal: Option<f64>,
    /// By trial number.
    pub trials: Vec<&'a TrialRecord>,
    pub completed: usize,
    pub pruned: usize,
    pub failed: usize,
    /// Pending or running.
    pub unfinished: usize,
    /// The chosen trial: the experiment's `best_trial`, else the best
    /// completed value.
    pub best: Option<&'a TrialRecord>,
}

impl<'a> Summary<'a> {
    pub fn new(exp: &'a ExperimentRecord, trials: &'a [TrialRecord]) -> Self {
        let objective = &exp.spec.objective;
        let mut sorted: Vec<&TrialRecord> = trials.iter().collect();
        sorted.sort_by_key(|t| t.number);
        let count = |s: TrialState| sorted.iter().filter(|t| t.state == s).count();
        let (completed, pruned, failed) = (
            count(TrialState::Completed),
            count(TrialState::Pruned),
            count(TrialState::Failed),
        );
        let mut summary = Summary {
            exp,
            metric: &objective.metric,
            direction: objective.direction,
            goal: objective.goal.filter(|g| g.is_finite()),
            unfinished: sorted.len() - completed - pruned - failed,
            trials: sorted,
            completed,
            pruned,
            failed,
            best: None,
        };
        summary.best = exp
            .best_trial
            .and_then(|n| summary.trials.iter().copied().find(|t| t.number == n))
            .or_else(|| {
                summary
                    .trials
                    .iter()
                    .copied()
                    .filter(|t| t.state == TrialState::Completed && finite(t.value).is_some())
                    .min_by(|a, b| summary.cmp_values(a.value, b.value))
            });
        summary
    }

    pub fn finished(&self) -> usize {
        self.completed + self.pruned + self.failed
    }

    pub fn best_value(&self) -> Option<f64> {
        self.best.and_then(|t| finite(t.value))
    }

    /// `Less` when `a` is the better value; missing or non-finite values last.
    pub fn cmp_values(&self, a: Option<f64>, b: Option<f64>) -> Ordering {
        match (finite(a), finite(b)) {
            (Some(a), Some(b)) => match self.direction {
                Direction::Maximize => b.total_cmp(&a),
                Direction::Minimize => a.total_cmp(&b),
            },
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }

    pub fn meets_goal(&self, value: Option<f64>) -> bool {
        match (finite(value), self.goal) {
            (Some(v), Some(g)) => self.direction.meets(v, g),
            _ => false,
        }
    }

    /// `>=` or `<=`: how a value must compare with the goal.
    pub fn goal_op(&self) -> &'static str {
        match self.direction {
            Direction::Maximize => "≥",
            Direction::Minimize => "≤",
        }
    }

    /// ASCII `>=` / `<=`, for plain-text formats.
    pub fn goal_op_ascii(&self) -> &'static str {
        match self.direction {
            Direction::Maximize => ">=",
            Direction::Minimize => "<=",
        }
    }

    /// The best completed value after each trial, by trial number (trials
    /// before the first completed one are absent). Pruned trials do not
    /// count: their values come from partial curves.
    pub fn best_so_far(&self) -> Vec<(u32, f64)> {
        let mut best: Option<f64> = None;
        let mut out = Vec::new();
        for t in &self.trials {
            if t.state == TrialState::Completed {
                if let Some(v) = finite(t.value) {
                    if best.is_none_or(|b| self.direction.better(v, b)) {
                        best = Some(v);
                    }
                }
            }
            if let Some(b) = best {
                out.push((t.number, b));
            }
        }
        out
    }

    /// The first trial (by number) whose completed value met the goal.
    pub fn first_to_goal(&self) -> Option<u32> {
        self.trials
            .iter()
            .find(|t| t.state == TrialState::Completed && self.meets_goal(t.value))
            .map(|t| t.number)
    }

    /// Trials in the order of the trial table: the chosen best first, then
    /// completed by value, pruned by value, unfinished, and failed last.
    pub fn ranked(&self) -> Vec<&'a TrialRecord> {
        let group = |t: &TrialRecord| {
            if self.best.is_some_and(|b| b.number == t.number) {
                return 0;
            }
            match t.state {
                TrialState::Completed => 1,
                TrialState::Pruned => 2,
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
    pub fn param_keys(&self) -> Vec<&'a str> {
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
    pub fn loss_metric(&self) -> Option<&'static str> {
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
