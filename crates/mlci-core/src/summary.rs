//! The summary of an experiment: the chosen trial and its value, whether the
//! goal was met, the best-so-far curve and the trial counts, computed once
//! here for the report, the mail, the dashboard, the tuner's end and the CLI.

use std::cmp::Ordering;

use crate::{Direction, ExperimentRecord, Objective, Prefer, TrialRecord, TrialState};

/// What every view of an experiment says about it, from its record and its
/// trials alone.
///
/// The chosen trial ([`best`](Self::best)) is the experiment's stored
/// `best_trial` (what the tuner chose with [`ExperimentSummary::choose`] when
/// it last ended) when that names one of the trials, else, while none is
/// stored, the completed trial with the best finite value.
#[derive(Debug, Clone)]
pub struct ExperimentSummary<'a> {
    pub exp: &'a ExperimentRecord,
    /// The objective's metric.
    pub metric: &'a str,
    pub direction: Direction,
    /// The objective's goal, when it has a finite one.
    pub goal: Option<f64>,
    /// How the tuner chooses among the trials meeting the goal.
    pub prefer: Prefer,
    /// The validation images the trials' accuracies were measured on, when they said.
    pub val_images: Option<u64>,
    /// Every trial, by number.
    pub trials: Vec<&'a TrialRecord>,
    pub completed: usize,
    pub pruned: usize,
    pub failed: usize,
    /// Stopped because the experiment ended while they ran.
    pub stopped: usize,
    pub running: usize,
    pub pending: usize,
    /// The chosen trial.
    pub best: Option<&'a TrialRecord>,
    /// The chosen trial's value, when it is finite.
    pub best_value: Option<f64>,
    /// Whether [`best_value`](Self::best_value) meets the goal (never without one).
    pub goal_met: bool,
    /// The first trial (by number) whose completed value meets the goal.
    pub first_to_goal: Option<u32>,
    /// The best completed value after each trial, by trial number (trials
    /// before the first completed one are absent). Pruned trials do not
    /// count: their values come from partial curves.
    pub best_so_far: Vec<(u32, f64)>,
}

impl<'a> ExperimentSummary<'a> {
    /// Summarise `exp` from its `trials` (in any order).
    pub fn new(exp: &'a ExperimentRecord, trials: &'a [TrialRecord]) -> Self {
        let objective = &exp.spec.objective;
        let mut sorted: Vec<&TrialRecord> = trials.iter().collect();
        sorted.sort_by_key(|t| t.number);
        let count = |s: TrialState| sorted.iter().filter(|t| t.state == s).count();
        let mut summary = Self {
            exp,
            metric: &objective.metric,
            direction: objective.direction,
            goal: finite(objective.goal),
            prefer: objective.prefer,
            val_images: sorted.iter().find_map(|t| t.val_images()),
            completed: count(TrialState::Completed),
            pruned: count(TrialState::Pruned),
            failed: count(TrialState::Failed),
            stopped: count(TrialState::Stopped),
            running: count(TrialState::Running),
            pending: count(TrialState::Pending),
            trials: sorted,
            best: None,
            best_value: None,
            goal_met: false,
            first_to_goal: None,
            best_so_far: Vec::new(),
        };
        let completed = || {
            summary
                .trials
                .iter()
                .copied()
                .filter(|t| t.state == TrialState::Completed)
        };
        let best = exp
            .best_trial
            .and_then(|n| summary.trials.iter().copied().find(|t| t.number == n))
            .or_else(|| {
                completed()
                    .filter(|t| finite(t.value).is_some())
                    .min_by(|a, b| summary.cmp_values(a.value, b.value))
            });
        let first_to_goal = completed()
            .find(|t| summary.meets_goal(t.value))
            .map(|t| t.number);
        let best_so_far = best_so_far(summary.direction, &summary.trials);
        summary.best = best;
        summary.best_value = best.and_then(|t| finite(t.value));
        summary.goal_met = summary.meets_goal(summary.best_value);
        summary.first_to_goal = first_to_goal;
        summary.best_so_far = best_so_far;
        summary
    }

    /// The chosen trial's number.
    pub fn best_trial(&self) -> Option<u32> {
        self.best.map(|t| t.number)
    }

    /// Trials completed, pruned, failed or stopped.
    pub fn finished(&self) -> usize {
        self.completed + self.pruned + self.failed + self.stopped
    }

    /// Trials pending or running.
    pub fn unfinished(&self) -> usize {
        self.running + self.pending
    }

