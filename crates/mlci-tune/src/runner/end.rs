//! How an experiment ends: the chosen trial, the final state and its message.

use mlci_core::{ExperimentSpec, ExperimentState, ExperimentSummary, TrialRecord};

use super::{now, Progress, Shared, TuneError, Tuner};

impl Tuner<'_> {
    /// Record the experiment's end (or, when cancelled, its interruption):
    /// the chosen trial, the state and why, and the closing event.
    pub(super) fn finish(
        &self,
        spec: &ExperimentSpec,
        s: &mut Shared,
        progress: &dyn Fn(&Progress),
    ) -> Result<(), TuneError> {
        s.exp.wall_seconds = s.wall_seconds();
        s.exp.updated_at = now();
        s.exp.best_trial = best_trial(spec, &s.trials);
        let best = ExperimentSummary::new(&s.exp, &s.trials).best_value;
        let metric = &spec.objective.metric;
        let best_text = best
            .map(|v| format!("best {metric} {v:.4}"))
            .unwrap_or_else(|| "no result".into());
        if self.cancelled() {
            s.exp.message = Some("interrupted; resume to continue".into());
            self.store.update_experiment(&s.exp)?;
            return Ok(());
        }
        let (state, message) = if let Some(n) = s.goal_trial {
            let goal = spec.objective.goal.unwrap_or_default();
            (
                ExperimentState::Succeeded,
                format!("goal {goal} met by trial {n}; {best_text}"),
            )
        } else if let Some((state, why)) = s.stop.clone() {
            (state, format!("{why}; {best_text}"))
        } else if s.trials.iter().any(|t| !t.state.is_finished()) {
            // Workers ended with trials unfinished (e.g. the failed-trial
            // budget stopped scheduling): the experiment failed.
            (
                ExperimentState::Failed,
                format!("stopped with unfinished trials; {best_text}"),
            )
        } else {
            let why = if s.exhausted && s.trials.len() < spec.budget.max_trials {
                "search space exhausted"
            } else {
                "trial budget spent"
            };
            let goal = spec
                .objective
                .goal
                .map(|g| format!(" without reaching the goal {g}"))
                .unwrap_or_else(|| " (no goal: the optimisation is done)".into());
            (
                ExperimentState::BudgetExhausted,
                format!("{why}{goal}; {best_text}"),
            )
        };
        s.exp.state = state;
        s.exp.message = Some(message.clone());
        self.store.update_experiment(&s.exp)?;
        let kind = match state {
            ExperimentState::Succeeded => "experiment_succeeded",
            ExperimentState::Failed => "experiment_failed",
            _ => "budget_exhausted",
        };
        self.event(s, kind, s.exp.best_trial, message, progress);
        Ok(())
    }
}

/// The trial to report: the best value, or with `prefer`, the cheapest of
/// those meeting the goal ([`ExperimentSummary::choose`]).
pub fn best_trial(spec: &ExperimentSpec, trials: &[TrialRecord]) -> Option<u32> {
    ExperimentSummary::choose(&spec.objective, trials)
}
