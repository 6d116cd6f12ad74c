//! Pruners: stop trials that are unlikely to end up good, while they train.
//!
//! Pure decisions over learning curves (objective value by 1-based step):
//! no state, no clock, so the same curves always give the same answer.

use mlci_core::{Direction, PrunerSpec};

/// Decides whether a running trial should stop.
pub trait Pruner: Send + Sync {
    /// Should `trial` stop now, after its latest step? `curve` is its objective values by step so far;
    /// `others` the curves of every other trial (finished, pruned or running).
    fn should_prune(
        &self,
        trial: u32,
        curve: &[(usize, f64)],
        others: &[(u32, Vec<(usize, f64)>)],
        direction: Direction,
    ) -> bool;
}

/// The pruner of an `early_stopping` spec.
pub fn pruner_for(spec: &PrunerSpec) -> Box<dyn Pruner> {
    match *spec {
        PrunerSpec::Median {
            warmup_epochs,
            min_trials,
        } => Box::new(MedianPruner {
            warmup_epochs,
            min_trials,
        }),
        PrunerSpec::Asha {
            min_epochs,
            reduction_factor,
        } => Box::new(AshaPruner {
            min_epochs,
            reduction_factor,
        }),
    }
}

/// The best of the values up to and including `step` (NaN ignored).
fn best_until(curve: &[(usize, f64)], step: usize, direction: Direction) -> Option<f64> {
    curve
        .iter()
        .filter(|(s, v)| *s <= step && !v.is_nan())
        .map(|(_, v)| *v)
        .reduce(|a, b| if direction.better(b, a) { b } else { a })
}

/// A median stopping rule over best-so-far values: once the trial is past
/// `warmup_epochs` steps and at least `min_trials` other trials reported the
/// same step, stop it if its best value so far is worse than the median of
/// those trials' best values up to that step.
///
/// Not Optuna's `MedianPruner`, which takes the median of the other trials'
/// values *at* that step, over completed trials only, and waits for
/// `n_startup_trials` of them. Here every other trial that reached the step
/// counts, whether it completed, was pruned or is still running, and its best
/// value so far stands for it: a trial that peaked early keeps its peak. Best
/// values raise the bar over values at the step; counting pruned and running
/// trials (often weaker ones) can lower it; and the rule can act as soon as
/// `min_trials` parallel trials are under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MedianPruner {
    pub warmup_epochs: usize,
    pub min_trials: usize,
}

impl Pruner for MedianPruner {
    fn should_prune(
        &self,
        trial: u32,
        curve: &[(usize, f64)],
        others: &[(u32, Vec<(usize, f64)>)],
        direction: Direction,
    ) -> bool {
        let Some(&(step, _)) = curve.iter().max_by_key(|(s, _)| *s) else {
            return false;
        };
        if step <= self.warmup_epochs {
            return false;
        }
        let mut bests: Vec<f64> = others
            .iter()
            .filter(|(n, c)| *n != trial && c.iter().any(|(s, _)| *s == step))
            .filter_map(|(_, c)| best_until(c, step, direction))
            .collect();
        if bests.len() < self.min_trials.max(1) {
            return false;
        }
        let Some(mine) = best_until(curve, step, direction) else {
            // Nothing but NaN: as bad as it gets.
            return true;
        };
        bests.sort_by(f64::total_cmp);
        let n = bests.len();
        let median = if n % 2 == 1 {
            bests[n / 2]
        } else {
            0.5 * (bests[n / 2 - 1] + bests[n / 2])
        };
        direction.better(median, mine)
    }
}

/// Asynchronous successive halving: rungs at `min_epochs * reduction_factor^k`
/// steps. When a trial reaches a rung it goes on only if its value there is
/// among the top `1 / reduction_factor` (at least one) of the values every
/// trial recorded at that rung, its own included (ties go on). Never prunes
/// before the first rung, nor between rungs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AshaPruner {
    pub min_epochs: usize,
    pub reduction_factor: usize,
}

impl AshaPruner {
    /// The highest rung at or below `step`.
    fn rung(&self, step: usize) -> Option<usize> {
        let eta = self.reduction_factor.max(2);
        let mut rung = self.min_epochs.max(1);
        if step < rung {
            return None;
        }
        while let Some(next) = rung.checked_mul(eta).filter(|&r| r <= step) {
            rung = next;
        }
        Some(rung)
    }
}

/// The value a curve recorded at `rung`: at its first step at or past it.
fn value_at(curve: &[(usize, f64)], rung: usize) -> Option<f64> {
    curve
        .iter()
        .filter(|(s, _)| *s >= rung)
        .min_by_key(|(s, _)| *s)
        .map(|(_, v)| *v)
}

impl Pruner for AshaPruner {
    fn should_prune(
        &self,
        trial: u32,
        curve: &[(usize, f64)],
        others: &[(u32, Vec<(usize, f64)>)],
        direction: Direction,
    ) -> bool {
        let Some(&(step, mine)) = curve.iter().max_by_key(|(s, _)| *s) else {
            return false;
        };
        let Some(rung) = self.rung(step) else {
            return false;
        };
        // Decide only on the step that reached the rung.
        if curve.iter().any(|(s, _)| *s >= rung && *s < step) {
            return false;
        }
        if mine.is_nan() {
            return true;
        }
        let competitors: Vec<f64> = others
            .iter()
            .filter(|(n, _)| *n != trial)
            .filter_map(|(_, c)| value_at(c, rung))
            .collect();
        let keep = ((competitors.len() + 1) / self.reduction_factor.max(2)).max(1);
        let better = competitors.iter().filter(|&&v| direction.better(v, mine)).count();
        better >= keep
    }
}