    /// Whether `value` is finite and meets the goal (never without one), as the tuner
    /// judges it ([`Objective::meets_goal`]: with a confidence, the interval's lower bound
    /// over the validation images).
    pub fn meets_goal(&self, value: Option<f64>) -> bool {
        self.exp.spec.objective.meets_goal(value, self.val_images)
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

    /// The trial the tuner chooses when an experiment ends: the best value
    /// over completed and pruned trials or, with a `prefer` rule, the
    /// cheapest of the completed trials meeting the goal (fewest parameters,
    /// ties to the lower number; or fewest seconds, ties to the earlier
    /// trial). `None` while no trial has a value.
    pub fn choose(objective: &Objective, trials: &[TrialRecord]) -> Option<u32> {
        let dir = objective.direction;
        let scored: Vec<&TrialRecord> = trials
            .iter()
            .filter(|t| {
                matches!(
                    t.state,
                    TrialState::Completed | TrialState::Pruned | TrialState::Stopped
                ) && t.value.is_some()
            })
            .collect();
        let value = |t: &TrialRecord| t.value.unwrap_or(f64::NAN);
        let best = scored
            .iter()
            .copied()
            .reduce(|a, b| if dir.better(value(b), value(a)) { b } else { a })?;
        let meeting = scored
            .iter()
            .copied()
            .filter(|t| t.state == TrialState::Completed && objective.meets_goal(t.value, t.val_images()));
        let cheapest = match objective.prefer {
            Prefer::Best => None,
            Prefer::FewestParams => meeting.min_by_key(|t| (t.param_count.unwrap_or(usize::MAX), t.number)),
            Prefer::FewestSeconds => meeting.min_by(|a, b| a.seconds.total_cmp(&b.seconds)),
        };
        Some(cheapest.unwrap_or(best).number)
    }
}

/// The best completed value after each of `trials` (sorted by number).
fn best_so_far(direction: Direction, trials: &[&TrialRecord]) -> Vec<(u32, f64)> {
    let mut best: Option<f64> = None;
    let mut out = Vec::new();
    for t in trials {
        if t.state == TrialState::Completed {
            if let Some(v) = finite(t.value) {
                if best.is_none_or(|b| direction.better(v, b)) {
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

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExperimentSpec, ExperimentState, Params, Provenance};

    fn experiment(objective: &str, best_trial: Option<u32>) -> ExperimentRecord {
        let spec = ExperimentSpec::from_yaml(&format!(
            "name: s\nobjective: {objective}\nsearch_space: {{ dropout: {{ type: float, min: 0.1, max: 0.5 }} }}\n"
        ))
        .expect("the test spec is valid");
        ExperimentRecord {
            id: "s-000001".into(),
            spec,
            state: ExperimentState::Running,
            created_at: 0.0,
            updated_at: 0.0,
            best_trial,
            message: None,
            wall_seconds: 0.0,
            evaluation: None,
        }
    }

    /// A trial: number, state, value, parameters, seconds.
    fn trial(number: u32, state: TrialState, value: Option<f64>, params: usize, seconds: f64) -> TrialRecord {
        let mut t = TrialRecord::new(number, Params::new(), Provenance::default());
        t.state = state;
        t.value = value;
        t.param_count = Some(params);
        t.seconds = seconds;
        t
    }

    fn trials() -> Vec<TrialRecord> {
        use TrialState::*;
        vec![
            trial(3, Completed, Some(0.955), 3000, 3.0),
            trial(1, Pruned, Some(0.99), 10, 1.0),
            trial(2, Completed, Some(0.96), 1000, 20.0),
            trial(4, Completed, Some(0.97), 5000, 9.0),
            trial(5, Failed, None, 10, 1.0),
            trial(6, Running, Some(0.999), 10, 1.0),
            trial(7, Pending, None, 10, 0.0),
        ]
    }

    #[test]
    fn maximize_chooses_the_best_completed_value_while_none_is_stored() {
        let exp = experiment("{ metric: val_accuracy, goal: 0.958 }", None);
        let trials = trials();
        let s = ExperimentSummary::new(&exp, &trials);
        assert_eq!(
            s.trials.iter().map(|t| t.number).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(
            (s.completed, s.pruned, s.failed, s.running, s.pending),
            (3, 1, 1, 1, 1)
        );
        assert_eq!((s.finished(), s.unfinished()), (5, 2));
        assert_eq!(s.best_trial(), Some(4), "pruned and running values do not count");
        assert_eq!(s.best_value, Some(0.97));
        assert!(s.goal_met);
        assert_eq!(s.first_to_goal, Some(2));
        assert_eq!(
            s.best_so_far,
            [(2, 0.96), (3, 0.96), (4, 0.97), (5, 0.97), (6, 0.97), (7, 0.97)]
        );
    }

    #[test]
    fn minimize_turns_every_comparison_around() {
        let exp = experiment("{ metric: val_loss, direction: minimize, goal: 0.956 }", None);
        let trials = trials();
        let s = ExperimentSummary::new(&exp, &trials);
        assert_eq!((s.best_trial(), s.best_value), (Some(3), Some(0.955)));
        assert!(s.goal_met);
        assert_eq!(s.first_to_goal, Some(3));
        assert_eq!(
            s.best_so_far,
            [
                (2, 0.96),
                (3, 0.955),
                (4, 0.955),
                (5, 0.955),
                (6, 0.955),
                (7, 0.955)
            ]
        );
        assert_eq!(s.cmp_values(Some(0.1), Some(0.2)), Ordering::Less);
        assert_eq!(s.cmp_values(Some(f64::NAN), Some(0.2)), Ordering::Greater);
        assert_eq!(
            ExperimentSummary::choose(&exp.spec.objective, &trials),
            Some(3),
            "the lowest over completed and pruned trials"
        );
    }

    #[test]
    fn the_stored_choice_wins_and_prefer_picks_the_cheapest_meeting_the_goal() {
        let mut exp = experiment("{ metric: val_accuracy, goal: 0.95 }", None);
        let mut trials = trials();
        trials.retain(|t| t.number <= 4);
        trials[1].state = TrialState::Completed;
        trials[1].value = Some(0.5);
        let choose = |exp: &ExperimentRecord| ExperimentSummary::choose(&exp.spec.objective, &trials);
        assert_eq!(choose(&exp), Some(4), "prefer: best");
        exp.spec.objective.prefer = Prefer::FewestParams;
        assert_eq!(choose(&exp), Some(2));
        exp.spec.objective.prefer = Prefer::FewestSeconds;
        assert_eq!(choose(&exp), Some(3));
        exp.spec.objective.goal = Some(0.99);
        assert_eq!(choose(&exp), Some(4), "nobody meets the goal: the best value");

        exp.spec.objective.goal = Some(0.95);
        exp.best_trial = Some(3);
        let s = ExperimentSummary::new(&exp, &trials);
        assert_eq!(s.prefer, Prefer::FewestSeconds);
        assert_eq!((s.best_trial(), s.best_value), (Some(3), Some(0.955)));
        assert!(s.goal_met);
        assert_eq!(s.first_to_goal, Some(2), "the first, not the chosen");

        exp.best_trial = Some(99);
        let s = ExperimentSummary::new(&exp, &trials);
        assert_eq!(
            s.best_trial(),
            Some(4),
            "a stored trial that is not there is ignored"
        );
    }

    #[test]
    fn a_goal_not_met_and_no_goal() {
        let exp = experiment("{ metric: val_accuracy, goal: 0.98 }", None);
        let trials = trials();
        let s = ExperimentSummary::new(&exp, &trials);
        assert_eq!(s.best_value, Some(0.97));
        assert!(!s.goal_met);
        assert_eq!(s.first_to_goal, None);
        assert!(
            !s.meets_goal(Some(f64::INFINITY)),
            "non-finite values meet nothing"
        );

        let exp = experiment("{ metric: val_accuracy, goal: null }", None);
        let s = ExperimentSummary::new(&exp, &trials);
        assert_eq!((s.goal, s.goal_met, s.first_to_goal), (None, false, None));
        assert_eq!(s.best_value, Some(0.97));
    }

    #[test]
    fn no_finished_trial_means_no_best() {
        let exp = experiment("{ metric: val_accuracy, goal: 0.8 }", None);
        let s = ExperimentSummary::new(&exp, &[]);
        assert_eq!((s.best_trial(), s.best_value, s.goal_met), (None, None, false));
        assert!(s.best_so_far.is_empty());
        assert_eq!(ExperimentSummary::choose(&exp.spec.objective, &[]), None);

        let trials = [
            trial(1, TrialState::Running, Some(0.9), 1, 1.0),
            trial(2, TrialState::Pending, None, 1, 0.0),
            trial(3, TrialState::Failed, None, 1, 1.0),
        ];
        let s = ExperimentSummary::new(&exp, &trials);
        assert_eq!((s.best_trial(), s.best_value, s.goal_met), (None, None, false));
        assert!(s.best_so_far.is_empty());
        assert_eq!(s.finished(), 1);
        assert_eq!(ExperimentSummary::choose(&exp.spec.objective, &trials), None);
    }
}
